"""The one adapter over DVC's Python API (``dvc>=3.67,<4``; pyproject pins the major
version): the stage graph, ``dvc status``, Hydra ``-S`` overrides, ``dvc exp save``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from transferpilot.errors import TransferpilotError
from transferpilot.orchestrate.environment import subprocess_env


class _Dvc:
    """The one adapter over DVC's Python API (``dvc>=3.67,<4``): everything this module
    needs from DVC beyond its command line goes through here."""

    def __init__(self, project: Path) -> None:
        self.root = Path(project).resolve()

    def _address(self, stage: Any) -> str:
        """A stage's name as ``dvc repro`` takes it, run in the project folder."""
        dvcfile = Path(stage.path).resolve().relative_to(self.root)
        return stage.name if str(dvcfile) == "dvc.yaml" else f"{dvcfile}:{stage.name}"

    def stage_order(self) -> list[tuple[str, list[str]]]:
        from dvc.repo import Repo
        from dvc.repo.reproduce import plan_repro

        with Repo(str(self.root)) as repo:
            graph = repo.index.graph
            return [
                (self._address(s), sorted(self._address(d) for d in graph.successors(s)))
                for s in plan_repro(graph)
            ]

    def stale_stages(self) -> set[str]:
        from dvc.repo import Repo

        with Repo(str(self.root)) as repo, repo.lock:
            return {self._address(s) for s in repo.index.stages if s.status()}

    def checkout(self) -> None:
        """The outputs as ``dvc.lock`` records them, from DVC's cache (``dvc checkout
        --force``): what was there before a run, after its ``dvc.lock`` is put back."""
        from dvc.repo import Repo

        with Repo(str(self.root)) as repo:
            repo.checkout(force=True)

    @staticmethod
    def apply_overrides(params_file: Path, overrides: list[str]) -> None:
        """DVC's ``-S`` (Hydra) overrides applied to a params file in place; a malformed
        one raises ``ValueError`` with DVC's reason."""
        from dvc.exceptions import InvalidArgumentError
        from dvc.utils.hydra import apply_overrides

        try:
            apply_overrides(params_file, overrides)
        except InvalidArgumentError as err:
            raise ValueError(str(err.__cause__ or err)) from None


def stage_order(project: Path) -> list[tuple[str, list[str]]]:
    """``(stage, upstream stages)`` in the order DVC would run them."""
    return _Dvc(project).stage_order()


def stale_stages(project: Path) -> set[str]:
    """The stages ``dvc status`` reports changed (deps, outs, params or command).

    One in-process check for the whole pipeline: a stage absent from it, none
    of whose upstream stages runs, is up to date without starting ``dvc`` for
    it (DVC would only say "didn't change", a second or more later).
    """
    return _Dvc(project).stale_stages()


def save_experiment(project: Path, name: str | None = None) -> str | None:
    """Record the workspace (params, metrics, outputs) as a DVC experiment: ``dvc exp show``
    lists it. Returns its name, or None outside a Git repository."""
    if not (project / ".git").exists():
        return None
    cmd = [sys.executable, "-m", "dvc", "exp", "save", "--force"]
    if name:
        cmd += ["--name", name]
    result = subprocess.run(cmd, cwd=project, env=subprocess_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise TransferpilotError(f"dvc exp save failed: {result.stdout}{result.stderr}".strip())
    return name or experiment_name(result.stdout)


def experiment_name(said: str) -> str | None:
    """The experiment's name in what ``dvc exp save`` printed ("Experiment has been saved
    as: ready-love"), never the whole sentence; None when it names none."""
    found = re.findall(r"(?:saved as|experiment(?: name| ref)?):?\s*'?([\w.-]+)'?", said, re.I)
    return found[-1] if found else None
