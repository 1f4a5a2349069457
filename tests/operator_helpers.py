"""In-process runs of the CLI for checks that never reach a provider (imported as
``operator_helpers``): bad input found before any channel opens is tested without
the cost of a subprocess.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cli_helpers import dump_toml
from click.testing import Result
from typer.testing import CliRunner

from router.cli import app

# Nothing listens on the discard port: a provider that is contacted fails loudly.
NOWHERE = "http://127.0.0.1:9"


def invoke(args: Sequence[str]) -> Result:
    """Run ``backchannel ARGS`` in this process; leave logging as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})
    finally:
        # The command adds a stderr handler bound to the runner's (now closed) stream.
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def offline_config(directory: Path, contacts: dict[str, Any], **tables: Any) -> Path:
    """A config with every channel enabled, whose providers are nowhere."""
    data: dict[str, Any] = {
        "twilio": {"account_sid": "AC" + "0" * 32, "auth_token": "t" * 32, "api_base": NOWHERE},
        "telegram": {"bot_token": "123456:" + "A" * 30, "api_base": NOWHERE},
        "email": {"host": "127.0.0.1", "port": 9, "sender": "alerts@example.com"},
        "channels": {"whatsapp": {"sender": "+15005550006"}, "sms": {"sender": "+15005550006"},
                     "voice": {"sender": "+15005550006"}},
        "store": {"path": "store.db"},
        "contacts": contacts,
        "groups": {"ops": list(contacts)},
    }  # fmt: skip
    for key, value in tables.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "backchannel.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return path
