"""``sandbox`` and ``demo``: the local provider peers, for trying backchannel offline."""

from __future__ import annotations

import asyncio
import secrets
import signal
from pathlib import Path

import typer

from router.cli.app import app
from router.cli.common import cleaned_up_on_forced_exit, run
from router.cli.output import stderr_console, stdout_console


@app.command()
def demo() -> None:
    """Broadcast through local stand-ins for every provider while WhatsApp goes down."""
    from router.cli.demo import run_demo

    run(run_demo(stdout_console()))


@app.command()
def sandbox(
    write_config: Path | None = typer.Option(
        None, "--write-config", "-w", help="Write the matching config here (else print it)."
    ),
    latency: float = typer.Option(0.0, help="Seconds each peer waits before answering."),
    twilio_port: int = typer.Option(0, help="Port for the Twilio API (0: any free port)."),
    telegram_port: int = typer.Option(0, help="Port for the Telegram Bot API."),
    smtp_port: int = typer.Option(0, help="Port for the SMTP relay."),
    vonage_port: int = typer.Option(0, help="Port for the Vonage APIs (SMS, voice, balance)."),
    vonage: bool = typer.Option(
        False, "--vonage", help="Vonage carries SMS and voice too, after Twilio, in the config."
    ),
    smtp_tls: str = typer.Option("starttls", help="starttls, implicit or none."),
    telegram_flood_limit: int | None = typer.Option(
        None, min=1, help="Answer 429 beyond 110% of this many Telegram messages a second, "
        "and of 1 a second per chat, as Telegram's flood control does.",
    ),
) -> None:
    """Run local Twilio, Vonage, Telegram and SMTP peers until Ctrl-C, with a config that
    uses them."""
    from router.sandbox import Sandbox

    if smtp_tls not in ("starttls", "implicit", "none"):
        raise typer.BadParameter("must be starttls, implicit or none", param_hint="--smtp-tls")

    async def job() -> int:
        sandbox = Sandbox(
            latency=latency, twilio_port=twilio_port, telegram_port=telegram_port,
            smtp_port=smtp_port, vonage_port=vonage_port,
            smtp_tls=smtp_tls,  # type: ignore[arg-type]
            telegram_flood_limit=None if telegram_flood_limit is None
            else (telegram_flood_limit, 1),
        )
        # A second Ctrl-C ends the process at once: the temp files still go.
        with cleaned_up_on_forced_exit(sandbox.discard_files):
            return await _serve_sandbox(sandbox)

    async def _serve_sandbox(sandbox: Sandbox) -> int:
        # stdout carries the config only (`backchannel sandbox > backchannel.toml`);
        # everything said to a person goes to stderr.
        console, config_out = stderr_console(), stdout_console()
        board_password = secrets.token_urlsafe(12)
        stop = asyncio.Event()
        # SIGTERM (systemd, kill) and SIGHUP (the terminal closed) must clean up like
        # Ctrl-C: the peers own temp files. Caught from the start, so that a signal sent
        # as soon as the peers are announced is not the default, file-leaving death.
        loop = asyncio.get_running_loop()
        for stopping in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(stopping, stop.set)
        async with sandbox as peers:
            config = peers.config_toml(vonage=vonage,
                                       overrides={"board": {"password": board_password}})
            if write_config is not None:
                await asyncio.to_thread(write_config.write_text, config)
                console.print(f"config written to [bold]{write_config}[/]")
            else:
                config_out.print(config, markup=False, highlight=False, soft_wrap=True)
            where = write_config or "backchannel.toml"
            console.print(
                f"Twilio API   {peers.twilio_url}\nVonage API   {peers.vonage_url}\n"
                f"Telegram API {peers.telegram_url}\n"
                f"SMTP relay   {peers.smtp.host}:{peers.smtp.port} ({smtp_tls})\n"
                f"Script faults: curl -X POST {peers.twilio_url}/_sandbox/faults "
                """-d '{"channel": "whatsapp", "kind": "http", "status": 503}'\n"""
                "Ctrl-C stops the peers.\n"
                f"The crisis board: [bold]backchannel serve --config {where}[/], then open "
                f"[bold]http://127.0.0.1:8080/board[/] and log in with the password "
                f"[bold]{board_password}[/] (it is \\[board] password in the config).",
                markup=True, highlight=False, soft_wrap=True,
            )
            await stop.wait()
        return 0

    run(job())
