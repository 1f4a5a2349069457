"""Errors the router raises for its callers. Delivery problems are results, not exceptions."""

from __future__ import annotations

from config.settings import ConfigError


class BadInput(ValueError):
    """A message, contact, group or argument that cannot be used; nothing was sent."""


__all__ = ["BadInput", "ConfigError"]
