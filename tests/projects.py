"""Throw-away working copies of the project: git + DVC, a tiny dataset as the source."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.images import image_folder

#: What a working copy needs of the project: the pipeline, its code, the flow.
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "prefect.yaml", "holdout.csv")
PROJECT_DIRS = ("transferpilot", "flows", "tasks")


#: The ``transferpilot`` command of this environment.
BIN = Path(sys.executable).parent / "transferpilot"


def cli_env() -> dict[str, str]:
    """The environment a user's shell gives the command: offline, this venv on PATH."""
    out = {**os.environ, "HF_HUB_OFFLINE": "1", "DVC_NO_ANALYTICS": "1", "COLUMNS": "120"}
    out["PATH"] = f"{BIN.parent}{os.pathsep}{out['PATH']}"
    return out


def tp(*args: str, cwd: Path, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    """``transferpilot ARGS`` in ``cwd``, as a user types it; the result, whatever its code."""
    return subprocess.run(
        [str(BIN), *args], cwd=cwd, env=cli_env(), capture_output=True, text=True,
        timeout=timeout, **kwargs,
    )  # fmt: skip


def tp_imports(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``transferpilot ARGS`` under ``python -X importtime``: the result, and the top-level
    packages the process imported (what a stage pays before it starts its work)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "transferpilot", *args], cwd=cwd,
        env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = (ln.rsplit("|", 1)[-1].strip() for ln in result.stderr.splitlines())
    imported = {n.split(".")[0] for n in lines if n and not n.startswith("import time")}
    return result, imported


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """``transferpilot ARGS`` started in a process group of its own (for :func:`kill_when`)."""
    return subprocess.Popen(
        [str(BIN), *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def run_stages(project: Path, *names: str) -> dict[str, dict]:
    """Stages ``names`` run in this process in ``project``, as ``transferpilot stage NAME``
    runs each there (for tests about what a stage computes, not about processes)."""
    from transferpilot.config import load_params
    from transferpilot.stages import Paths, run_stage

    here = Path.cwd()
    os.chdir(project)
    try:
        params = load_params(Path("params.yaml"))
        return {name: run_stage(name, params, Paths()) for name in names}
    finally:
        os.chdir(here)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the process group as soon as ``ready()`` is true (fail if it ends first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the kill: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def loose_project(
    tmp_path: Path, classes: dict[str, int], model: Path | None = None, **sections
) -> Path:
    """A folder with images, a tiny model and params for it (no git, no DVC)."""
    root = tmp_path / "p"
    image_folder(root / "images", classes, size=24)
    model = tiny_model(model or tmp_path / "tiny.safetensors")
    write_params(
        root,
        {
            "model": model,
            "prepare": {"source": "images"},
            "extract": {"workers": 0, "batch_size": 4, "shard_size": 4},
            "profile": {"measure_throughput": False},
        }
        | sections,
    )
    return root


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


def use_remote(clone: Path, remote: Path) -> None:
    """Point the project's default remote at ``remote`` for this clone only (as a user
    whose team shares a bucket would, in the untracked ``.dvc/config.local``)."""
    run(["dvc", "remote", "modify", "--local", "local", "url", str(remote)], clone)


def copy_project(source: Path, work: Path) -> Path:
    """A copy of a finished working copy at ``work``: git history, DVC cache, outputs and
    their times as they are (``dvc repro`` in the copy has nothing to do)."""
    shutil.copytree(source, work, symlinks=True)
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


def feature_table(root: Path, classes: dict[str, int], arch: str, *, size: int = 40):
    """``(backbone, table)``: a tiny random ``timm:`` network and the feature table of a
    generated image folder under ``root`` (a fifth of each class for val), in this process."""
    import torch

    from transferpilot.config import ExtractParams, PrepareParams
    from transferpilot.features import FeatureTable, write_table
    from transferpilot.intake import prepare_dataset
    from transferpilot.zoo import create_backbone

    image_folder(root / "images", classes, size=size)
    torch.manual_seed(0)
    backbone = create_backbone(arch, pretrained=False)
    records = prepare_dataset(PrepareParams(source=root / "images", val_fraction=0.2)).records
    settings = ExtractParams(batch_size=8, workers=0, cache_dir=root / "cache", runtime="torch")
    (root / "table").mkdir()
    meta, _ = write_table(backbone, records, root / "table", settings)
    return backbone, FeatureTable(records, meta, root / "table")
