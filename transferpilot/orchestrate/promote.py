"""Champion and challenger after a run: compare, register, promote (or not), watch for drift.

The workspace's run (as ``dvc.lock`` records it) is the challenger. It is committed to
Git with what it decided and measured, registered as the next GTO version, and put in
``prod`` only if the paired comparison on the frozen evaluation images allows it
(:func:`transferpilot.promotion.compare`). The first promotion freezes those images:
``holdout.csv`` lists the run's test split, and every later run keeps exactly them as
its test split (new images join training). The drift check compares the images that
arrived since the champion was trained with its training images
(:func:`transferpilot.drift.detect`).

The model in service is read from DVC's cache by the champion's commit, so a refused
challenger leaves it untouched, byte for byte.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from transferpilot.config import load_params
from transferpilot.drift import detect
from transferpilot.errors import ConfigError, DataError, ModelError
from transferpilot.io import write_json, write_text
from transferpilot.layer_names import PRE_LOGITS
from transferpilot.orchestrate.dvc import stale_stages
from transferpilot.orchestrate.registry import (
    ARTIFACT,
    PROD,
    Registry,
    Version,
    dvc_commit,
)
from transferpilot.promotion import LabelCheck, compare, label_check

log = logging.getLogger(__name__)

EVALUATION = "reports/evaluation"
PREDICTIONS = f"{EVALUATION}/predictions_test.json"
CONFUSION = f"{EVALUATION}/confusion_test.json"
MANIFEST = "data/prepared/manifest.csv"
LABEL_ISSUES = "reports/label_issues.csv"
RECORD = "reports/promotion.json"
RECORD_MD = "reports/promotion.md"
#: What a version commits besides ``dvc.lock``: Git-tracked outputs, settings, the record.
COMMITTED = (
    "dvc.lock", "params.yaml", "dvc.yaml", "reports/metrics.json", "reports/confusion.csv",
    RECORD, RECORD_MD, "data/.gitignore", "models/.gitignore", "reports/.gitignore",
)  # fmt: skip


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did."""

    version: str
    champion: str
    previous: str | None
    promoted: bool
    reason: str
    comparison: dict[str, Any] | None
    drift: dict[str, Any] | None
    labels: dict[str, Any] | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.drift and self.drift["drift"])

    @property
    def state(self) -> str:
        """The flow run's state name: what the Prefect UI shows and an automation matches."""
        if self.comparison is None and not self.promoted:
            return "Unchanged"
        if self.drifted:
            return "DriftDetected"
        return "Promoted" if self.promoted else "ChampionKept"

    def message(self) -> str:
        drift = f" {self.drift['summary']}." if self.drift and self.drift["new"] else ""
        return f"{ARTIFACT} {self.version} {self.reason}; in service: {self.champion}.{drift}"

    def markdown(self) -> str:
        """The flow's artifact and ``reports/promotion.md``: the verdict, the comparison, drift."""
        lines = [f"# {ARTIFACT} {self.version}: {self.state}", "", self.message(), ""]
        if self.comparison:
            c = self.comparison
            lines += [
                "| | accuracy on the frozen evaluation images |",
                "|---|---|",
                f"| challenger {self.version} | {100 * c['challenger']:.1f} % |",
                f"| champion {self.previous} | {100 * c['champion']:.1f} % |",
                f"| difference (95 % paired bootstrap) | {100 * c['difference']:+.1f} points "
                f"({100 * c['low']:+.1f} to {100 * c['high']:+.1f}); margin "
                f"{100 * c['margin']:g} |",
                "",
            ]
        if self.labels:
            lines += [f"**Labels of the new training images**: {self.labels['reason']}", ""]
        if self.drift:
            d = self.drift
            lines += [f"**Drift**: {d['summary']}", ""]
            if d["tests"]:
                lines += [
                    "| test | statistic | p-value | level | detected |",
                    "|---|---|---|---|---|",
                ]
                lines += [
                    f"| {name} | {t['statistic']:.4g} | {t['p_value']:.3g} | {t['level']:g} | "
                    f"{'yes' if t['detected'] else 'no'} |"
                    for name, t in d["tests"].items()
                ]
                lines.append("")
        lines.append(
            f"`gto show {ARTIFACT}` lists the versions; `transferpilot rollback` puts the "
            "previous one back in service."
        )
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "champion": self.champion,
            "previous_champion": self.previous,
            "promoted": self.promoted,
            "state": self.state,
            "reason": self.reason,
            "comparison": self.comparison,
            "labels": self.labels,
            "drift": self.drift,
            "message": self.message(),
        }


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _correct(predictions: list[dict[str, Any]]) -> dict[str, bool]:
    return {p["sha256"]: p["actual"] == p["predicted"] for p in predictions if "sha256" in p}


NO_TEST_SPLIT = (
    "promotion compares models on a held-out test split, and this run has none: set "
    "prepare.test_fraction (e.g. 0.2) or give the source a test/ folder, then run again"
)


