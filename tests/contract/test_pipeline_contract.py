"""dvc.yaml agrees with the stage registry: one name per stage everywhere."""

from __future__ import annotations

from pathlib import Path

import yaml

from transferpilot.config import Params
from transferpilot.stages import STAGES


def _dvc_stages(project_root: Path) -> dict:
    return yaml.safe_load((project_root / "dvc.yaml").read_text())["stages"]


def test_dvc_stages_are_the_registered_stages(project_root: Path) -> None:
    # The order is DVC's to give (deps/outs); the names must agree one to one.
    assert sorted(_dvc_stages(project_root)) == sorted(STAGES)


def test_each_stage_calls_its_cli_reads_its_sections_and_depends_on_its_code(
    project_root: Path,
) -> None:
    for name, spec in _dvc_stages(project_root).items():
        stage = STAGES[name]
        assert spec["cmd"] == f"transferpilot stage {name}"
        assert spec["params"] == list(stage.sections)
        assert f"transferpilot/stages/{name}.py" in spec["deps"]
        assert all(section in Params.model_fields for section in stage.sections)
        code = [dep for dep in spec["deps"] if dep.startswith("transferpilot/")]
        for dep in code:
            assert (project_root / dep).exists(), f"{name}: missing code dep {dep}"
