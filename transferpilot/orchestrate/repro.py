"""Running one stage: ``dvc repro --single-item STAGE`` as a process, its output read line
by line (each line's level, the failure's reason, the stage's status)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from transferpilot.errors import IO_EXIT_CODE, TransferpilotError
from transferpilot.orchestrate.environment import subprocess_env

#: Exit codes of ``transferpilot stage`` that no retry can fix (bad config, data, model).
PERMANENT_EXIT_CODES = frozenset({2, 3, 4})

_EXITED = re.compile(r"exited with (-?\d+)")
#: DVC's hints about Git and remotes after each stage: not worth a log line per task.
_HINT = re.compile(
    r"^\s*$|^To track the changes with git|^\s*git add |^To enable auto staging"
    r"|^\s*dvc config core\.autostage|^Use `dvc push`"
)

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
        env=subprocess_env(),
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