def _class_change(champion: Version, before: list[str], now: list[str]) -> DataError:
    added, gone = sorted(set(now) - set(before)), sorted(set(before) - set(now))
    return DataError(
        f"the class list changed since champion {champion.version} (new: "
        f"{', '.join(added) or 'none'}; gone: {', '.join(gone) or 'none'}): the two "
        "models answer different questions and cannot be compared; nothing was "
        "registered. `transferpilot promote --force` makes this run the champion"
    )


def check_prepared(project: Path) -> None:
    """Right after ``prepare``, before a run that is to be promoted spends anything: a test
    split to compare on, and the champion's classes (a changed list cannot be compared)."""
    from transferpilot.intake import read_manifest

    records = read_manifest(Path(project) / MANIFEST)
    if not any(r.split == "test" for r in records):
        raise ConfigError(NO_TEST_SPLIT)
    registry = Registry(Path(project).resolve())
    champion = registry.champion()
    if champion is None:
        return
    before = registry.read_json(champion, CONFUSION).get("classes")
    now = sorted({r.label for r in records})
    if sorted(before) != now:
        raise _class_change(champion, before, now)


def _challenger(project: Path) -> tuple[list[dict[str, Any]], list[str]]:
    path = project / PREDICTIONS
    if not path.is_file():
        raise ConfigError(NO_TEST_SPLIT)
    predictions = json.loads(path.read_text(encoding="utf-8"))
    classes = json.loads((project / CONFUSION).read_text(encoding="utf-8"))["classes"]
    return predictions, classes


def _freeze_holdout(project: Path, holdout: Path) -> int:
    """List the run's test images in ``holdout`` (when it lists none yet) and record it in
    ``dvc.lock`` (the prepared data is what the frozen holdout gives: nothing re-runs)."""
    from transferpilot.intake import read_holdout, read_manifest, write_holdout

    if read_holdout(holdout):
        return 0
    test = [r for r in read_manifest(project / MANIFEST) if r.split == "test"]
    write_holdout(holdout, test)
    dvc_commit(project, "prepare")
    return len(test)


def _drift(project: Path, before: list[dict[str, str]], alpha: float) -> dict[str, Any]:
    """The drift check of the images that arrived since the champion (whose manifest is
    ``before``) was trained, against its training images, on the cached embeddings."""
    from transferpilot.features import FeatureTable

    trained = {r["sha256"] for r in before if r["split"] == "train"}
    seen = {r["sha256"] for r in before}
    table = FeatureTable.open(project / "data/features", project / MANIFEST)
    codes = table.array(PRE_LOGITS)
    ref = [i for i, r in enumerate(table.records) if r.sha256 in trained]
    new = [i for i, r in enumerate(table.records) if r.sha256 not in seen]
    labels = table.labels
    report = detect(codes[ref], codes[new], labels[ref], labels[new], alpha=alpha)
    log.info("drift: %s", report.summary())
    return report.as_dict()


def _labels(project: Path, before: list[dict[str, str]], max_rise: float) -> LabelCheck | None:
    """The run's label issues among the training images new since the champion, against
    those it was trained on (None when the run looked for none)."""
    from transferpilot.intake import read_manifest

    path = project / LABEL_ISSUES
    if not path.is_file():
        return None
    flagged_paths = {r["path"] for r in _rows(path.read_text(encoding="utf-8"))}
    train = [r for r in read_manifest(project / MANIFEST) if r.split == "train"]
    seen = {r["sha256"] for r in before}
    flagged = [r.shown in flagged_paths or str(r.path) in flagged_paths for r in train]
    new = [f for r, f in zip(train, flagged, strict=True) if r.sha256 not in seen]
    old = [f for r, f in zip(train, flagged, strict=True) if r.sha256 in seen]
    return label_check(sum(new), len(new), sum(old), len(old), max_rise=max_rise / 100)


@dataclass
class _Verdict:
    promoted: bool
    reason: str
    comparison: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None


def _against(
    project: Path,
    params: Any,
    registry: Registry,
    champion: Version,
    force: bool,
    challenger: tuple[list[dict[str, Any]], list[str]],
):
    """The challenger (the workspace's run) against ``champion``: accuracy on the frozen
    holdout, the new images' labels, and drift."""
    from transferpilot.intake import read_holdout

    predictions, classes = challenger
    before = registry.read_json(champion, CONFUSION).get("classes")
    if before != classes and not force:
        raise _class_change(champion, before, classes)
    frozen = read_holdout(project / params.prepare.holdout)
    mine = _correct(predictions)
    theirs = _correct(registry.read_json(champion, PREDICTIONS))
    if frozen:
        mine = {k: v for k, v in mine.items() if k in frozen}
    result = compare(mine, theirs, margin=params.promote.margin / 100)
    verdict = _Verdict(result.promoted, result.reason(), result.as_dict())
    trained_on = _rows(registry.read(champion, MANIFEST).decode("utf-8"))
    rise = params.promote.label_issue_rise
    checked = None if rise is None else _labels(project, trained_on, rise)
    if checked is not None:
        verdict.labels = checked.as_dict()
        if verdict.promoted and not checked.passed:
            verdict.promoted = False
            verdict.reason = f"not promoted, the new batch looks mislabelled: {checked.reason()}"
    if force and not verdict.promoted:
        verdict.promoted, verdict.reason = True, f"promoted by force; {verdict.reason}"
    verdict.drift = _drift(project, trained_on, params.promote.drift_alpha)
    return verdict


