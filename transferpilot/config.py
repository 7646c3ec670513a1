"""``params.yaml``: one frozen, validated model with a section per stage.

Defaults live here, not in ``params.yaml``; a key that is absent takes its
default. A typo or a bad value is a :class:`~transferpilot.errors.ConfigError`
that names the key and what it accepts.

>>> params = load_params(Path("params.yaml"))  # doctest: +SKIP
>>> params.prepare.val_fraction
0.2
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from transferpilot.errors import ConfigError

DEFAULT_PARAMS_FILE = Path("params.yaml")


def resolve_workers(requested: int) -> int:
    """The one rule for every ``workers`` setting: ``-1`` = one per core but the one that
    runs the model (at least 1, at most 4); ``0`` = in-process; ``N`` = N."""
    if requested >= 0:
        return requested
    return min(4, max(1, (os.cpu_count() or 1) - 1))


WORKERS_HELP = "processes (threads in prepare) that read images; -1 = auto, 0 = in-process"


class Section(BaseModel):
    """Base of every ``params.yaml`` section: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: ``model.name`` that asks for the pick among ``model.candidates``.
AUTO = "auto"


class ModelParams(Section):
    """Which pretrained network to transfer (see ``transferpilot models``)."""

    name: str = Field(
        "efficientnet_lite0",
        description="efficientnet_lite0 | timm:<name> | torchvision:<name> | file:<path> | "
        "auto (the best of `candidates`, measured on a sample)",
    )
    arch: str | None = Field(
        None, description="architecture of a file:<path> checkpoint, e.g. timm:resnet50"
    )
    candidates: tuple[str, ...] = Field(
        ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"),
        min_length=1,
        description="the backbones `name: auto` chooses among, cheapest first (a tie goes to "
        "the cheaper run; to the first listed when no throughput is measured)",
    )
    select_images: int = Field(
        300, ge=20, description="auto: training images in the sample each candidate is probed on"
    )

    @model_validator(mode="after")
    def _arch_only_with_file(self) -> ModelParams:
        if self.name.startswith("file:") and not self.arch:
            raise ValueError("a file:<path> model needs `arch` (e.g. timm:resnet50)")
        if self.arch and not self.name.startswith("file:"):
            raise ValueError("`arch` is only used with a file:<path> model")
        bad = [c for c in self.candidates if c == AUTO or c.startswith("file:")]
        if bad:
            raise ValueError(
                f"candidates {bad}: list named or timm:/torchvision: models "
                "(a file:<path> model needs its own arch; use it as `name`)"
            )
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError("candidates lists a model twice")
        return self


class PrepareParams(Section):
    """Intake: where the images are, how to split them, what to reject."""

    source: Path = Field(
        Path("data/digits"),
        description="an ImageFolder (train/ val/ [test/] or one root of class folders) "
        "or a CSV manifest (path,label[,split])",
    )
    val_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of each class put in val, where no split is given"
    )
    test_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of each class put in test, where no split is given"
    )
    seed: int = Field(0, description="the random val/test split of unsplit images")
    holdout: Path = Field(
        Path("holdout.csv"),
        description="the frozen evaluation images (sha256,label,path): listed images are the "
        "test split, new images join training; empty = split by the fractions "
        "(the first promotion writes it)",
    )
    max_pixels: int = Field(89_478_485, gt=0, description="larger images are rejected")
    cross_split_duplicates: Literal["drop", "keep"] = Field(
        "drop", description="drop: an image also in train is removed from val/test"
    )
    min_images_per_class: int = Field(2, ge=2, description="smaller classes are dropped")
    workers: int = Field(-1, ge=-1, description=WORKERS_HELP)

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> PrepareParams:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return self


