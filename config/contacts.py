"""The contact book: who can be reached, at which address, on which channel.

Addresses are validated and normalised once, here, so that every later step
(routing, masking, the audit) can trust them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetPydanticSchema,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from config.channels import PHONE_CHANNELS, ChannelName

_CHAT_ID = re.compile(r"-?[0-9]+")


def normalise_phone(value: object) -> str:
    """Return the E.164 form of an international phone number, or raise ValueError.

    The error never repeats the number: it may land in a log.
    """
    if not isinstance(value, str):
        raise ValueError("must be a phone number in international format, as a string")
    text = value.strip()
    if text.startswith("whatsapp:"):
        text = text.removeprefix("whatsapp:")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+"):
        raise ValueError("must be in international format, starting with + and the country code")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("is not a valid phone number for its country code")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


INTERNAL_DOMAINS = ("local", "internal", "lan", "home.arpa")
"""Names for private networks (RFC 6762's .local, ICANN's .internal, RFC 8375's
home.arpa, and the common .lan): a company's own relay delivers to them."""
_STAND_IN = ".internal-domain.example"


def is_internal_email(address: str) -> bool:
    """Whether ``address`` is on a private network's domain (see :data:`INTERNAL_DOMAINS`)."""
    domain = address.rpartition("@")[2].rstrip(".").lower()
    return any(domain.endswith("." + suffix) for suffix in INTERNAL_DOMAINS)


def normalise_email(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an email address, as a string")
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    # email-validator refuses special-use names (.local, home.arpa) as never deliverable on
    # the internet; an internal relay delivers them. Such an address is checked with a
    # public stand-in after its domain, which is then taken off again.
    internal = is_internal_email(value)
    try:
        checked = validate_email(value.rstrip(".") + _STAND_IN if internal else value,
                                 check_deliverability=False).normalized
    except EmailNotValidError:
        raise ValueError("is not a valid email address") from None
    return checked.removesuffix(_STAND_IN) if internal else checked


def normalise_chat_id(value: object) -> int:
    """Telegram chat ids are integers; a @username cannot be messaged by a bot."""
    if isinstance(value, bool):
        raise ValueError("must be a numeric Telegram chat id")
    if isinstance(value, int):
        return value
    # ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
    if isinstance(value, str) and _CHAT_ID.fullmatch(value.strip()):
        return int(value.strip())
    raise ValueError("must be a numeric Telegram chat id (a bot cannot message a @username)")


Phone = Annotated[str, BeforeValidator(normalise_phone)]
Email = Annotated[str, BeforeValidator(normalise_email)]
ChatId = Annotated[int, BeforeValidator(normalise_chat_id)]


@dataclass(frozen=True, slots=True)
class Contact:
    """A person and their validated address on each channel."""

    name: str
    addresses: Mapping[str, str] = field(default_factory=dict)
    """Channel name to address: E.164 for phones, chat id for Telegram, mailbox for email."""
    order: tuple[str, ...] | None = None
    """This contact's own ranking, overriding the deployment's."""

    def address(self, channel: str) -> str | None:
        return self.addresses.get(channel)


class ContactEntry(BaseModel):
    """One ``[contacts.NAME]`` table of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phone: Phone | None = None
    """Shorthand for whatsapp, sms and voice."""
    whatsapp: Phone | None = None
    sms: Phone | None = None
    voice: Phone | None = None
    telegram: ChatId | None = None
    email: Email | None = None
    order: list[ChannelName] | None = None

    @field_validator("order")
    @classmethod
    def _order_has_no_repeats(cls, order: list[str] | None) -> list[str] | None:
        if order is not None and len(set(order)) != len(order):
            raise ValueError("names a channel twice")
        return order

    @model_validator(mode="after")
    def _reaches_something(self) -> ContactEntry:
        if not self.addresses():
            raise ValueError("has no address: give at least one of phone, telegram, email")
        return self

    def addresses(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for channel in PHONE_CHANNELS:
            number = getattr(self, channel) or self.phone
            if number:
                found[channel] = number
        if self.telegram is not None:
            found["telegram"] = str(self.telegram)
        if self.email:
            found["email"] = self.email
        return found

    def to_contact(self, name: str) -> Contact:
        order = tuple(self.order) if self.order is not None else None
        return Contact(name=name, addresses=self.addresses(), order=order)


def make_contact(name: str, **fields: Any) -> Contact:
    """Build a validated :class:`Contact` in code, with the config file's rules.

    ``make_contact("alice", phone="+33 6 12 34 56 78", email="alice@example.com")``
    """
    return ContactEntry.model_validate(fields).to_contact(name)



def _named(book: dict[str, Contact]) -> dict[str, Contact]:
    return {name: replace(contact, name=name) for name, contact in book.items()}


# Each entry becomes a Contact as soon as it is validated, not once the whole book is:
# 100,000 pydantic models held at once would raise the peak by about 65 MB.
_EntryAsContact = Annotated[
    Contact,
    GetPydanticSchema(lambda _source, handler: core_schema.no_info_after_validator_function(
        lambda entry: entry.to_contact(""), handler.generate_schema(ContactEntry)
    )),
]
ContactBook = Annotated[dict[str, _EntryAsContact], AfterValidator(_named)]
"""``[contacts]``: each entry validated as a :class:`ContactEntry` (errors name
``contacts.NAME.FIELD``), then kept as a slotted :class:`Contact` only, named after its key;
a pydantic model per contact would cost about 650 bytes more."""
