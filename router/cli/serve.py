"""``serve`` and ``inbox``: the way back."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from router.cli.app import app
from router.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    ConfigOption,
    JsonOption,
    load,
    open_router,
    run,
)
from router.cli.output import outside, print_json, stderr_console, stdout_console
from router.model.redact import mask_address

if TYPE_CHECKING:
    from router.board import Board


@app.command()
def serve(
    config: Path | None = ConfigOption,
    host: str | None = typer.Option(None, help="Address to listen on ([webhooks] host)."),
    port: int | None = typer.Option(None, help="Port to listen on ([webhooks] port)."),
    with_worker: bool = typer.Option(
        False, "--worker", help="Also send queued work, as `backchannel worker` does."
    ),
) -> None:
    """Receive receipts, replies and acknowledgements; escalate; resume interrupted work.

    Point Twilio's status and inbound webhooks, and Telegram's webhook if used, at
    [webhooks] public_url; without one, receipts are polled and Telegram long-polled.
    """
    import uvicorn

    from router.ops.worker import Worker
    from router.server import create_app

    async def job() -> int:
        settings = load(config)
        listen_host = host or settings.webhooks.host
        listen_port = settings.webhooks.port if port is None else port
        # The store opens, or this is bad config (exit 2), before anything listens.
        async with open_router(settings, long_running=True) as router:
            app = create_app(router, manage=False)
            server = _server(app.state.board, uvicorn.Config(
                app, host=listen_host, port=listen_port,
                log_level="warning", lifespan="on", access_log=False,
                # Live board viewers keep their streams open: do not wait for them.
                timeout_graceful_shutdown=2,
                # [board] trusted_proxies decides whose X-Forwarded-For is believed, not
                # uvicorn (which would believe any local peer's).
                proxy_headers=False,
            ))
            stdout_console().print(
                start_line(listen_host, listen_port, settings.webhooks.url(""), with_worker),
                markup=False,
            )
            stop = asyncio.Event()
            working = asyncio.create_task(Worker(router).run(stop)) if with_worker else None
            try:
                await server.serve()  # until SIGTERM or Ctrl-C, which uvicorn handles
            finally:
                stop.set()
                if working is not None:
                    await working
        return EXIT_OK

    run(job())


def start_line(host: str, port: int, public_url: str | None, with_worker: bool) -> str:
    """What ``serve`` says once it listens: where, and how providers reach it."""
    where = f"[{host}]" if ":" in host else host
    line = f"backchannel serve listening on http://{where}:{port}"
    if public_url:
        line += f"; providers call back at {public_url}"
    else:
        line += ("; no [webhooks] public_url, so receipts are polled and Telegram is"
                 " long-polled (SMS and WhatsApp replies need one)")
    return line + ("; a worker sends queued work" if with_worker else "")


def _server(board: Board | None, config: Any) -> Any:
    """uvicorn, ending the board's live streams as soon as it is asked to stop (viewers
    would otherwise hold the shutdown until its timeout)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            if board is not None:
                asyncio.get_running_loop().call_soon_threadsafe(board.hang_up)

    return Server(config)


@app.command()
def inbox(
    config: Path | None = ConfigOption,
    limit: int = typer.Option(50, min=1, help="Newest first, at most this many."),
    json_output: bool = JsonOption,
) -> None:
    """Replies, acknowledgements and opt-outs people sent back (addresses masked)."""

    async def job() -> int:
        async with open_router(load(config)) as router:
            events = await router.store.inbox(limit)
        if json_output:
            print_json({"inbound": [{
                "received_at": e.received_at, "channel": e.channel, "contact": e.contact,
                "address": mask_address(e.channel, e.address), "kind": e.kind, "text": e.text,
                "message_id": e.message_id,
            } for e in events]})
            return EXIT_OK
        table = Table(title="inbox, newest first")
        for column in ("when", "channel", "from", "kind"):
            table.add_column(column, no_wrap=True)
        table.add_column("text", overflow="fold")
        for e in events:
            sender = e.contact or mask_address(e.channel, e.address)
            # Anyone who can text the number writes e.text: it must not drive the terminal.
            table.add_row(f"{datetime.fromtimestamp(e.received_at):%m-%d %H:%M:%S}", e.channel,
                          outside(sender), e.kind, outside(e.text))
        stdout_console().print(table)
        return EXIT_OK

    run(job())


@app.command("hash-password")
def hash_password_command() -> None:
    """Print a hash of a password for [board] users (the password is read without echo)."""
    import sys

    from router.board.auth import hash_password

    if sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        stderr_console().print("hash-password: the password must be at least 8 characters")
        raise typer.Exit(EXIT_BAD_INPUT)
    print(hash_password(password))
