"""The rooms of docs/design.md, read from the source: who may import whom.

Built with ``ast`` over every module of ``entitlements`` and ``entitlements_client``
(nothing is imported, so a lazy or optional import cannot hide, and a leak is
named with its file and line):

- the domain reaches no framework, driver or HTTP library, even through the
  modules it imports (as ``test_purity`` checks at run time);
- the API and the CLI import no database or Redis driver: they reach storage
  through the service and the composition root;
- the service and the key management import no asyncpg: SQL lives in ``store/``;
- the SDK never imports the service;
- no import cycle among the service's modules: not through module-level imports
  (those run at import time; imports under ``TYPE_CHECKING`` do not), nor through
  imports inside functions (a lazy import hides a cycle, it does not remove it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "entitlements": ROOT / "entitlements",
    "entitlements_client": ROOT / "client" / "entitlements_client",
}
FRAMEWORKS = ("fastapi", "starlette", "asyncpg", "redis", "httpx", "pydantic")


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` (absolute, dotted) at ``line``."""

    source: str
    target: str
    line: int
    #: Runs when ``source`` is imported: at module level, not under ``TYPE_CHECKING``.
    runtime: bool

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


@cache
def modules() -> dict[str, Path]:
    """Every first-party module by dotted name (a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for top, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(body: Iterable[ast.stmt], runtime: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement under ``body``, and whether it runs at import time."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, runtime
        elif isinstance(node, ast.If):
            yield from _walk(node.body, runtime and not _is_type_checking(node.test))
            yield from _walk(node.orelse, runtime)
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody):
                yield from _walk(part, runtime)
            for handler in node.handlers:
                yield from _walk(handler.body, runtime)
        elif isinstance(node, ast.With | ast.AsyncWith):
            yield from _walk(node.body, runtime)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.While):
            yield from _walk(node.body, runtime)
            yield from _walk(node.orelse, runtime)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            # A class body runs at import time; a function body only when called.
            inner = runtime if isinstance(node, ast.ClassDef) else False
            yield from _walk(node.body, inner)


@cache
def imports_of(name: str) -> tuple[Import, ...]:
    path = modules()[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node, runtime in _walk(tree.body, True):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno, runtime) for alias in node.names]
            continue
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            origin = ".".join([*base, node.module] if node.module else base)
        else:
            origin = node.module or ""
        for alias in node.names:
            # ``from pkg import sub`` imports the module pkg.sub when there is one.
            sub = f"{origin}.{alias.name}"
            found.append(Import(name, sub if sub in modules() else origin, node.lineno, runtime))
    return tuple(found)


def in_layer(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


def layer_modules(layer: str) -> list[str]:
    names = sorted(n for n in modules() if in_layer(n, layer))
    assert names, f"no modules in {layer}: the layout changed, update this test"
    return names


def direct(layer: str, forbidden: Iterable[str]) -> list[str]:
    """Imports of ``forbidden`` packages written in ``layer``'s own modules (anywhere)."""
    return [
        str(imp)
        for name in layer_modules(layer)
        for imp in imports_of(name)
        if any(in_layer(imp.target, f) for f in forbidden)
    ]


def reached(layer: str, forbidden: Iterable[str]) -> list[str]:
    """Imports of ``forbidden`` packages that importing ``layer`` runs: its own imports
    (anywhere), and the module-level ones of every first-party module they load
    (with the packages above each, whose ``__init__`` runs first)."""
    forbidden = tuple(forbidden)
    leaks: list[str] = []
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(name, (name,)) for name in layer_modules(layer)]
    while todo:
        name, path = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo += [(p, (*path, p)) for p in parents if p in modules()]
        own = in_layer(name, layer)
        for imp in imports_of(name):
            if not (imp.runtime or own):
                continue
            if any(in_layer(imp.target, f) for f in forbidden):
                leaks.append(" -> ".join([*path[:-1], str(imp)]))
            elif imp.target in modules():
                todo.append((imp.target, (*path, imp.target)))
    return sorted(leaks)


def import_graph(prefix: str) -> dict[str, list[str]]:
    """Module-level imports among the first-party modules under ``prefix``."""
    return {
        name: sorted(
            {
                i.target
                for i in imports_of(name)
                if i.runtime and in_layer(i.target, prefix) and i.target in modules()
            }
        )
        for name in modules()
        if in_layer(name, prefix)
    }


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop, and modules
    importing themselves (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# -- the rules ------------------------------------------------------------------------


def none(found: list[str] | list[list[str]]) -> str:
    return "\n".join(map(str, found))


def test_the_domain_reaches_no_framework_driver_or_http_library() -> None:
    leaks = reached("entitlements.domain", FRAMEWORKS)
    assert leaks == [], none(leaks)


def test_the_api_imports_no_database_or_redis_driver() -> None:
    leaks = direct("entitlements.api", ("asyncpg", "redis"))
    assert leaks == [], none(leaks)


def test_the_cli_imports_no_database_or_redis_driver() -> None:
    leaks = direct("entitlements.cli", ("asyncpg", "redis"))
    assert leaks == [], none(leaks)


def test_the_service_imports_no_asyncpg() -> None:
    leaks = direct("entitlements.service", ("asyncpg",))
    assert leaks == [], none(leaks)


def test_the_keys_import_no_asyncpg() -> None:
    leaks = direct("entitlements.keys", ("asyncpg",))
    assert leaks == [], none(leaks)


def test_the_sdk_never_imports_the_service() -> None:
    leaks = direct("entitlements_client", ("entitlements",))
    assert leaks == [], none(leaks)


def test_no_import_cycles_among_the_services_modules() -> None:
    found = cycles(import_graph("entitlements"))
    assert found == [], none(found)


def test_no_import_cycles_even_through_imports_inside_functions() -> None:
    """A lazy import can hide a cycle rather than remove it (issue 11: the CLI's
    ``importing`` and ``main`` imported each other that way)."""
    graph = {
        name: sorted({i.target for i in imports_of(name) if i.target in modules()})
        for name in modules()
        if in_layer(name, "entitlements")
    }
    found = cycles(graph)
    assert found == [], none(found)


def test_no_import_cycles_in_the_sdk() -> None:
    found = cycles(import_graph("entitlements_client"))
    assert found == [], none(found)


def test_one_circuit_breaker_and_one_bearer_parser() -> None:
    """One of each, in the SDK, and the service uses those (issue 11)."""
    breakers = sorted(
        name
        for name in modules()
        for node in ast.walk(ast.parse(modules()[name].read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.name.endswith("Breaker")
    )
    assert breakers == ["entitlements_client.breaker"]
    assert "entitlements_client.breaker" in {
        i.target for i in imports_of("entitlements.cache.redis")
    }
    assert "entitlements_client.bearer" in {i.target for i in imports_of("entitlements.api.auth")}


# -- the detectors detect -------------------------------------------------------------


def test_the_detectors_find_what_they_look_for() -> None:
    # Guard against rules that can never fail: the real tree has these imports.
    assert direct("entitlements.store", ("asyncpg",)) != []
    assert direct("entitlements_client", ("httpx",)) != []
    # bearer.py imports no httpx, but the package above it does, and runs first.
    assert any("httpx" in leak for leak in reached("entitlements_client.bearer", ("httpx",)))
    assert [(i.target, i.runtime) for i in imports_of("entitlements_client.asgi")][-2:] == [
        ("entitlements_client.verify", True),
        ("entitlements_client._async", False),  # under TYPE_CHECKING
    ]
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["d"], "e": ["a"], "f": []}
    assert cycles(graph) == [["a", "b", "c"], ["d"]]
