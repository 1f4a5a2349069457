"""Settings for the way back: webhooks, receipts, acknowledgements and escalation."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookSettings(_Section):
    """``[webhooks]``: where providers reach ``backchannel serve``."""

    public_url: AnyHttpUrl | None = None
    """The base URL Twilio signs and calls back (https://alerts.example.com). Without it,
    receipts are polled from Twilio and SMS/WhatsApp replies cannot arrive."""
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    telegram_secret: SecretStr | None = None
    """Sent by Telegram in X-Telegram-Bot-Api-Secret-Token when updates come by webhook."""
    telegram_updates: Literal["polling", "webhook"] = "polling"
    max_body: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Requests with larger bodies are refused (413) before they are parsed."""

    def url(self, path: str) -> str | None:
        if self.public_url is None:
            return None
        return str(self.public_url).rstrip("/") + path


class EscalationSettings(_Section):
    """``[escalation]``: how long to wait for a receipt or a person, and what then."""

    delivery_wait: float = Field(default=300.0, gt=0)
    """Seconds to wait for a delivery receipt before trying the next channel."""
    ack_wait: float = Field(default=300.0, gt=0)
    """Seconds to wait for a person to acknowledge before trying the next channel."""
    repeats: int = Field(default=2, ge=0, le=20)
    """Times the whole chain is run again when nobody acknowledged."""
    repeat_every: float = Field(default=600.0, gt=0)
    """Seconds between the end of one chain and the next."""
    ack_words: list[str] = Field(default_factory=lambda: ["ACK", "OK", "YES", "OUI"])
    opt_out_words: list[str] = Field(
        default_factory=lambda: ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]
    )
    receipt_poll_interval: float = Field(default=30.0, gt=0)
    """Without a public URL, how often to ask Twilio for the status of awaited messages."""

    @field_validator("ack_words", "opt_out_words")
    @classmethod
    def _words(cls, words: list[str]) -> list[str]:
        cleaned = [word.strip().upper() for word in words]
        if any(not word or " " in word for word in cleaned):
            raise ValueError("must be single words")
        return cleaned
