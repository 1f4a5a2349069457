"""``worker``: send queued work from the shared store, alongside other workers."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from router.cli.app import app
from router.cli.common import EXIT_OK, ConfigOption, load, open_router, run
from router.cli.output import stdout_console


@app.command()
def worker(
    config: Path | None = ConfigOption,
    concurrency: int | None = typer.Option(
        None, min=1, help="Deliveries worked at once ([routing] concurrency)."
    ),
    lease: float = typer.Option(
        30.0, min=1.0, help="Seconds a claim lasts unless renewed: how soon another worker "
        "takes over the deliveries of one that died.",
    ),
) -> None:
    """Claim queued deliveries (from `send/broadcast --queue`) and send them, until stopped.

    Run several, on several machines with `[store] url = "postgresql://..."`: they share
    the queue, the channel health and the providers' rate limits. SIGTERM finishes the
    deliveries in hand and exits; a worker that dies leaves leases that expire.
    """
    from router.ops.worker import Worker

    async def job() -> int:
        async with open_router(load(config), long_running=True) as router:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            runner = Worker(router, concurrency=concurrency, lease=lease)
            stdout_console().print(f"backchannel worker {runner.owner} waiting for work")
            await runner.run(stop)
            stdout_console().print(f"worker stopped after {runner.done} deliveries")
        return EXIT_OK

    run(job())
