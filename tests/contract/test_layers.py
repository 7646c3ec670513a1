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


#: Packages worth deferring to the function that needs them (each costs a noticeable
#: share of a second or more to import).
HEAVY = {
    "dask", "distributed", "dvc", "matplotlib", "onnx", "onnxruntime", "PIL", "prefect",
    "prefect_dask", "pydantic", "scipy", "sklearn", "timm", "torch", "torchvision", "yaml",
}  # fmt: skip


def _module_imports(path: Path, module: str, *, top_level: bool) -> list[tuple[int, str]]:
    """``(line, module)`` for each import in ``path``: those run at import time (not under
    ``TYPE_CHECKING``), or those inside functions. ``from a import b`` names ``a.b`` when
    that is a module of the library, else ``a``."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if top_level:
        nodes = [
            n
            for stmt in tree.body
            if not (isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test))
            for n in ast.walk(stmt)
            if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
    else:
        nodes = [
            n
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f)
        ]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            found.append((node.lineno, base))
    return found


def test_a_local_import_defers_a_heavy_package(project_root: Path) -> None:
    """An import inside a function is there to defer a heavy package; one of a library
    module that imports none (directly or through others) defers nothing and can only hide
    an arrow between layers: it belongs at the top of the module."""
    root = project_root / "transferpilot"
    modules = {
        ".".join(p.relative_to(project_root).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    heavy: dict[str, bool] = {}

    def is_heavy(module: str, seen: frozenset[str] = frozenset()) -> bool:
        if module not in heavy:
            imported = {m for _, m in _module_imports(modules[module], module, top_level=True)}
            parents = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
            heavy[module] = any(m.split(".")[0] in HEAVY for m in imported) or any(
                is_heavy(m, seen | {module})
                for m in (imported | parents) & modules.keys()
                if m not in seen | {module}
            )
        return heavy[module]

    light = sorted(
        f"{path.relative_to(project_root)}:{line} imports {imported} inside a function"
        for module, path in modules.items()
        for line, imported in _module_imports(path, module, top_level=False)
        if imported in modules and imported != "transferpilot" and not is_heavy(imported)
    )
    assert light == [], "\n".join(light)
