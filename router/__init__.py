"""backchannel: reach people over ranked channels, and fail over when one is down.

The public Python API::

    from router import Router, Message

    async with Router.from_config() as router:
        result = await router.send(Message("Site down", subject="Outage"), to="alice")
        print(result.status, result.channel, result.attempts)
"""

from config.contacts import Contact, make_contact
from config.settings import ConfigError, Settings, load_settings
from router.core import Router
from router.model.channel import Channel, Rendered
from router.model.errors import BadInput
from router.model.inbound import Reply
from router.model.message import Message
from router.model.outcome import Capabilities, Outcome, Scope, Verdict
from router.model.results import Attempt, AttemptKind, BroadcastResult, DeliveryResult, Status

__all__ = [
    "Attempt",
    "AttemptKind",
    "BadInput",
    "BroadcastResult",
    "Capabilities",
    "Channel",
    "ConfigError",
    "Contact",
    "DeliveryResult",
    "Message",
    "Outcome",
    "Rendered",
    "Reply",
    "Router",
    "Scope",
    "Settings",
    "Status",
    "Verdict",
    "load_settings",
    "make_contact",
]
