"""Named message templates: pre-approved words with per-channel wording.

``[templates.outage]`` gives a ``text`` (every channel without its own wording)
and optionally a ``subject``, the words for ``sms``, ``voice``, ``email``,
``telegram`` and ``whatsapp``, and ``public``: what an incident publishes on the
status page (never sent to anyone). Each is a Jinja2 template, parsed here, at
config load, so that a syntax error is found on a quiet day and names the template
and the field rather than in the middle of a crisis.

Templates run in Jinja2's sandbox with ``StrictUndefined``: a template cannot
reach Python internals, and a variable nobody gave is an error, not an empty
string in a message to a thousand people.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from config.channels import CHANNEL_NAMES

CHANNEL_FIELDS: tuple[str, ...] = CHANNEL_NAMES
TEMPLATE_FIELDS: tuple[str, ...] = ("text", "subject", *CHANNEL_FIELDS, "public")
"""Every field that is a template; all but ``text``, ``subject`` and ``public`` name a
channel."""

TemplateName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$")]


class _AnalysingEnvironment(SandboxedEnvironment):
    """Parses templates and lists their variables; never evaluates them.

    Jinja2 folds constant expressions while it analyses a template (to list its
    variables): with every operator intercepted and every filter and test refusing,
    nothing is folded, so ``{{ 10 ** (10 ** 10) }}`` or ``{{ 'x'|center(999999999) }}``
    cost nothing at config load. Rendering, with bounds, is
    :mod:`router.rules.template_limits`.
    """

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self) -> None:
        # Plain text out: nothing is HTML, so nothing is escaped (voice TwiML is escaped
        # by the voice channel itself).
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self.filters = {name: _not_while_analysing for name in self.filters}
        self.tests = {name: _not_while_analysing for name in self.tests}


def _not_while_analysing(*args: object, **kwargs: object) -> NoReturn:
    raise RuntimeError("templates are not evaluated while they are analysed")


def template_environment() -> SandboxedEnvironment:
    """The environment every template is parsed and analysed with (not rendered)."""
    return _AnalysingEnvironment()


_ENVIRONMENT = template_environment()


class TemplateEntry(BaseModel):
    """One ``[templates.NAME]`` table of the config file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str | None = None
    """For people: when to use it. Not sent."""
    text: str = Field(min_length=1)
    subject: str | None = None
    """Email subject (one line once rendered)."""
    sms: str | None = None
    voice: str | None = None
    """Spoken on a call: write it to be heard."""
    email: str | None = None
    """Email body."""
    telegram: str | None = None
    whatsapp: str | None = None
    public: str | None = None
    """For incidents: the words the public status page shows. Not sent."""

    @field_validator(*TEMPLATE_FIELDS)
    @classmethod
    def _parses(cls, source: str | None) -> str | None:
        if source is not None:
            try:
                _ENVIRONMENT.parse(source)
            except TemplateSyntaxError as exc:
                raise ValueError(
                    f"template syntax error on line {exc.lineno}: {exc.message}"
                ) from None
        return source

    def fields(self) -> dict[str, str]:
        """Field name to template source, for the fields that are set."""
        return {name: source for name in TEMPLATE_FIELDS
                if (source := getattr(self, name)) is not None}  # fmt: skip

    def variables(self) -> frozenset[str]:
        """Every variable some field uses."""
        found: set[str] = set()
        for source in self.fields().values():
            found |= meta.find_undeclared_variables(_ENVIRONMENT.parse(source))
        return frozenset(found)
