"""Overrides from the environment: ``BACKCHANNEL_<SECTION>__<KEY>=value``.

Each variable is read the way a person writes it: a list as ``telegram,email`` or
as JSON (``["telegram", "email"]``), a table as JSON (``{"per_second": 2}``), any other
value as it stands (the model converts numbers and booleans). What cannot be read is
refused with the variable named, never its value (it may be a secret).
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_settings import PydanticBaseSettingsSource

from config.contacts import Contact, ContactEntry

ENV_PREFIX = "BACKCHANNEL_"
CONFIG_ENV = "BACKCHANNEL_CONFIG"
_Kind = Literal["list", "table", "value"]


@dataclass(frozen=True, slots=True)
class Overrides:
    """What the environment sets, and one line per variable that cannot be read."""

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def read_overrides(model: type[BaseModel], environ: Mapping[str, str]) -> Overrides:
    """The ``BACKCHANNEL_*`` variables as nested tables over ``model``'s fields; those
    that cannot be read are left out and named in ``problems``."""
    found: dict[str, Any] = {}
    problems: list[str] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        path = [part.lower() for part in upper.removeprefix(ENV_PREFIX).split("__")]
        if not all(path):
            problems.append(f"{name}: an empty key (overrides are BACKCHANNEL_<SECTION>__<KEY>)")
            continue
        if path[0] not in model.model_fields:
            # pydantic-settings used to skip these silently: a misspelt override would
            # leave the file's value (an old token) in use without a word.
            problems.append(f"{name}: unknown key (overrides are BACKCHANNEL_<SECTION>__<KEY>)")
            continue
        try:
            value = _decode(environ[name], _kind_at(model, path))
            _place(found, path, value)
        except ValueError as exc:
            problems.append(f"{'.'.join(path)}: {exc} (from ${name})")
    return Overrides(found, problems)


def variable_for(location: tuple[str | int, ...]) -> str | None:
    """The environment variable that set this field, or a table holding it, if any."""
    present = {name.upper(): name for name in os.environ}
    parts = [str(part).upper() for part in location]
    for end in range(len(parts), 0, -1):
        name = ENV_PREFIX + "__".join(parts[:end])
        if name in present:
            return present[name]
    return None


def _decode(raw: str, kind: _Kind) -> Any:
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None
    text = raw.strip()
    if kind == "list":
        if not text.startswith("["):
            # telegram,email: how a person writes a list on a command line.
            return [item.strip() for item in text.split(",")] if text else []
        decoded = _json(text, 'a list: a,b or ["a", "b"]')
        if not isinstance(decoded, list):
            raise ValueError('expected a list: a,b or ["a", "b"]')
        return decoded
    if kind == "table":
        decoded = _json(text, 'a JSON table, such as {"key": "value"}')
        if not isinstance(decoded, dict):
            raise ValueError('expected a JSON table, such as {"key": "value"}')
        return decoded
    return raw


def _json(text: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}): expected {expected}"
        ) from None
    except (RecursionError, ValueError):  # nested too deeply; an integer too long
        raise ValueError(f"cannot be read: expected {expected}") from None


def _place(tree: dict[str, Any], path: list[str], value: Any) -> None:
    table = tree
    for part in path[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ValueError(f"sets a key inside {part!r}, which another variable sets whole")
    last = path[-1]
    if isinstance(table.get(last), dict) and isinstance(value, dict):
        _merge(table[last], value)
    elif last in table:
        raise ValueError(f"sets {last!r}, which another variable sets too")
    else:
        table[last] = value


def _merge(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(into.get(key), dict) and isinstance(value, dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _kind_at(model: type[BaseModel], path: list[str]) -> _Kind:
    """What the field at ``path`` holds; unknown keys are values (the model refuses them)."""
    annotation: Any = model
    for part in path:
        annotation = _unwrap(annotation)
        if annotation is Contact:
            annotation = ContactEntry  # the book keeps Contacts; the file holds entries
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return "value"
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return "value"
    annotation = _unwrap(annotation)
    origin = get_origin(annotation) or annotation
    if origin in (list, tuple, set, frozenset):
        return "list"
    if origin is dict or annotation is Contact or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel)
    ):
        return "table"
    return "value"


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or origin is types.UnionType:
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = members[0]
        else:
            return annotation


class EnvironmentProblem(Exception):
    """``BACKCHANNEL_*`` variables that cannot be read, one line each."""


REPORTED_ELSEWHERE: ContextVar[bool] = ContextVar("backchannel_env_reported", default=False)
"""True while :func:`config.settings.settings_from_mapping` builds settings: it lists the
unreadable variables with the other problems, so the source leaves them out quietly."""


class EnvironmentSource(PydanticBaseSettingsSource):
    """:func:`read_overrides` as a pydantic-settings source (the environment wins over
    the file, so that a secret can live outside it). Built directly, ``Settings(...)``
    raises :class:`EnvironmentProblem` for a variable it cannot read."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every variable at once

    def __call__(self) -> dict[str, Any]:
        overrides = read_overrides(self.settings_cls, os.environ)
        if overrides.problems and not REPORTED_ELSEWHERE.get():
            raise EnvironmentProblem("\n".join(overrides.problems))
        return overrides.values
