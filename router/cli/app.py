"""The ``backchannel`` command."""

from __future__ import annotations

import typer

from router.cli.common import LOGGING

app = typer.Typer(
    name="backchannel",
    help="Reach people over ranked channels (WhatsApp, Telegram, SMS, voice, email) and "
    "fail over when one is down.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every attempt to stderr."),
) -> None:
    LOGGING.setup(verbose)
