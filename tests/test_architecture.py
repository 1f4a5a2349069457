"""The house keeps its shape: rooms by concern, imports flowing one way.

These read the source (every import, at any depth, TYPE_CHECKING ones included),
not the running program, so a new module that breaks a rule fails here before it
is ever imported. docs/design.md has the map these rules come from.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("router", "channels", "config")
PROVIDER_WORDS = ("MessageSid", "MessageStatus", "CallStatus", "CallSid", "callback_query",
                  "X-Twilio-Signature", "x-twilio-signature", "msisdn", "client-ref",
                  "conversation_uuid", "payload_hash")  # fmt: skip
PROVIDER_HOMES = ("channels/", "router/sandbox/", "router/cli/demo")


def sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, resolved to a module that exists."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {resolve(name) for name in names if name.split(".")[0] in PACKAGES} - {""}


def resolve(name: str) -> str:
    """The file that defines ``name`` (a module, or the package holding an attribute)."""
    parts = name.split(".")
    while parts:
        candidate = ROOT.joinpath(*parts)
        if candidate.with_suffix(".py").is_file():
            return relative(candidate.with_suffix(".py"))
        if (candidate / "__init__.py").is_file():
            return relative(candidate / "__init__.py")
        parts.pop()
    return ""


def folder(file: str) -> str:
    return file.rpartition("/")[0]


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sources():
        for target in imported(path):
            edges[relative(path)].add(target)
    return edges


def folder_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph().items():
        for target in targets:
            if folder(source) != folder(target):
                edges[folder(source)].add(folder(target))
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_top_of_router_holds_only_the_api_and_the_composition_root() -> None:
    modules = sorted(p.name for p in (ROOT / "router").glob("*.py"))
    assert len(modules) <= 8, modules


def test_no_folder_imports_a_folder_that_imports_it_back() -> None:
    assert find_cycle(folder_graph()) is None


def test_the_finder_sees_a_cycle_when_there_is_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


@pytest.mark.parametrize(("room", "may_import"), [
    ("config", {"config"}),
    ("router/model", {"config", "router/model"}),
    ("router/store", {"config", "router/model", "router/store"}),
    ("router/rules", {"config", "router/model", "router/store", "router/rules"}),
    ("router/sending", {"config", "router/model", "router/store", "router/rules",
                        "router/sending"}),
    ("router/twoway", {"config", "router/model", "router/store", "router/rules",
                       "router/sending", "router/twoway"}),
    ("router/board", {"config", "router/model", "router/store", "router/rules",
                      "router/board"}),
    ("router/incidents", {"config", "router/model", "router/store", "router/rules",
                          "router/sending", "router/incidents"}),
    ("channels", {"config", "router/model", "channels"}),
    ("router/sandbox", {"router/sandbox"}),
])  # fmt: skip
def test_each_room_imports_only_downward(room: str, may_import: set[str]) -> None:
    for source, targets in graph().items():
        if source != room and not source.startswith(room + "/"):
            continue
        for target in targets:
            allowed = any(folder(target) == r or folder(target).startswith(r + "/")
                          for r in may_import)
            assert allowed, f"{source} imports {target}"


def test_the_library_never_imports_the_cli() -> None:
    for source, targets in graph().items():
        if source.startswith("router/cli/"):
            continue
        assert not [t for t in targets if t.startswith("router/cli/")], source


def test_router_is_a_composition_not_a_subclass() -> None:
    tree = ast.parse((ROOT / "router" / "core.py").read_text())
    [router] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Router"]
    assert router.bases == []


def test_provider_payload_fields_live_with_their_provider() -> None:
    for path in sources():
        name = relative(path)
        if name.startswith(PROVIDER_HOMES):
            continue
        text = path.read_text()
        assert not [word for word in PROVIDER_WORDS if word in text], name


def test_each_provider_has_its_folder() -> None:
    for provider in ("twilio", "vonage", "telegram", "email"):
        assert (ROOT / "channels" / provider / "__init__.py").is_file()


def test_the_checks_read_real_imports() -> None:
    # A guard on the guards: the graph sees the edges everybody knows are there.
    edges = graph()
    assert "router/model/outcome.py" in edges["channels/twilio/account.py"]
    assert "router/registry.py" in edges["router/core.py"]
    assert "channels/telegram/channel.py" in edges["router/registry.py"]  # a lazy import
