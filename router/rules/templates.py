"""Turning a named template and its variables into a :class:`~router.model.message.Message`.

Templates are parsed when the config is loaded (:mod:`config.templates`); here
they are rendered, once per send, with the variables the operator gave, within
:class:`~router.rules.template_limits.RenderLimits` (time, and size). Any problem
(an unknown template, a variable missing or not used, a field that renders empty,
a loop that would run for minutes) is :class:`~router.model.errors.BadInput`,
raised before anything is sent, and names the template and the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jinja2 import TemplateError, UndefinedError
from jinja2.exceptions import SecurityError

from config.templates import CHANNEL_FIELDS, TemplateEntry
from router.model.errors import BadInput
from router.model.message import Message
from router.model.text import header_problem, text_problem
from router.rules.template_limits import RenderLimits, TooCostly, render_bounded


def parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    """``["site=Lyon", "eta=14:00"]`` -> ``{"site": "Lyon", "eta": "14:00"}``."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise BadInput(f"--var: expected NAME=VALUE with NAME an identifier, got {pair!r}")
        if key in found:
            raise BadInput(f"--var: {key!r} is given twice")
        found[key] = value
    return found


@dataclass(frozen=True, slots=True)
class RenderedTemplate:
    """A template's words: the message, and what it publishes (incidents) if anything."""

    message: Message
    public: str | None = None
    """The ``public`` field, rendered; None when the template has none or it renders
    empty (then nothing is published)."""


def render_template(
    templates: Mapping[str, TemplateEntry], name: str, variables: Mapping[str, str],
    limits: RenderLimits = RenderLimits(),
) -> Message:
    """Render every field of template ``name`` (but ``public``: a plain message publishes
    nothing); raise BadInput on any problem."""
    return render_wording(templates, name, variables, limits, publish=False).message


def render_wording(
    templates: Mapping[str, TemplateEntry], name: str, variables: Mapping[str, str],
    limits: RenderLimits = RenderLimits(), *, context: Mapping[str, str] | None = None,
    publish: bool = True,
) -> RenderedTemplate:
    """Render template ``name`` with the operator's ``variables`` over ``context``
    (values known without ``--var``, such as an incident's title: a ``--var`` of the
    same name wins); raise BadInput on any problem. Only ``variables`` must each be used:
    a context value a template leaves out is no mistake."""
    template = templates.get(name)
    if template is None:
        known = ", ".join(sorted(templates)) or "none in the config"
        raise BadInput(f"--template: unknown template {name!r} (known: {known})")
    where = f"templates.{name}"
    # A --var that no field uses is most likely a misspelt one whose field then fell
    # back to a default: say so rather than send the default.
    unused = sorted(set(variables) - template.variables())
    if unused:
        uses = ", ".join(sorted(template.variables())) or "no variables"
        raise BadInput(f"--var: {', '.join(unused)} not used by {where} (it uses {uses})")
    for key, value in variables.items():
        if len(value) > limits.characters:
            raise BadInput(f"--var {key}: longer than {limits.characters:,} characters")
    values = {**(context or {}), **variables}
    rendered = {field: _render(where, field, source, values, limits)
                for field, source in template.fields().items()
                if publish or field != "public"}  # fmt: skip
    public = rendered.pop("public", "") or None
    if public is not None and (problem := text_problem(public)):
        raise BadInput(f"{where}.public: once rendered, {problem}")
    for field, text in rendered.items():
        if field != "subject" and not text.strip():
            raise BadInput(f"{where}.{field}: renders empty with these variables")
        if problem := (header_problem if field == "subject" else text_problem)(text):
            raise BadInput(f"{where}.{field}: once rendered, {problem}")
    subject = rendered.get("subject") or None
    by_channel = {field: rendered[field] for field in CHANNEL_FIELDS if field in rendered}
    return RenderedTemplate(Message(text=rendered["text"], subject=subject,
                                    by_channel=by_channel), public)


def _render(
    where: str, field: str, source: str, variables: Mapping[str, str], limits: RenderLimits
) -> str:
    try:
        return render_bounded(source, variables, limits).strip()
    except TooCostly as exc:
        raise BadInput(f"{where}.{field}: {exc}") from None
    except RecursionError:
        raise BadInput(f"{where}.{field}: cannot render: calls itself too deeply") from None
    except MemoryError:
        raise BadInput(f"{where}.{field}: cannot render: needs too much memory") from None
    except UndefinedError as exc:
        missing = _undefined_name(exc)
        hint = f" (give --var {missing}=...)" if missing else ""
        raise BadInput(f"{where}.{field}: {exc.message}{hint}") from None
    except SecurityError as exc:
        raise BadInput(f"{where}.{field}: not allowed in a template: {exc}") from None
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        raise BadInput(f"{where}.{field}: cannot render: {exc}") from None


def _undefined_name(exc: UndefinedError) -> str | None:
    # Jinja2's message is "'eta' is undefined"; the name is all the operator needs.
    message = exc.message or ""
    if message.startswith("'") and "' is undefined" in message:
        return message[1:].split("'", 1)[0]
    return None
