"""Bounds on rendering a template: time, and the size of what it builds and writes.

Jinja2's sandbox keeps a template away from Python's internals, not from the
machine: ``{{ 'x' * 10**8 }}`` allocates a gigabyte in one step, and three nested
loops run for hours without writing a word. Here every way a template can build a
large value in one step is checked *before* the step (the operators ``*``, ``**``,
``+``, ``%`` and ``~``; string methods and filters that repeat or pad; attribute
reads of what a loop grew), what it writes is counted as it is written, and a trace
on the template's own code stops it at a deadline. Crossing a bound raises
:class:`TooCostly`, whose message says which.
"""

from __future__ import annotations

import functools
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from string import Formatter
from types import FrameType
from typing import Any, TypeGuard, cast

from jinja2 import StrictUndefined, Template
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_FILENAME = "<template>"
"""The file name Jinja2 gives code compiled from a string: the trace follows only it."""
_INT_DIGITS = 4300  # Python's own limit for turning an int into text
_PRINTF_WIDTH = re.compile(r"%[-#0 +]*(\d+)?(?:\.(\d+))?")


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """How long one field may take to render, and how large any value in it may grow."""

    seconds: float = 2.0
    characters: int = 1_000_000


class TooCostly(Exception):
    """A template crossed a bound while rendering; the message says which."""


