"""The package layering the architecture promises, checked on the source.

The actor core (`mas.actors`) is given its transport and journal by the composition root
(`mas.runtime`), so it must not import them: a core that imports its adapters cannot be
reasoned about, tested or reused alone, and import cycles between the layers make start-up
order fragile. Every import counts, also those under `TYPE_CHECKING` and inside functions.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import mas

ROOT = Path(mas.__file__).parent

# What the core may not import: the adapters, the HTTP layer, the cluster helpers, the
# composition root and everything built on top of the core.
CORE_FORBIDDEN = (
    "mas.transports",
    "mas.persistence",
    "mas.api",
    "mas.cluster",
    "mas.runtime",
    "mas.cli",
    "mas.orchestrator",
    "mas.testing",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its syntax tree."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "mas" or name.startswith("mas.")}


def _modules() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in sorted(ROOT.rglob("*.py"))}


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_the_actor_core_imports_no_adapter() -> None:
    offending = sorted(
        f"{module} imports {name}"
        for module, names in _modules().items()
        if module.startswith("mas.actors")
        for name in names
        if name.startswith(CORE_FORBIDDEN)
    )
    assert offending == []


def test_core_transports_and_persistence_form_no_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, names in _modules().items():
        for name in names:
            source, target = _package(module), _package(name)
            if source != target:
                graph[source].add(target)
    layers = ("mas.actors", "mas.transports", "mas.persistence")

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            for nxt in graph[current]:
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = [(a, b) for a in layers for b in layers if a < b and reaches(a, b) and reaches(b, a)]
    assert cycles == []
    assert not reaches("mas.actors", "mas.transports")
    assert not reaches("mas.actors", "mas.persistence")


def test_the_rule_sees_an_import_hidden_in_a_function(tmp_path: Path) -> None:
    # The check must not be fooled by a lazy import, which is how a cycle usually sneaks in.
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from mas.transports import create_transport\n")
    assert "mas.transports" in _imports(source)
