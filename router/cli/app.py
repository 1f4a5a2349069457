"""The ``backchannel`` command."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

from router.cli.common import LOGGING

app = typer.Typer(
    name="backchannel",
    help="Reach people over ranked channels (WhatsApp, Telegram, SMS, voice, email) and "
    "fail over when one is down.",
    no_args_is_help=True,
    # Plain help, as click prints it: Rich's markup would swallow the config's table names
    # ("[templates.NAME]") and show a type after every flag.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _show_version(asked: bool) -> None:
    if asked:
        try:
            installed = version("backchannel")
        except PackageNotFoundError:  # run from a checkout that was never installed
            installed = "unknown (not installed)"
        typer.echo(f"backchannel {installed}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every attempt to stderr."),
    _version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True,
        help="Print the installed version and exit.",
    ),
) -> None:
    LOGGING.setup(verbose)
