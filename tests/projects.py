"""Throw-away working copies of the project: git + DVC, a tiny dataset as the source."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.images import image_folder

#: What a working copy needs of the project: the pipeline, its code, the flow.
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "prefect.yaml")
PROJECT_DIRS = ("transferpilot", "flows", "tasks")


def run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would, with this environment's scripts on PATH; must succeed."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result


def git_commit(work: Path, message: str) -> None:
    run(["git", "add", "-A"], work)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], work)


def working_copy(work: Path, project_root: Path, classes: dict[str, int] | None = None) -> Path:
    """A fresh git + DVC copy of the project at ``work`` whose source is a tiny dataset."""
    work.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy(project_root / name, work / name)
    shutil.copytree(
        project_root / ".dvc", work / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache")
    )
    for name in PROJECT_DIRS:
        shutil.copytree(
            project_root / name, work / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    image_folder(work / "data" / "tiny", classes or {"red": 5, "green": 5})
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["prepare"]["source"] = "data/tiny"
    params["extract"]["workers"] = 0
    params["profile"]["measure_throughput"] = False
    params["train"]["export"] = False  # ~15 s per train run; the export has its own tests
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], work)
    git_commit(work, "init")
    return work


def tiny_model(path: Path) -> dict[str, str]:
    """A small, randomly initialised timm EfficientNet saved as safetensors; returns the
    ``model`` params section that selects it (``file:`` + ``arch``)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return {"name": f"file:{path}", "arch": "timm:test_efficientnet"}


def write_params(project: Path, sections: dict) -> None:
    """Merge ``sections`` into the project's params.yaml (one level deep)."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text()) if path.exists() else {}
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params))
