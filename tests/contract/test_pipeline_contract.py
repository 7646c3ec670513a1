"""dvc.yaml agrees with the stage registry: one name per stage everywhere."""

from __future__ import annotations

from pathlib import Path

import yaml

from transferpilot.config import Params
from transferpilot.stages import all_stages


def _dvc_stages(project_root: Path) -> dict:
    return yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]


def test_dvc_stages_are_the_registered_stages(project_root: Path) -> None:
    # The order is DVC's to give (deps/outs); the names must agree one to one.
    assert sorted(_dvc_stages(project_root)) == sorted(all_stages())


def test_each_stage_calls_its_cli_reads_its_sections_and_depends_on_its_code(
    project_root: Path,
) -> None:
    for name, spec in _dvc_stages(project_root).items():
        stage = all_stages()[name]
        assert spec["cmd"] == f"transferpilot stage {name}"
        # a whole section, or only the keys of it that change the stage's outputs
        listed = [str(item).split(".") for item in spec["params"]]
        assert sorted({parts[0] for parts in listed}) == sorted(stage.sections), name
        for section, *key in listed:
            if key:
                assert key[0] in Params.model_fields[section].annotation.model_fields, key
        assert f"transferpilot/stages/{name}.py" in spec["deps"]
        assert all(section in Params.model_fields for section in stage.sections)
        code = [dep for dep in spec["deps"] if dep.startswith("transferpilot/")]
        for dep in code:
            assert (project_root / dep).exists(), f"{name}: missing code dep {dep}"


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_code(root: Path, start: Path) -> set[Path]:
    """The transferpilot files ``start`` imports, transitively (static ``import`` statements).

    ``transferpilot/stages/__init__.py`` is followed only up to its own imports of the
    stage modules (registration), which are not a stage's code. Imports under
    ``if TYPE_CHECKING:`` never run and are not followed; imports inside functions are.
    """
    import ast

    seen: set[Path] = set()
    todo = [start]
    registry = root / "transferpilot" / "stages" / "__init__.py"
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # drop `if TYPE_CHECKING:` blocks
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        package = ".".join(path.relative_to(root).with_suffix("").parts)
        if path.name == "__init__.py":
            package = package.removesuffix(".__init__")
        else:
            package = package.rpartition(".")[0]
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                if not name.startswith("transferpilot"):
                    continue
                parts = name.split(".")  # importing a.b.c runs a/__init__ and a/b/__init__ first
                for i in range(1, len(parts)):
                    init = root.joinpath(*parts[:i], "__init__.py")
                    if init.is_file() and init != registry:
                        todo.append(init)
                if path == registry and name.startswith("transferpilot.stages."):
                    continue
                found = _module_file(root, name)
                if found is not None:
                    todo.append(found)
    return seen


def test_each_stage_depends_on_all_the_library_code_it_imports(project_root: Path) -> None:
    missing = {}
    for name, spec in _dvc_stages(project_root).items():
        deps = [project_root / d for d in spec["deps"] if d.startswith("transferpilot")]
        code = imported_code(project_root, project_root / "transferpilot" / "stages" / f"{name}.py")
        uncovered = sorted(
            str(f.relative_to(project_root))
            for f in code
            if not any(f == d or d in f.parents for d in deps)
        )
        if uncovered:
            missing[name] = uncovered
    assert not missing, f"dvc.yaml stages miss deps on code they import: {missing}"


def test_each_stage_depends_only_on_the_library_code_it_imports(project_root: Path) -> None:
    """The converse: a code dep the stage never imports re-runs it for nothing (editing the
    fine-tuning loop used to re-run extract and profile)."""
    extra = {}
    for name, spec in _dvc_stages(project_root).items():
        code = imported_code(project_root, project_root / "transferpilot" / "stages" / f"{name}.py")
        unused = [
            dep
            for dep in spec["deps"]
            if dep.startswith("transferpilot")
            and not any(f == project_root / dep or project_root / dep in f.parents for f in code)
        ]
        if unused:
            extra[name] = unused
    assert not extra, f"dvc.yaml stages depend on code they never import: {extra}"


def test_only_the_stages_that_fine_tune_depend_on_the_fine_tuning_loop(project_root: Path) -> None:
    loop = project_root / "transferpilot" / "finetune" / "_loop.py"
    users = {
        name
        for name, spec in _dvc_stages(project_root).items()
        if any(loop == project_root / d or project_root / d in loop.parents for d in spec["deps"])
    }
    # decide runs fine-tuning trials, train fine-tunes, evaluate reads its curves
    assert users == {"decide", "train", "evaluate"}


def test_an_unknown_stage_is_refused_with_every_stage_named() -> None:
    import pytest

    from transferpilot.errors import ConfigError
    from transferpilot.stages import STAGE_NAMES, get_stage

    with pytest.raises(ConfigError) as err:
        get_stage("prepair")
    assert all(name in str(err.value) for name in STAGE_NAMES)