Device = Annotated[str, StringConstraints(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")]


class ExtractParams(Section):
    """Feature extraction: one forward pass per image, cached by content."""

    device: Device = Field(
        "auto", description="auto (CUDA, then MPS, then CPU) | cpu | cuda[:N] | mps"
    )
    batch_size: int = Field(32, ge=1, le=4096, description="images per forward pass")
    workers: int = Field(-1, ge=-1, description=WORKERS_HELP)
    pool_grid: int = Field(
        1, ge=1, le=4, description="1 = global average; 2 = 2x2 average grid for every layer map"
    )
    shard_size: int = Field(512, ge=1, description="images per cache shard")
    amp: bool = Field(True, description="mixed precision on CUDA (bf16 where supported)")
    channels_last: bool = Field(
        True, description="channels-last memory format (faster for Lite0, CPU too)"
    )
    runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="auto: ONNX Runtime on the CPU, PyTorch on CUDA/MPS"
    )
    cache_dir: Path = Field(Path("data/cache/features"), description="the feature cache")


class ProfileParams(Section):
    """Measuring the dataset: layer probes, throughput, an optional reference folder."""

    probe: Literal["svm", "linear"] = Field(
        "svm", description="the classifier probed on every layer (the other on the best ones)"
    )
    probe_c_grid: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        (0.001, 0.01, 0.1), min_length=1, description="C values of the layer probes"
    )
    kernel_c_grid: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        (1.0, 10.0, 100.0), min_length=1, description="the no-transfer baseline's C values"
    )
    probe_folds: int = Field(3, ge=2, le=10, description="cross-validation folds of each probe")
    probe_max_images: int = Field(2000, ge=20, description="training images probed, at most")
    # The probes rank layers, they do not ship: a loose tolerance and few iterations.
    # Measured on the embedded digits (1,438 rows): the 1,000-d `logits` probe took 60 s
    # at scikit-learn's defaults and 12 s like this, CV accuracy equal to 0.001 on every layer.
    probe_max_iter: int = Field(200, ge=10, description="solver iterations per probe fit")
    probe_tol: float = Field(0.01, gt=0, description="solver tolerance of the probes")
    probe_second_opinion: int = Field(
        2, ge=0, description="best layers also probed with the other classifier"
    )
    seed: int = Field(0, description="the probes' sample and folds")
    cache_dir: Path | None = Field(
        Path("data/cache/profile"),
        description="probe results kept by content (features, labels, settings); null = none",
    )
    measure_throughput: bool = Field(True, description="time a few training steps here")
    reference: Path | None = Field(
        None,
        description="an image folder to compare with (e.g. an ImageNet sample): Fréchet distance",
    )


class DecideParams(Section):
    """The rules that turn the profile into a strategy (and the manual override)."""

    strategy: Literal["auto", "linear", "svm", "ncm", "finetune", "baseline", "pretrained"] = Field(
        "auto", description="auto = decided from the profile; any other value overrides it"
    )
    layer: str | None = Field(None, description="override the layer of linear/svm")
    large_images_per_class: int = Field(
        200, ge=1, description="median training images per class from which a dataset is large"
    )
    similarity_threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="similarity to ImageNet from which a dataset is similar"
    )
    budget_minutes: float | None = Field(
        60.0, gt=0, description="time you will spend on training; null = no limit"
    )
    train_images_per_s: float | None = Field(
        None,
        gt=0,
        description="pin this machine's fine-tuning speed for the budget; null = measured once",
    )
    finetune_epochs: int = Field(10, ge=1, description="fine-tuning epochs planned (and budgeted)")
    trial_minutes: float | None = Field(
        5.0,
        ge=0,
        description="at most this much of the budget on short fine-tuning trials that score "
        "fine-tuning on held-in data (capped at a third of the full run); 0 or null = none",
    )
    lr_ratio_similar: float = Field(
        0.1, gt=0, le=1, description="pretrained layers' learning rate / head's, similar data"
    )
    lr_ratio_different: float = Field(0.3, gt=0, le=1, description="the same, different data")
    freeze_overlap: float = Field(
        0.95, gt=0, le=1, description="similar data: leading layers at least this close stay frozen"
    )


def _read_by(*strategies: str) -> dict[str, Any]:
    """A train setting that only these strategies read (others: every strategy)."""
    return {"strategies": list(strategies)}


LINEAR = _read_by("linear", "svm")
KERNEL = _read_by("baseline")
HEADS = _read_by("linear", "svm", "ncm", "baseline")
FINETUNE = _read_by("finetune")


