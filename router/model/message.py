"""What to say: one text, with optional per-channel wording."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from router.model.channel import CHANNEL_NAMES, Rendered
from router.model.errors import BadInput
from router.model.text import header_problem, text_problem


@dataclass(frozen=True, slots=True)
class Message:
    """A message to route.

    ``by_channel`` gives other words for some channels, such as a short SMS
    form or a spoken form for calls: ``Message("...", by_channel={"sms": "..."})``.
    """

    text: str
    subject: str | None = None
    by_channel: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.text or not self.text.strip():
            raise BadInput("message: text is empty")
        if problem := text_problem(self.text):
            raise BadInput(f"message: text {problem}")
        # The one check of header text for every channel: found here, before anything is
        # recorded, a bad subject is bad input rather than an adapter error (an email
        # "maybe sent" that opens the relay's breaker for every other message).
        if self.subject is not None and (problem := header_problem(self.subject)):
            raise BadInput(f"message: subject {problem}")
        for channel, text in self.by_channel.items():
            if channel not in CHANNEL_NAMES:
                raise BadInput(f"message: by_channel names an unknown channel {channel!r}")
            if not text.strip():
                raise BadInput(f"message: by_channel[{channel!r}] is empty")
            if problem := text_problem(text):
                raise BadInput(f"message: by_channel[{channel!r}] {problem}")
        object.__setattr__(self, "by_channel", MappingProxyType(dict(self.by_channel)))

    def render(self, channel: str) -> Rendered:
        return Rendered(self.by_channel.get(channel, self.text), self.subject)

    def to_json(self) -> dict[str, object]:
        return {"text": self.text, "subject": self.subject, "by_channel": dict(self.by_channel)}
