"""Orchestration, in one place: running the DVC pipeline stage by stage, for the Prefect
flow (``flows/``, ``tasks/``) and ``transferpilot run``.

DVC owns the graph and the cache record: :func:`stage_order` reads the order
from ``dvc.yaml`` through DVC itself, :func:`repro_stage` runs one stage with
``dvc repro --single-item`` (DVC skips it when nothing it depends on changed),
and parameter overrides are DVC's own ``-S`` overrides applied to
``params.yaml`` (:func:`apply_overrides`), so a run with overrides is what
``dvc exp run -S`` would have done, and :func:`save_experiment` records it.

The DVC internals this needs (the repo's stage graph, ``plan_repro``, a stage's
status, Hydra-style overrides) are reached through :class:`_Dvc` alone; pyproject
pins ``dvc`` to one major version. Nothing here changes the environment at import:
:func:`offline_environment` is called by the entry points (CLI, flow).

>>> for stage, upstream in stage_order(Path(".")):  # doctest: +SKIP
...     repro_stage(Path("."), stage, timeout_s=3600, on_line=print)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transferpilot.errors import IO_EXIT_CODE, ConfigError, TransferpilotError

#: Exit codes of ``transferpilot stage`` that no retry can fix (bad config, data, model).
PERMANENT_EXIT_CODES = frozenset({2, 3, 4})

_EXITED = re.compile(r"exited with (-?\d+)")
#: DVC's hints about Git and remotes after each stage: not worth a log line per task.
_HINT = re.compile(
    r"^\s*$|^To track the changes with git|^\s*git add |^To enable auto staging"
    r"|^\s*dvc config core\.autostage|^Use `dvc push`"
)


#: No analytics or telemetry, a patient ephemeral Prefect server.
OFFLINE = {
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "HF_HUB_OFFLINE": "1",
}


def offline_environment() -> None:
    """Set :data:`OFFLINE` in this process (each unless already set); entry points call it
    before Prefect starts (the CLI's ``main``, ``python flows/pipeline.py``)."""
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)


def _env() -> dict[str, str]:
    """The environment for DVC and the stages: offline, this interpreter's scripts first
    on PATH (a copy: this process's environment is left alone)."""
    env = dict(os.environ)
    for key, value in OFFLINE.items():
        env.setdefault(key, value)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TRANSFERPILOT_LOG_TIME"] = "0"  # the flow's logger stamps each line already
    return env


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


