"""The library's layers and the absence of import cycles, as import-linter and grimp see them.

The contracts live in pyproject.toml (``[tool.importlinter]``); grimp, which import-linter
builds on, counts imports inside functions too, so a local import cannot hide an arrow.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import grimp


def test_the_import_contracts_hold(project_root: Path) -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=project_root, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_of_the_library_has_a_layer(project_root: Path) -> None:
    config = tomllib.loads((project_root / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.split("|")}
    top = {
        f"transferpilot.{p.stem}" if p.is_file() else f"transferpilot.{p.name}"
        for p in (project_root / "transferpilot").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    assert top - named == set(), "give these modules a layer in pyproject.toml"


def _cycles(modules: set[str], imports: Callable[[str], set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(imports(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_itself_through_others() -> None:
    # stricter than import-linter's acyclic_siblings: a package and its own modules too
    graph = grimp.build_graph("transferpilot")
    assert _cycles(graph.modules, graph.find_modules_directly_imported_by) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    arrows = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(set(arrows), arrows.__getitem__) == [["a", "b"]]
