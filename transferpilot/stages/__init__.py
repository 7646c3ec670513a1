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
from transferpilot.config import AUTO, ModelParams, Params
from transferpilot.errors import ConfigError
from transferpilot.io import read_json


@dataclass(frozen=True)
class Artefact:
    """One file a stage writes and later stages read: where it is and who writes it."""

    path: Path
    stage: str

    def read_json(self) -> Any:
        """Its JSON, or a clear error naming the stage to run first."""
        return read_json(self.path, produced_by=self.stage)


@dataclass(frozen=True)
class Paths:
    """The catalog: every stage output folder and the files later stages read, relative to
    the project root. Each file's type is read in one place: ``manifest.csv`` by
    :func:`~transferpilot.intake.read_manifest`, ``data/features`` by
    :class:`~transferpilot.features.FeatureTable`, ``profile.json`` by
    :class:`~transferpilot.profile.Profile`, ``decision.json`` by
    :class:`~transferpilot.decide.Decision`, ``models/train`` by the decided strategy.
    """

    root: Path = Path(".")

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def manifest(self) -> Path:
        """``prepare``: the usable images, one row each."""
        return self.prepared / "manifest.csv"

    @property
    def validation(self) -> Artefact:
        """``prepare``: every file skipped or converted, and why (JSON)."""
        return Artefact(self.prepared / "validation.json", "prepare")

    @property
    def features(self) -> Path:
        return self.root / "data" / "features"

    @property
    def backbones(self) -> Artefact:
        """``extract``, with ``model.name: auto``: every candidate backbone's scores and the
        one chosen (:class:`~transferpilot.profile.BackboneRanking`)."""
        return Artefact(self.features / "backbones.json", "extract")

    @property
    def profile(self) -> Path:
        return self.root / "data" / "profile"

    @property
    def profile_json(self) -> Artefact:
        return Artefact(self.profile / "profile.json", "profile")

    @property
    def decision(self) -> Path:
        return self.root / "data" / "decision"

    @property
    def decision_json(self) -> Artefact:
        return Artefact(self.decision / "decision.json", "decide")

    @property
    def models(self) -> Path:
        return self.root / "models" / "train"

    @property
    def train_json(self) -> Artefact:
        """``train``: what was trained, with its validation accuracy."""
        return Artefact(self.models / "train.json", "train")

    @property
    def predictor(self) -> Path:
        """``train``: the exported, self-contained predictor (ONNX)."""
        return self.models / "predictor.onnx"

    @property
    def label_issues(self) -> Artefact:
        """``train``: the training images that look mislabelled
        (:class:`~transferpilot.label_issues.LabelIssues`)."""
        return Artefact(self.models / "label_issues.json", "train")

    @property
    def reports(self) -> Path:
        """The evaluate stage's metrics, plots and report."""
        return self.root / "reports"

    @property
    def metrics(self) -> Artefact:
        return Artefact(self.reports / "metrics.json", "evaluate")

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


def chosen_model(model: ModelParams, paths: Paths) -> ModelParams:
    """``model`` with ``name: auto`` replaced by the backbone the extract stage chose."""
    if model.name != AUTO:
        return model
    chosen = paths.backbones.read_json()["chosen"]
    return model.model_copy(update={"name": chosen})


def run_stage(name: str, params: Params, paths: Paths) -> dict[str, Any]:
    """Run stage ``name`` with only its own sections of ``params``."""
    stage = get_stage(name)
    return stage.run(*(getattr(params, s) for s in stage.sections), paths=paths)