class TrainParams(Section):
    """Training the decided strategy: linear/svm on features, or fine-tuning.

    Each setting says which strategies read it; the decision keeps only those of
    the strategy it chose (:meth:`for_strategy`), so changing ``lr`` does not
    re-train a linear SVM.
    """

    c_grid: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        (0.0001, 0.001, 0.01, 0.1, 1.0),
        min_length=1,
        description="linear/svm: C values tried by CV (features are standardised first)",
        json_schema_extra=LINEAR,
    )
    kernel_c_grid: tuple[Annotated[float, Field(gt=0)], ...] = Field(
        (1.0, 10.0, 100.0),
        min_length=1,
        description="baseline: C values of the RBF-kernel SVM on raw pixels",
        json_schema_extra=KERNEL,
    )
    cv_folds: int = Field(
        5,
        ge=2,
        le=20,
        description="linear/svm/baseline: stratified folds to choose C",
        json_schema_extra=HEADS,
    )
    max_iter: int = Field(
        2000, ge=10, description="solver iterations per fit", json_schema_extra=HEADS
    )
    seed: int = Field(0, description="the CV folds and fine-tuning's random state")
    # fine-tuning
    epochs: int | None = Field(
        None, ge=1, description="finetune: null = the decision's", json_schema_extra=FINETUNE
    )
    batch_size: int = Field(
        32, ge=1, le=4096, description="images per step", json_schema_extra=FINETUNE
    )
    lr: float = Field(
        1e-3,
        gt=0,
        description="finetune: the new head's AdamW learning rate",
        json_schema_extra=FINETUNE,
    )
    lr_ratio: float | None = Field(
        None,
        gt=0,
        le=1,
        description="pretrained layers' rate / the head's; null = the decision's",
        json_schema_extra=FINETUNE,
    )
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay", json_schema_extra=FINETUNE
    )
    warmup_epochs: float = Field(
        1.0, ge=0, description="linear warm-up before the cosine decay", json_schema_extra=FINETUNE
    )
    label_smoothing: float = Field(
        0.1, ge=0, lt=1, description="of the cross-entropy loss", json_schema_extra=FINETUNE
    )
    patience: int = Field(
        3,
        ge=1,
        description="epochs without a better val accuracy before stopping",
        json_schema_extra=FINETUNE,
    )
    input_size: int | None = Field(
        None,
        ge=16,
        description="training resolution; null = the decision's (smaller for small images)",
        json_schema_extra=FINETUNE,
    )
    augment: bool = Field(
        True,
        description="random resized crop + horizontal flip on train",
        json_schema_extra=FINETUNE,
    )
    crop_scale: tuple[float, float] = Field(
        (0.35, 1.0), description="random resized crop area", json_schema_extra=FINETUNE
    )
    hflip: float = Field(
        0.5, ge=0, le=1, description="probability of a horizontal flip", json_schema_extra=FINETUNE
    )
    head_epochs: int = Field(
        0,
        ge=0,
        description="epochs of head-only training after the probe init",
        json_schema_extra=FINETUNE,
    )
    freeze: tuple[str, ...] | None = Field(
        None,
        description="regexes of frozen parameters; null = the decision's frozen layers",
        json_schema_extra=FINETUNE,
    )
    export: bool = Field(
        True, description="write models/train/predictor.onnx (backbone + head, self-contained)"
    )
    label_issues: bool = Field(
        True,
        description="look for mislabelled training images (confident learning on out-of-fold"
        " probabilities; listed in reports/label_issues.csv, never dropped unless asked)",
    )
    drop_label_issues: bool = Field(
        False,
        description="train again without the training images flagged as mislabelled, and"
        " report the val accuracy both ways",
    )
    train_bn: bool = Field(
        False,
        description="trained layers' BatchNorms use batch statistics (default: ImageNet's)",
        json_schema_extra=FINETUNE,
    )
    device: Device = Field(
        "auto",
        description="auto (CUDA, then MPS, then CPU) | cpu | cuda[:N] | mps",
        json_schema_extra=FINETUNE,
    )
    workers: int = Field(-1, ge=-1, description=WORKERS_HELP, json_schema_extra=FINETUNE)
    amp: bool = Field(
        True,
        description="mixed precision on CUDA (bf16 where supported)",
        json_schema_extra=FINETUNE,
    )
    channels_last: bool = Field(
        True, description="channels-last memory format", json_schema_extra=FINETUNE
    )
    nproc_per_node: int = Field(
        1,
        ge=1,
        le=1024,
        description="finetune: training processes here (torchrun + DDP; gloo on CPU, nccl on CUDA)",
        json_schema_extra=FINETUNE,
    )
    nnodes: int = Field(
        1,
        ge=1,
        description="finetune: machines training together (each runs the stage); > 1 needs"
        " rdzv_endpoint",
        json_schema_extra=FINETUNE,
    )
    rdzv_endpoint: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.\-]+:\d+$",
        description="finetune: HOST:PORT where the machines meet (torchrun's c10d rendezvous)",
        json_schema_extra=FINETUNE,
    )

    @model_validator(mode="after")
    def _crop_scale_ordered(self) -> TrainParams:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError("crop_scale must be two numbers 0 < low <= high <= 1")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("nnodes > 1 needs rdzv_endpoint (HOST:PORT of the rendezvous)")
        return self

    @classmethod
    def keys_for(cls, strategy: str) -> list[str]:
        """The settings ``strategy`` reads."""
        return [
            name
            for name, field in cls.model_fields.items()
            if strategy in (field.json_schema_extra or {}).get("strategies", [strategy])
        ]

    def for_strategy(self, strategy: str, **update: Any) -> TrainParams:
        """Only the settings ``strategy`` reads (the rest at their defaults), then ``update``."""
        kept = self.model_dump(include=set(self.keys_for(strategy)))
        return TrainParams.model_validate(kept | update)