def _about(project: Path, params: Any, run: str | None) -> dict[str, Any]:
    """What a version records besides the verdict: the run, the data, the decision, metrics."""
    metrics = json.loads((project / "reports/metrics.json").read_text(encoding="utf-8"))
    decision = json.loads((project / "data/decision/decision.json").read_text(encoding="utf-8"))
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    source = str(params.prepare.source)
    data_version = next(
        (d.get("md5") for d in lock["stages"]["prepare"]["deps"] if d["path"] == source), None
    )
    return {
        "run": run,
        "data": {"source": source, "md5": data_version},
        "decision": {k: decision.get(k) for k in ("strategy", "layer", "quadrant")},
        "metrics": metrics.get("test", {}),
    }


def promote(project: Path, *, force: bool = False, run: str | None = None) -> Promotion:
    """Register the workspace's run and promote it if it is not worse than the champion
    (``force``: promote it anyway). Writes ``reports/promotion.json`` into the version."""
    project = Path(project).resolve()
    registry = Registry(project)
    params = load_params(project / "params.yaml")
    stale = stale_stages(project)
    if stale:
        raise ConfigError(
            f"the workspace's run is not complete ({', '.join(sorted(stale))} changed since it "
            "ran): `dvc repro` or `transferpilot run` first, then promote"
        )
    challenger = _challenger(project)  # a test split to compare on, before anything is written
    champion = registry.champion()
    versions = registry.versions()
    lock = (project / "dvc.lock").read_bytes()
    if versions and registry.read(versions[-1], "dvc.lock") == lock:
        latest = versions[-1].version
        return Promotion(
            latest,
            champion.version if champion else "none",
            champion.version if champion else None,
            False,
            "is this run already: nothing changed since it was registered",
            None,
            None,
        )
    if champion is None:
        frozen = _freeze_holdout(project, project / params.prepare.holdout)
        verdict = _Verdict(
            True,
            "is the first champion"
            + (f" (its {frozen} test images are now the frozen holdout)" if frozen else ""),
        )
    else:
        verdict = _against(project, params, registry, champion, force, challenger)
    version = registry.next_version()
    previous = champion.version if champion else None
    outcome = Promotion(
        version,
        version if verdict.promoted else str(previous),
        previous,
        verdict.promoted,
        verdict.reason,
        verdict.comparison,
        verdict.drift,
        verdict.labels,
    )
    about = _about(project, params, run)
    write_json(project / RECORD, {**outcome.as_dict(), **about})
    write_text(project / RECORD_MD, outcome.markdown())
    commit = registry.commit(
        [*COMMITTED, str(params.prepare.holdout)],
        f"transferpilot: {ARTIFACT} {version} ({outcome.state}): {verdict.reason}"[:300],
    )
    registered = registry.register(commit, version, json.dumps(about))
    if verdict.promoted:
        registry.assign(registered, verdict.reason[:200])
    log.info("%s", outcome.message())
    return outcome


def check_promotable(project: Path, overrides: list[str]) -> None:
    """Before a run that is to be promoted: a Git repository, and no overrides (the
    registry records the workspace's run; an override run is a DVC experiment)."""
    Registry(project)
    if overrides:
        raise ConfigError(
            "a promoted run is the workspace's own: put these settings in params.yaml "
            f"instead of overriding them ({' '.join(overrides)})"
        )


def rollback(project: Path, version: str | None = None) -> Version:
    """Put ``version`` back in service (default: the one in ``prod`` before the current).

    GTO serves the highest version in ``prod``, so the versions above the target leave the
    stage (``predictor#prod!#K`` tags: the history keeps them) and the target is assigned
    if it is not in ``prod`` already. Its files are read first: a version whose files are
    gone is never put in service."""
    registry = Registry(Path(project).resolve())
    serving = registry.in_prod()
    if version is None:
        if len(serving) < 2:
            raise ConfigError(
                f"no earlier version in {PROD} to roll back to (`gto history {ARTIFACT}`); "
                f"name one: transferpilot rollback vN.0.0"
            )
        target = serving[-2]
    else:
        target = registry.find(version)
    registry.read(target, PREDICTIONS)
    for above in (v for v in serving if v.number > target.number):
        registry.unassign(above, f"rolled back to {target.version}")
    if target not in serving:
        registry.assign(target, f"rolled back to {target.version}")
    return target


def registered_predictor(project: Path, name: str) -> Path:
    """The exported predictor of the version ``name`` names (``prod``, ``v2.0.0``,
    ``predictor@v2.0.0``), copied out of DVC's cache under ``data/cache/registry/``."""
    project = Path(project).resolve()
    registry = Registry(project)
    version = registry.find(name)
    folder = registry.materialise(version, "models/train", project / "data/cache/registry")
    onnx = folder / "predictor.onnx"
    if not onnx.is_file():
        raise ModelError(
            f"{ARTIFACT} {version.version} has no predictor.onnx (its run had train.export: "
            "false): nothing to serve"
        )
    return onnx