class StageFailed(TransferpilotError):
    """``dvc repro`` of one stage failed; ``returncode`` is the stage command's when known."""

    def __init__(self, stage: str, returncode: int | None, tail: str) -> None:
        self.stage, self.returncode, self.tail = stage, returncode, tail
        self.exit_code = returncode if returncode in (*PERMANENT_EXIT_CODES, IO_EXIT_CODE) else 1
        code = "timed out" if returncode is None else f"exit code {returncode}"
        super().__init__(f"stage {stage} failed ({code}):\n{tail}")

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help: bad configuration, data or model."""
        return self.returncode in PERMANENT_EXIT_CODES


@dataclass(frozen=True)
class StageRun:
    """What one stage did: ``ran`` or ``skipped`` (up to date), and how long it took."""

    stage: str
    status: str
    seconds: float


def repro_stage(
    project: Path,
    stage: str,
    *,
    timeout_s: float | None = None,
    on_line: Callable[[str], None] = lambda line: None,
) -> StageRun:
    """``dvc repro --single-item STAGE`` in ``project``, each output line passed to ``on_line``.

    Raises :class:`StageFailed` when DVC fails (with the stage command's exit
    code), or when ``timeout_s`` passes (the process group is killed).
    """
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    proc = subprocess.Popen(
        cmd,
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill) if timeout_s else None
    if timer:
        timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if not _HINT.match(line):
                on_line(line)
        returncode = proc.wait()
    finally:
        if timer:
            timer.cancel()
    tail = "\n".join(lines[-30:])
    if timed_out.is_set():
        raise StageFailed(stage, None, f"killed after {timeout_s} s\n{tail}")
    if returncode != 0:
        found = _EXITED.findall(tail)
        raise StageFailed(stage, int(found[-1]) if found else returncode, tail)
    skipped = any(f"Stage '{stage}' didn't change" in line for line in lines)
    return StageRun(stage, "skipped" if skipped else "ran", round(time.perf_counter() - start, 2))


def to_overrides(params: Mapping[str, Any]) -> list[str]:
    """``{"train.epochs": 3, "prepare.source": "my data"}`` as DVC ``-S`` overrides."""
    out = []
    for key, value in params.items():
        if isinstance(value, Path):
            value = str(value)
        out.append(f"{key}={json.dumps(value)}")  # JSON is valid Hydra override syntax
    return out


def _with_add_prefix(overrides: Sequence[str], data: Any) -> list[str]:
    """``key=value`` for a key params.yaml lacks becomes ``++key=value`` (add or override)."""
    out = []
    for item in overrides:
        key = item.split("=", 1)[0]
        node, present = data, True
        for part in key.lstrip("+~").split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                present = False
                break
        out.append(item if present or key.startswith(("+", "~")) else f"++{item}")
    return out


def apply_overrides(project: Path, overrides: Sequence[str], params_file: str = "params.yaml"):
    """Apply DVC ``-S`` overrides to ``params.yaml``, validated first, replaced atomically.

    Returns the validated :class:`~transferpilot.config.Params`; a bad override
    raises :class:`ConfigError` naming it, and leaves ``params.yaml`` untouched.
    """
    import yaml

    from transferpilot.config import load_params

    path = project / params_file
    if not overrides:
        return load_params(path)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.epochs=3)")
    current = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    fd, tmp_name = tempfile.mkstemp(prefix=".params.", suffix=".yaml", dir=project)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if path.exists():
            shutil.copyfile(path, tmp)
        try:
            _Dvc.apply_overrides(tmp, _with_add_prefix(overrides, current or {}))
        except ValueError as err:
            raise ConfigError(f"overrides {list(overrides)}: {err}") from None
        params = load_params(tmp)  # raises ConfigError naming the key
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return params
    finally:
        tmp.unlink(missing_ok=True)


def save_experiment(project: Path, name: str | None = None) -> str | None:
    """Record the workspace (params, metrics, outputs) as a DVC experiment: ``dvc exp show``
    lists it. Returns its name, or None outside a Git repository."""
    if not (project / ".git").exists():
        return None
    cmd = [sys.executable, "-m", "dvc", "exp", "save", "--force"]
    if name:
        cmd += ["--name", name]
    result = subprocess.run(cmd, cwd=project, env=_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise TransferpilotError(f"dvc exp save failed: {result.stdout}{result.stderr}".strip())
    found = re.findall(r"experiment (?:name|ref)?:?\s*'?([\w.-]+)'?", result.stdout)
    return found[-1] if found else (name or result.stdout.strip())


@dataclass(frozen=True)
class Outcome:
    """What a finished pipeline left: the texts the flow publishes and ``run`` prints."""

    decision: dict[str, Any]
    metrics: dict[str, Any]
    report_path: Path
    report_html: Path
    summary_markdown: str
    report_markdown: str

    @property
    def headline_split(self) -> str:
        return "test" if "test" in self.metrics else "val"

    def metric_rows(self) -> list[dict[str, Any]]:
        """One row per split: the table artifact."""
        return [
            {"split": split, **values}
            for split, values in self.metrics.items()
            if split in ("val", "test")
        ]

    def headline(self) -> str:
        m = self.metrics.get(self.headline_split, {})
        return (
            f"{self.headline_split} accuracy {m.get('accuracy', float('nan')):.3f}, "
            f"balanced accuracy {m.get('balanced_accuracy', float('nan')):.3f}, "
            f"macro-F1 {m.get('macro_f1', float('nan')):.3f} ({m.get('images', 0)} images)"
        )


def outcome(project: Path) -> Outcome:
    """Read the decision, the metrics and the report that the stages wrote."""
    from transferpilot.decide import Decision
    from transferpilot.evaluate import without_figures
    from transferpilot.profile import Profile
    from transferpilot.stages import Paths

    paths = Paths(project)
    decision = Decision.from_dict(paths.decision_json.read_json())
    profile = Profile.from_dict(paths.profile_json.read_json())
    metrics = paths.metrics.read_json()
    report = (paths.reports / "report.md").read_text(encoding="utf-8")
    sim, size = profile.similarity, profile.size
    overlap = "n/a" if sim.overlap is None else f"{sim.overlap:.2f}"
    summary = "\n".join(
        [
            "# transferpilot: profile and decision",
            "",
            f"- **{size.n_train}** training images, **{size.n_classes}** classes "
            f"(median {size.images_per_class['median']:g} per class)",
            f"- similarity to ImageNet **{sim.score:.2f}** "
            f"(head certainty {sim.certainty:.2f}, feature overlap {overlap})",
            f"- quadrant **{decision.quadrant}** → **{decision.strategy}** on `{decision.layer}`",
            "",
            f"> {decision.reason}",
        ]
    )
    return Outcome(
        decision=decision.to_dict(),
        metrics=metrics,
        report_path=paths.reports / "report.md",
        report_html=paths.reports / "report.html",
        summary_markdown=summary,
        report_markdown=without_figures(report),
    )