class EvaluateParams(Section):
    """``evaluate``: metrics, the report, and the check of the exported predictor."""

    ece_bins: int = Field(15, ge=2, le=100, description="confidence bins of the calibration error")
    mistakes: int = Field(16, ge=0, le=200, description="most confident mistakes shown")
    explain: bool = Field(
        True,
        description="overlay where the model looked on the mistakes (builds the network)",
    )
    check_images: int = Field(
        64, ge=0, description="images the exported predictor is checked on (0 = no check)"
    )
    device: Device = Field("auto", description="where the fine-tuned network is evaluated")


class PromoteParams(Section):
    """``promote``: champion and challenger (``transferpilot promote``, scheduled runs)."""

    margin: float = Field(
        0.5,
        ge=0.0,
        le=100.0,
        description="accuracy points the challenger may lose to the champion on the frozen "
        "evaluation images and still be promoted",
    )
    drift_alpha: float = Field(
        0.05, gt=0.0, lt=1.0, description="false-positive rate of the drift check"
    )
    label_issue_rise: float | None = Field(
        10.0,
        ge=0.0,
        le=100.0,
        description="points by which the share of new training images flagged as label "
        "issues may exceed the old images' before the challenger is held back (null: no check)",
    )


class Params(Section):
    """All of ``params.yaml``."""

    model: ModelParams = ModelParams()
    prepare: PrepareParams = PrepareParams()
    extract: ExtractParams = ExtractParams()
    profile: ProfileParams = ProfileParams()
    decide: DecideParams = DecideParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    promote: PromoteParams = PromoteParams()


def _describe_allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """List the keys a section accepts, for an 'unknown key' message."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        current = annotation
    return ", ".join(current.model_fields)


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line per problem, each naming the dotted key."""
    lines = [f"{source}: invalid configuration"]
    for item in err.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            section = ".".join(str(p) for p in loc[:-1]) or "the top level"
            allowed = _describe_allowed(model, loc)
            lines.append(f"  - unknown key `{key}`; {section} accepts: {allowed}")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            value = item.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"  - `{key}`: {msg}{shown}")
    return "\n".join(lines)


def parse_params(data: Any, source: str = "params") -> Params:
    """Validate a mapping (as read from YAML) into :class:`Params`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, Params)) from None


def load_params(path: Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data, str(path))
