"""What every command shares: logging with redaction, errors as exit statuses."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from config.settings import ConfigError, ConfigFileMissing, Settings, load_settings
from router.cli.output import stderr_console
from router.core import Router
from router.model.errors import BadInput
from router.model.redact import RedactingFilter, Redactor
from router.model.text import terminal_safe
from router.store.base import StoreFailure

EXIT_OK, EXIT_UNREACHED, EXIT_BAD_INPUT = 0, 1, 2

_CONFIG_HELP = "Config file (default: $BACKCHANNEL_CONFIG, ./backchannel.toml)."
_JSON_HELP = "Print one JSON object instead of a table."
ConfigOption = typer.Option(None, "--config", "-c", metavar="PATH", help=_CONFIG_HELP)
JsonOption = typer.Option(False, "--json", help=_JSON_HELP)
ConfigPath = Annotated[
    Path | None, typer.Option("--config", "-c", metavar="PATH", help=_CONFIG_HELP)
]
"""The same option, for a parameter that declares its default itself."""
JsonFlag = Annotated[bool, typer.Option("--json", help=_JSON_HELP)]


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
    try:
        settings = load_settings(config)
    except ConfigFileMissing as exc:
        raise ConfigError(missing_config_hint(exc)) from None
    LOGGING.learn_secrets(settings)
    return settings


def missing_config_hint(missing: ConfigFileMissing) -> str:
    """The error for a config that is not there, with how to give one (a newcomer's
    first command usually meets it)."""
    if missing.found_by == "option":
        return str(missing)
    if missing.found_by == "environment":
        return f"{missing} (named by $BACKCHANNEL_CONFIG)"
    return (
        f"{missing} in this directory.\n"
        "  Give one with --config PATH or $BACKCHANNEL_CONFIG (examples/backchannel.toml\n"
        "  has every section). To try backchannel on this machine first, run\n"
        "  `backchannel sandbox -w backchannel.toml` in another terminal: it writes a\n"
        "  config for local stand-ins of every provider and keeps them running."
    )


@asynccontextmanager
async def open_router(settings: Settings, *, long_running: bool = False) -> AsyncIterator[Router]:
    """``async with Router(settings)``; a store that cannot be opened is a ConfigError
    (exit 2, nothing sent) rather than a traceback."""
    async with Router(settings, long_running=long_running) as router:
        yield router


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str | None, option: str) -> float | None:
    """``90``, ``90s``, ``15m``, ``2h``, ``1h30m`` -> seconds; anything else is bad input."""
    if text is None:
        return None
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise typer.BadParameter("use a duration such as 90s, 15m or 2h", param_hint=option)
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise typer.BadParameter("must be longer than zero", param_hint=option)
    return total


def run(job: Coroutine[Any, Any, int]) -> None:
    """Run a command's coroutine and exit with its status; bad input exits 2.

    Ctrl-C cancels the command, which records what it had in flight and stops; a second
    Ctrl-C ends the process at once, whatever it is waiting for.
    """
    try:
        status = _run_interruptibly(job)
    except (ConfigError, BadInput) as exc:
        _error(str(exc))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except StoreFailure as exc:
        if exc.requests_made:
            _error(f"store: {exc.reason}. {exc.requests_made} request(s) had been made and"
                   " are recorded as far as the store allowed; `backchannel resume` finishes"
                   " the rest once the store works again.")
            raise typer.Exit(EXIT_UNREACHED) from None
        _error(f"store: {exc.reason}. Nothing was sent.")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        stderr_console().print("interrupted: attempts in flight are recorded as in doubt")
        raise typer.Exit(130) from None
    raise typer.Exit(status)


def _error(text: str) -> None:
    # The text names user data (contacts, paths, a provider's words): print it as is,
    # not as console markup nor terminal controls, and unfolded, so that a long path
    # stays on one line.
    stderr_console().print(
        f"[bold red]error:[/] {escape(terminal_safe(text))}", markup=True, highlight=False,
        soft_wrap=True,
    )


FORCED_EXIT_CLEANUPS: list[Callable[[], None]] = []
"""Quick, synchronous clean-ups that even a forced stop runs (a sandbox's temp files)."""


@contextmanager
def cleaned_up_on_forced_exit(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run ``cleanup`` if the process is forced to stop (a second Ctrl-C) in this block."""
    FORCED_EXIT_CLEANUPS.append(cleanup)
    try:
        yield
    finally:
        FORCED_EXIT_CLEANUPS.remove(cleanup)


def _force_exit() -> NoReturn:
    os.write(2, b"forced to stop: attempts in flight are recorded as in doubt\n")
    for cleanup in list(FORCED_EXIT_CLEANUPS):
        with suppress(Exception):
            cleanup()
    os._exit(130)


def _run_interruptibly(job: Coroutine[Any, Any, int]) -> int:
    main: asyncio.Task[int] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    presses = 0

    def on_interrupt(signum: int, frame: object) -> None:
        nonlocal presses
        presses += 1
        if presses == 1 and main is not None and loop is not None and not main.done():
            os.write(2, b"stopping (Ctrl-C again to force)\n")
            loop.call_soon_threadsafe(main.cancel)
            return
        _force_exit()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with asyncio.Runner() as runner:
            loop = runner.get_loop()
            main = loop.create_task(job)
            try:
                return loop.run_until_complete(main)
            except asyncio.CancelledError:
                if presses:
                    raise KeyboardInterrupt from None
                raise
    finally:
        signal.signal(signal.SIGINT, previous)
