"""What a run is called: the dataset's name, the decision, the project's git commit."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transferpilot.errors import TransferpilotError


def code_version(project: Path) -> str | None:
    """The project's git commit (short; ``+dirty`` with uncommitted changes), else None."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True, text=True
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def dataset_name(project: Path, data: Path | None = None) -> str:
    """A short name for the run's dataset: the source folder's (or CSV file's) name."""
    if data is None:
        try:
            from transferpilot.config import load_params

            data = load_params(project / "params.yaml").prepare.source
        except TransferpilotError:
            return "dataset"
    path = Path(data)
    name = path.stem if path.suffix.lower() == ".csv" else path.name
    return re.sub(r"[^\w.-]+", "-", name).strip("-") or "dataset"


def run_name(dataset: str, run_id: str, decision: Mapping[str, Any] | None = None) -> str:
    """``digits-svm-blocks6-1a2b3c4d``: the dataset, the decision when known, the run id."""
    parts = [dataset]
    if decision:
        parts += [decision["strategy"], str(decision.get("layer", "")).replace(".", "")]
    return "-".join([*filter(None, parts), run_id.replace("-", "")[:8]])
