"""The import graph of ``provider/``, read from the code's AST: layers that only point down.

Every ``import`` and ``from ... import`` of every module counts, also those inside functions
(a deferred import is still a dependency). The layers, bottom first (``docs`` of the packages'
``__init__`` say why each sits where it does):

0. ``errors``, ``limits``, ``task_instance``, ``labels``, ``stat_names``: plain values, importable from anywhere;
1. ``scheduling`` (pure placement), ``clients`` (engine, agent, hosts), ``agent`` (the node agent);
2. ``reservations`` and ``logs``: state kept on the engines, and the log pipeline;
3. ``hooks``: the Airflow hooks, connections to clients;
4. ``operators``, ``sensors``, ``triggers``, ``ui``: what Airflow runs and serves;
5. ``decorators``: ``@task.gpu_docker``, TaskFlow's face of the operator.

A module may import its own layer or a lower one, never a higher one; no two modules and no two
packages import each other, directly or around a loop.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "provider"

LAYERS = {
    "provider.errors": 0, "provider.limits": 0, "provider.task_instance": 0, "provider.labels": 0, "provider.stat_names": 0,
    "provider.scheduling": 1, "provider.clients": 1, "provider.agent": 1,
    "provider.reservations": 2, "provider.logs": 2,
    "provider.hooks": 3,
    "provider.operators": 4, "provider.sensors": 4, "provider.triggers": 4, "provider.ui": 4,
    "provider.decorators": 5,
    "provider": 6,
}
"""The layer of every top-level module or package of ``provider`` (``provider`` itself: its
``__init__``, which only describes the provider to Airflow)."""

PURE_FORBIDDEN = ("airflow", "docker", "socket", "asyncio", "http", "urllib", "ssl", "time", "datetime", "os")
"""What ``provider.scheduling`` may not import: no Airflow, Docker or network code, no clock."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str) -> Iterator[str]:
    """Every module ``path`` imports, as absolute names (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    """Module -> the provider modules it imports (a ``from pkg import name`` counts the module
    ``pkg.name`` when it is one, else ``pkg``)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        edges[name] = {target for target in imports(path, name) if target in known and target != name}
    return edges


def top(name: str) -> str:
    """The layer key of a module: ``provider.x`` for anything under ``provider/x``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else name


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    assert sorted({top(m) for m in modules()} - set(LAYERS)) == []


def test_no_import_cycle_between_modules() -> None:
    assert cycles(graph()) == []


def test_no_import_cycle_between_packages() -> None:
    packages: dict[str, set[str]] = {}
    for source, targets in graph().items():
        packages.setdefault(top(source), set()).update(top(t) for t in targets if top(t) != top(source))
    assert cycles(packages) == []


def test_imports_point_down_or_sideways_never_up() -> None:
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if LAYERS[top(target)] > LAYERS[top(source)]
    )
    assert upward == []


def test_nothing_outside_the_operators_imports_them() -> None:
    """Only the TaskFlow decorator, which is the operator with a function inside, builds on it."""
    assert sorted(s for s, ts in graph().items() if top(s) not in ("provider.operators", "provider.decorators")
                  and any(top(t) == "provider.operators" for t in ts)) == []


@pytest.mark.parametrize("name", sorted(m for m in modules() if top(m) == "provider.scheduling"))
def test_the_placement_core_is_pure(name: str) -> None:
    """No Airflow, Docker or network code and no clock in ``provider/scheduling``; of the
    provider it uses only its own modules and the errors."""
    found = set(imports(modules()[name], name))
    outside = sorted(m for m in found if m.split(".")[0] in PURE_FORBIDDEN)
    provider = sorted(m for m in found if m.startswith("provider.") and top(m) not in
                      ("provider.scheduling", "provider.errors"))
    assert (outside, provider) == ([], [])


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    """The checks above would fail on a loop or on an arrow pointing up."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert LAYERS[top("provider.hooks.docker_host")] > LAYERS[top("provider.clients.engine")]