def render_bounded(source: str, variables: Mapping[str, object], limits: RenderLimits) -> str:
    """Render ``source`` within ``limits``; raise :class:`TooCostly` when it would not fit.

    Other rendering errors (undefined variables, type errors) propagate as Jinja2
    raises them.
    """
    environment = _BoundedEnvironment(limits)
    template: Template = environment.from_string(source)
    pieces: list[str] = []
    written = 0
    previous = sys.gettrace()
    sys.settrace(environment.trace)
    try:
        for piece in template.generate(**variables):
            written += len(piece)
            if written > limits.characters:
                raise TooCostly(f"renders more than {limits.characters:,} characters")
            pieces.append(piece)
    finally:
        sys.settrace(previous)
    return "".join(pieces)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja2's code generator, with ``~`` going through the environment (it cannot be
    intercepted like the other operators)."""

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.concat_bounded((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox (immutable: no list grows in place), with every bound checked."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, limits: RenderLimits) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        for name, function in list(self.filters.items()):
            self.filters[name] = _bounded_filter(self, name, function)
        lipsum = cast("Callable[..., str]", self.globals["lipsum"])
        self.globals["lipsum"] = _bounded_lipsum(self, lipsum)

    # -- time --------------------------------------------------------------------------

    def trace(self, frame: FrameType, event: str, arg: object) -> Any:
        """A ``sys.settrace`` function: line events of the template's own code only."""
        if frame.f_code.co_filename != TEMPLATE_FILENAME:
            return None
        self.on_time()
        return self._line

    def _line(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            self.on_time()
        return self._line

    def on_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TooCostly(
                f"took longer than {self.limits.seconds:g} s to render (a loop too large?)"
            )

    # -- size --------------------------------------------------------------------------

    def check(self, size: float, what: str = "a value") -> None:
        if size > self.limits.characters:
            raise TooCostly(
                f"would build {what} of {_count(size)} characters or items (the limit is "
                f"{self.limits.characters:,})"
            )

    def checked(self, value: Any) -> Any:
        """``value``, if it is not too large already (a string a loop kept doubling)."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > _INT_DIGITS * math.log2(10):
                raise TooCostly(f"would build a number of over {_INT_DIGITS:,} digits")
        else:
            self.check(_size(value))
        return value

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.on_time()
        if operator == "*":
            count, sequence = (left, right) if isinstance(left, int) else (right, left)
            if isinstance(count, int) and _is_sequence(sequence):
                self.check(max(count, 0) * len(sequence), "a repeated value")
            elif _is_int(left) and _is_int(right):
                self._digits(left.bit_length() + right.bit_length())
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0:
            if abs(left) > 1:
                self._digits(right * left.bit_length())
        elif operator == "+" and _is_sequence(left) and _is_sequence(right):
            self.check(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            self._printf(left, right if isinstance(right, tuple) else (right,))
        return self.checked(super().call_binop(context, operator, left, right))

    def concat_bounded(self, values: Iterable[Any]) -> str:
        pieces = [str(value) for value in values]
        self.check(sum(len(piece) for piece in pieces))
        return "".join(pieces)

    def getattr(self, obj: Any, attribute: str) -> Any:
        return self.checked(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return self.checked(super().getitem(obj, argument))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.on_time()
        for value in (*args, *kwargs.values()):
            __self.checked(value)
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            __self._string_method(owner, getattr(target, "__name__", ""), args, kwargs)
        return __self.checked(super().call(__context, __obj, *args, **kwargs))

    # -- what one step can build --------------------------------------------------------

    def _digits(self, bits: float) -> None:
        if bits > _INT_DIGITS * math.log2(10):
            raise TooCostly(f"would build a number of over {_INT_DIGITS:,} digits")

    def _string_method(self, text: str, name: str, args: tuple[Any, ...],
                       kwargs: Mapping[str, Any]) -> None:
        first = args[0] if args else next(iter(kwargs.values()), None)
        if name in ("ljust", "rjust", "center", "zfill") and _is_int(first):
            self.check(first, "a padded string")
        elif name == "expandtabs":
            size = first if _is_int(first) else 8
            self.check(len(text) + text.count("\t") * size, "an expanded string")
        elif name == "replace" and len(args) >= 2:
            self._replace(text, args[0], args[1])
        elif name == "join" and args:
            self._join(text, args[0])
        elif name in ("format", "format_map"):
            self._format(text, args, kwargs)

    def _replace(self, text: str, old: Any, new: Any) -> None:
        if isinstance(old, str) and isinstance(new, str):
            found = len(text) + 1 if not old else text.count(old)
            self.check(len(text) + found * max(len(new) - len(old), 0), "a replaced string")

    def _join(self, separator: str, items: Any) -> None:
        if isinstance(items, list | tuple):
            total = sum(_size(item) for item in items) + len(separator) * len(items)
            self.check(total, "a joined string")

    def _format(self, text: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        try:
            fields = list(Formatter().parse(text))
        except ValueError:
            return  # str.format raises its own error for it
        for _, _, spec, _ in fields:
            for width in re.findall(r"\d+", spec or ""):
                self.check(int(width), "a padded string")
        for value in (*args, *kwargs.values()):
            if _is_int(value):
                self.check(value, "a padded string")

    def _printf(self, text: str, values: tuple[Any, ...]) -> None:
        for width, precision in _PRINTF_WIDTH.findall(text):
            self.check(max(int(width or 0), int(precision or 0)), "a padded string")
        if "*" in text:
            for value in values:
                if _is_int(value):
                    self.check(value, "a padded string")


def _bounded_filter(
    environment: _BoundedEnvironment, name: str, function: Callable[..., Any]
) -> Callable[..., Any]:
    """``function`` with its arguments checked before and its result after."""
    passes_first = getattr(function, "jinja_pass_arg", None) is not None

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        environment.on_time()
        values = args[1:] if passes_first else args  # the context or environment first
        _check_filter(environment, name, values, kwargs)
        result = function(*args, **kwargs)
        if isinstance(result, Iterable) and not isinstance(result, str | list | tuple | dict):
            return result  # a generator (map, select, batch): checked as it is consumed
        return environment.checked(result)

    return bounded


def _check_filter(environment: _BoundedEnvironment, name: str, values: tuple[Any, ...],
                  kwargs: Mapping[str, Any]) -> None:
    value = values[0] if values else None
    rest = values[1:]
    size = _size(value)
    if name == "center" and rest and _is_int(rest[0]):
        environment.check(rest[0], "a padded string")
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        pad = width if _is_int(width) else _size(width)
        lines = str(value).count("\n") + 1 if value is not None else 1
        environment.check(size + lines * pad, "an indented string")
    elif name in ("batch", "slice") and rest and _is_int(rest[0]):
        environment.check(rest[0], "a list")
    elif name == "replace" and len(rest) >= 2 and isinstance(value, str):
        environment._replace(value, rest[0], rest[1])
    elif name == "join" and isinstance(value, list | tuple):
        separator = rest[0] if rest else kwargs.get("d", "")
        environment._join(str(separator), value)
    elif name == "format" and isinstance(value, str):
        environment._printf(value, rest)
    elif name == "wordwrap":
        wrap = kwargs.get("wrapstring") or (rest[2] if len(rest) > 2 else "\n")
        environment.check(size * (1 + _size(wrap)) // 2, "a wrapped string")
    elif name == "tojson":
        indent = kwargs.get("indent") or (rest[0] if rest else None)
        if _is_int(indent):  # every character may start a line, nested that deep
            environment.check(len(str(value)) * (indent + 1), "indented JSON")


def _bounded_lipsum(environment: _BoundedEnvironment,
                    lipsum: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(lipsum)
    def bounded(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        if _is_int(n) and _is_int(max):
            environment.check(n * max * 8, "lorem ipsum")  # about 8 characters a word
        return lipsum(n, html, min, max)

    return bounded


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _size(value: Any) -> int:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value)
    return 0


def _count(size: float) -> str:
    return f"{size:,.0f}" if size < 1e18 else f"{size:.2g}"
