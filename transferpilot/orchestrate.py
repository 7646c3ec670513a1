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

from transferpilot.errors import IO_EXIT_CODE, ConfigError, DataError, TransferpilotError

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


_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_LEVELLED = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):? (.*)$")


def line_level(line: str) -> tuple[int, str]:
    """A stage's output line as ``(logging level, text)``: the stage's own ``LEVEL text``
    lines and DVC's ``ERROR: ...`` keep their level (the prefix dropped), the CLI's
    ``error: ...`` is an error, anything else is information."""
    found = _LEVELLED.match(line)
    if found:
        return _LEVELS[found.group(1)], found.group(2)
    if line.startswith("error: "):
        return _LEVELS["ERROR"], line
    return _LEVELS["INFO"], line


def _first_error(lines: Sequence[str]) -> str | None:
    """The stage's own ``error: ...`` line (else DVC's ``ERROR: ...``): the failure's reason."""
    for prefix in ("error: ", "ERROR: "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[0][len(prefix) :]
    return None


class StageFailed(TransferpilotError):
    """``dvc repro`` of one stage failed; ``returncode`` is the stage command's when known.
    The message starts with the reason (the stage's own error line), then the output's tail."""

    def __init__(self, stage: str, returncode: int | None, tail: str) -> None:
        self.stage, self.returncode, self.tail = stage, returncode, tail
        self.exit_code = returncode if returncode in (*PERMANENT_EXIT_CODES, IO_EXIT_CODE) else 1
        code = "timed out" if returncode is None else f"exit code {returncode}"
        reason = _first_error(tail.splitlines())
        self.reason = reason or code
        head = (
            f"stage {stage} failed: {reason} ({code})"
            if reason
            else f"stage {stage} failed ({code})"
        )
        super().__init__(f"{head}\n{tail}")

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help: bad configuration, data or model."""
        return self.returncode in PERMANENT_EXIT_CODES


@dataclass(frozen=True)
class StageRun:
    """What one stage did: ``ran``, ``restored`` (outputs checked out of DVC's run cache,
    nothing computed) or ``skipped`` (up to date), and how long it took."""

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
    status = "ran"
    if any(f"Stage '{stage}' didn't change" in line for line in lines):
        status = "skipped"
    elif any(f"Stage '{stage}' is cached" in line for line in lines):
        status = "restored"
    return StageRun(stage, status, round(time.perf_counter() - start, 2))


#: Statuses after which a stage's outputs may differ from before (downstream must check).
CHANGED = frozenset({"ran", "restored"})


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


def _source(data: Path, project: Path) -> str:
    """The dataset path as params.yaml should hold it: relative inside the project."""
    full = Path(data).expanduser().resolve()
    try:
        return str(full.relative_to(project.resolve()))
    except ValueError:
        return str(full)


def requested_overrides(
    project: Path,
    data: Path | None = None,
    model: str | None = None,
    strategy: str | None = None,
    params: Mapping[str, Any] | None = None,
    overrides: Sequence[str] | None = None,
) -> list[str]:
    """Every way a run can ask for a setting (the flow's parameters, the CLI's options),
    as DVC ``-S`` overrides; later ones win."""
    named: dict[str, Any] = {}
    if data is not None:
        named["prepare.source"] = _source(data, project)
    if model is not None:
        named["model.name"] = model
    if strategy is not None:
        named["decide.strategy"] = strategy
    return to_overrides(named | dict(params or {})) + list(overrides or [])


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


def check_source(project: Path, params: Any) -> None:
    """The data source ``prepare.source`` exists and can be read, else :class:`DataError`
    (exit 3) naming it: checked before any stage runs, so DVC never fails on it."""
    source = Path(params.prepare.source).expanduser()
    full = source if source.is_absolute() else project / source
    if not full.exists():
        raise DataError(f"prepare.source: {source} does not exist (an image folder or a CSV file)")
    if not os.access(full, os.R_OK | (os.X_OK if full.is_dir() else 0)):
        raise DataError(f"prepare.source: {source} cannot be read (permissions)")


@dataclass(frozen=True)
class Cluster:
    """Where the extraction shards run (``--cluster``): ``local:N`` starts a Dask
    ``LocalCluster`` of N worker processes on 127.0.0.1 for the run; ``tcp://HOST:PORT``
    uses a running Dask scheduler, whose workers must see the project folder, the images
    and ``extract.cache_dir`` at the same paths (a shared mount)."""

    spec: str
    address: str | None = None
    workers: int = 0

    @property
    def threads(self) -> int | None:
        """Cores for each local worker's model (all of a remote worker's machine)."""
        return max(1, (os.cpu_count() or 1) // self.workers) if self.workers else None

    @property
    def shards(self) -> int:
        """Shards to map at least: two per local worker (a slow one is not waited for),
        else eight; :func:`~transferpilot.features.missing_shards` adds more for big sets."""
        return 2 * self.workers if self.workers else 8

    def task_runner(self) -> Any:
        """prefect-dask's ``DaskTaskRunner`` for this cluster. Local workers are handed the
        Prefect API this process reports to (else each would start a temporary server of
        its own and its task runs would not appear in the run's UI); a remote cluster's
        workers are started with ``PREFECT_API_URL`` set by whoever runs them."""
        from prefect_dask import DaskTaskRunner

        if self.address:
            return DaskTaskRunner(address=self.address)
        env = {key: os.environ.get(key, value) for key, value in OFFLINE.items()}
        env["PREFECT_API_URL"] = current_api_url()
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": self.workers,
                "threads_per_worker": 1,  # one shard at a time; its model gets `threads` cores
                "processes": True,
                "host": "127.0.0.1",
                "dashboard_address": "127.0.0.1:0",  # loopback, any free port
                "env": env,
            },
        )


def current_api_url() -> str:
    """The Prefect API this process reports to (a temporary server's too)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


_CLUSTER = re.compile(r"^(?:local:(?P<workers>\d+)|(?P<address>tcp://[^\s:/]+:\d+))$")


def parse_cluster(spec: str | None) -> Cluster | None:
    """``local:N`` or ``tcp://HOST:PORT`` (else :class:`ConfigError`); None for none."""
    if not spec:
        return None
    found = _CLUSTER.match(spec.strip())
    if not found or (found["workers"] is not None and int(found["workers"]) < 1):
        raise ConfigError(
            f"--cluster {spec!r}: expected local:N (N Dask worker processes here) or"
            " tcp://HOST:PORT (a running Dask scheduler)"
        )
    if found["workers"] is not None:
        return Cluster(spec, workers=int(found["workers"]))
    return Cluster(spec, address=found["address"])


def check_run(project: Path, overrides: Sequence[str], params_file: str = "params.yaml"):
    """What a run with ``overrides`` would use, checked, with nothing written: the params
    (:class:`ConfigError` naming a bad key or value) and the data source (:class:`DataError`)."""
    params = _overridden(project, overrides, params_file, write=False)
    check_source(project, params)
    return params


def apply_overrides(project: Path, overrides: Sequence[str], params_file: str = "params.yaml"):
    """Apply DVC ``-S`` overrides to ``params.yaml``, validated first, replaced atomically.

    Returns the validated :class:`~transferpilot.config.Params`; a bad override
    raises :class:`ConfigError` naming it, a missing data source :class:`DataError`,
    and either leaves ``params.yaml`` untouched.
    """
    return _overridden(project, overrides, params_file, write=True)


def _overridden(project: Path, overrides: Sequence[str], params_file: str, *, write: bool):
    import yaml

    from transferpilot.config import load_params

    path = project / params_file
    if not overrides:
        params = load_params(path)
        check_source(project, params)
        return params
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
        check_source(project, params)
        if write:
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        return params
    finally:
        tmp.unlink(missing_ok=True)


def snapshot_params(project: Path, params_file: str = "params.yaml") -> bytes | None:
    """``params.yaml`` as it is, to put back after a run with overrides."""
    path = project / params_file
    return path.read_bytes() if path.exists() else None


def restore_params(project: Path, saved: bytes | None, params_file: str = "params.yaml") -> bool:
    """Put ``params.yaml`` back as :func:`snapshot_params` saw it (atomically); True when it
    had changed. A run's overrides live on in its DVC experiment, not in the workspace."""
    from transferpilot.io import atomic_open

    path = project / params_file
    current = path.read_bytes() if path.exists() else None
    if current == saved:
        return False
    if saved is None:
        path.unlink(missing_ok=True)
    else:
        with atomic_open(path, "wb") as fh:
            fh.write(saved)
        os.chmod(path, 0o644)
    return True


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


#: The report artifact's figures are scaled down to fit this many pixels.
REPORT_FIGURE_PX = 900


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

    def metric_rows(self, digits: int = 3) -> list[dict[str, Any]]:
        """The table artifact: one row per metric, one column per split, rounded."""
        splits = [s for s in ("val", "test") if s in self.metrics]
        names = dict.fromkeys(k for s in splits for k in self.metrics[s])
        rows = []
        for name in names:
            row: dict[str, Any] = {"metric": name}
            for split in splits:
                value = self.metrics[split].get(name)
                row[split] = round(value, digits) if isinstance(value, float) else value
            rows.append(row)
        return rows

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
    from transferpilot.evaluate import inline_figures
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
        report_markdown=inline_figures(report, paths.reports, max_px=REPORT_FIGURE_PX),
    )
