"""Pipeline stages: the only code that knows the on-disk layout.

Each stage is ``run(<its params sections>, paths) -> summary`` registered under
its name, which is also its ``dvc.yaml`` stage, CLI subcommand
(``transferpilot stage NAME``), Prefect task and ``params.yaml`` section.

>>> from transferpilot.config import load_params
>>> run_stage("prepare", load_params(), Paths())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from transferpilot._registry import Registry
from transferpilot.config import Params
from transferpilot.errors import ConfigError, DataError


@dataclass(frozen=True)
class Paths:
    """Where stages read and write, relative to the project root."""

    root: Path = Path(".")

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def features(self) -> Path:
        return self.root / "data" / "features"

    @property
    def profile(self) -> Path:
        return self.root / "data" / "profile"

    @property
    def decision(self) -> Path:
        return self.root / "data" / "decision"

    @property
    def models(self) -> Path:
        return self.root / "models" / "train"

    @property
    def reports(self) -> Path:
        """The evaluate stage's metrics, plots and report."""
        return self.root / "reports"

    @property
    def checkpoints(self) -> Path:
        """Resumable fine-tuning state: outside DVC's outputs, which it deletes before a run."""
        return self.root / "models" / "checkpoints"


@dataclass(frozen=True)
class Stage:
    """A registered stage: its name, the ``params.yaml`` sections it reads, its function."""

    name: str
    sections: tuple[str, ...]
    run: Callable[..., dict[str, Any]]


STAGES: Registry[Stage] = Registry("stage", ConfigError)
#: The stage modules, in pipeline order. Each is imported only when its stage runs:
#: `transferpilot stage prepare` does not import the other stages' code (torch among it).
STAGE_NAMES = ("prepare", "extract", "profile", "decide", "train", "evaluate")


def register_stage(name: str, *, sections: tuple[str, ...]) -> Callable:
    """Register ``run(*sections, paths)`` as stage ``name``; a duplicate raises."""

    def deco(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        unknown = [s for s in sections if s not in Params.model_fields]
        if unknown:
            raise ValueError(f"stage {name!r} reads unknown params sections {unknown}")
        STAGES.add(name, Stage(name, sections, fn))
        return fn

    return deco


def read_json(path: Path, *, produced_by: str) -> Any:
    """An earlier stage's JSON output, or a clear error naming the stage to run first."""
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found: run the {produced_by} stage first") from None


def get_stage(name: str) -> Stage:
    """Stage ``name``, importing its module (which registers it) on first use."""
    if name not in STAGES:  # an unknown name loads them all: the error lists every stage
        for module in [name] if name in STAGE_NAMES else STAGE_NAMES:
            import_module(f"{__name__}.{module}")
    return STAGES.get(name)


def all_stages() -> Registry[Stage]:
    """Every stage, registered."""
    for name in STAGE_NAMES:
        get_stage(name)
    return STAGES


def run_stage(name: str, params: Params, paths: Paths) -> dict[str, Any]:
    """Run stage ``name`` with only its own sections of ``params``."""
    stage = get_stage(name)
    return stage.run(*(getattr(params, s) for s in stage.sections), paths=paths)
