"""What every command shares: logging with redaction, errors as exit statuses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer

from config.settings import ConfigError, Settings, load_settings
from router.cli.output import stderr_console
from router.errors import BadInput
from router.redact import RedactingFilter, Redactor

EXIT_OK, EXIT_UNREACHED, EXIT_BAD_INPUT = 0, 1, 2

ConfigOption = typer.Option(
    None, "--config", "-c", help="Config file (default: $BACKCHANNEL_CONFIG, ./backchannel.toml)."
)
JsonOption = typer.Option(False, "--json", help="Print one JSON object instead of a table.")


class _Logging:
    """One stderr handler whose filter learns the secrets once the config is read."""

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None

    def setup(self, verbose: bool) -> None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter(Redactor()))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO if verbose else logging.WARNING)
        self.handler = handler

    def learn_secrets(self, settings: Settings) -> None:
        if self.handler is None:
            return
        for old in list(self.handler.filters):
            self.handler.removeFilter(old)
        self.handler.addFilter(RedactingFilter(Redactor(settings.secrets())))


LOGGING = _Logging()


def load(config: Path | None) -> Settings:
    settings = load_settings(config)
    LOGGING.learn_secrets(settings)
    return settings


def run(job: Coroutine[Any, Any, int]) -> None:
    """Run a command's coroutine and exit with its status; bad input exits 2."""
    try:
        status = asyncio.run(job)
    except (ConfigError, BadInput) as exc:
        stderr_console().print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        stderr_console().print("interrupted: attempts in flight are recorded as in doubt")
        raise typer.Exit(130) from None
    raise typer.Exit(status)
