"""Command-line interface. Exit status: 0 all reached, 1 some unreached, 2 bad input."""

from __future__ import annotations

from router.cli import health, incidents, local, messaging, operator, outbox, serve, worker
from router.cli.app import app

__all__ = [
    "app", "health", "incidents", "local", "main", "messaging", "operator", "outbox", "serve",
    "worker",
]


def main() -> None:
    app()
