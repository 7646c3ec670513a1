"""Fine-tuning, the way the guidance says: head first, then the network at a smaller rate.

:class:`Finetuner` has the estimator interface of the feature classifiers:
``fit(images, labels)`` then ``predict`` / ``predict_proba(images)``, where
``images`` are file paths. Steps:

1. replace the ImageNet head with one for the dataset's classes, initialised
   from a linear probe on the cached CNN codes when given (LP-FT), else by
   ``head_epochs`` of training on the frozen backbone;
2. freeze the parameters matching ``frozen`` (named groups); BatchNorms keep
   ImageNet's running statistics (eval mode) — in frozen layers always, in
   trained layers unless ``train_bn`` (their affine parameters still learn);
3. train with AdamW, the head at ``lr`` and pretrained layers at
   ``lr * lr_ratio``, linear warm-up then cosine decay, label smoothing,
   augmentation (random resized crop, flip) on train only;
4. keep the best epoch by validation accuracy, stop after ``patience``
   epochs without improvement; checkpoint every epoch and resume from the last.

Inside a torchrun launch (:mod:`transferpilot.finetune._distributed`) the same
loop runs on every rank: the model wrapped in DistributedDataParallel, each rank
on ``batch_size / ranks`` images of every batch (a ``DistributedSampler``, its
epoch set each epoch), losses and accuracies summed over the ranks; rank 0 alone
checkpoints and logs.

Each epoch seeds its own randomness from ``(seed, epoch)``, so a run resumed
after a kill continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, WeightedRandomSampler

from transferpilot.balance import imbalance, is_imbalanced
from transferpilot.config import TrainParams, resolve_workers
from transferpilot.errors import ModelError
from transferpilot.finetune._checkpoint import load_checkpoint, save_checkpoint
from transferpilot.finetune._distributed import all_sum, barrier, rank_world
from transferpilot.finetune._groups import (
    freeze,
    frozen_patterns,
    param_groups,
    set_batchnorm_mode,
)
from transferpilot.images import open_rgb
from transferpilot.io import atomic_open, sha256_file, write_json
from transferpilot.sampling import held_in_split, stratified_sample
from transferpilot.zoo import Backbone, DataConfig

log = logging.getLogger(__name__)

#: L-BFGS iterations of the probe that starts the head: on raw, often separable codes it
#: would run to 1,000 for a head that fine-tuning moves anyway (3-fold CV of three C values
#: took 50 s on 1,222 digit codes; one split, warm-started, takes a fifth of that).
HEAD_ITER = 200


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    images_per_s: float
    #: the held-in mean per-class recall: what selects the epoch on an imbalanced set
    val_balanced_accuracy: float | None = None


@dataclass
class FitResult:
    best_epoch: int
    best_val_accuracy: float
    epochs_run: int
    resumed_from: int | None
    stopped_early: bool
    history: list[EpochLog] = field(default_factory=list)
    #: the chosen epoch's held-in balanced accuracy (what chose it on imbalanced classes)
    best_val_balanced_accuracy: float | None = None


@dataclass
class _Progress:
    """Where a run stands between epochs: what a checkpoint records and a resume restores."""

    run_key: str
    start: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1
    stale: int = 0
    history: list[EpochLog] = field(default_factory=list)
    resumed: int | None = None

    def update(self, epoch: int, entry: EpochLog, balanced: bool = False) -> bool:
        """Record the epoch; True when its held-in score is the best so far: accuracy, or
        balanced accuracy where the classes are imbalanced."""
        self.history.append(entry)
        score = entry.val_accuracy
        if balanced and entry.val_balanced_accuracy is not None:
            score = entry.val_balanced_accuracy
        if score > self.best_acc:
            self.best_acc, self.best_epoch, self.stale = score, epoch, 0
            return True
        self.stale += 1
        return False


class _Images(Dataset):
    def __init__(self, paths: Sequence[Path], targets: Sequence[int], transform: Callable) -> None:
        self.paths, self.targets, self.transform = list(paths), list(targets), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(open_rgb(Path(self.paths[i]))), self.targets[i]


def _seed_all(seed: int) -> None:
    """Seed every RNG the augmentations may use (timm's crops use Python's ``random``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch on one rank (rank 0's is the single-process seed)."""
    return seed * 100_003 + epoch + rank * 1_000_003


def _seed_worker(worker_id: int) -> None:
    _seed_all(torch.initial_seed() % 2**32)


def replace_head(model: nn.Module, backbone: Backbone, num_classes: int) -> str:
    """Swap the ImageNet classifier for a new ``Linear(features, classes)``; returns its name."""
    head = backbone.head()
    if head is None:
        raise ValueError(f"{backbone.spec}: no linear ImageNet head to replace")
    name = next(n for n, m in backbone.model.named_modules() if m is head)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Linear(head.in_features, num_classes))
    return name


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up from 1% to 100%, then cosine decay to 0 (per optimizer step)."""

    def scale(step: int) -> float:
        if step < warmup_steps:
            return 0.01 + 0.99 * step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return scale


class Finetuner:
    """Fine-tune a backbone on labelled image files (see the module docstring).

    >>> settings = TrainParams(epochs=5, lr_ratio=0.1)
    >>> tuner = Finetuner(backbone, settings, checkpoint_dir=Path("ckpt"))  # doctest: +SKIP
    >>> tuner.fit(train_paths, train_labels, val_paths, val_labels)  # doctest: +SKIP
    >>> tuner.predict(val_paths)  # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: Backbone,
        settings: TrainParams,
        *,
        frozen_layers: Sequence[str] = (),
        device: torch.device | None = None,
        checkpoint_dir: Path | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
    ) -> None:
        """``settings`` is the ``train`` section as the decision completed it (``epochs``
        and ``lr_ratio`` set); ``frozen_layers`` are frozen unless ``settings.freeze``
        names the frozen parameters itself."""
        if settings.epochs is None or settings.lr_ratio is None:
            raise ValueError("fine-tuning needs settings with epochs and lr_ratio set")
        self.backbone = backbone
        self.config = settings
        self.frozen_layers = list(frozen_layers)
        self.device = device or torch.device("cpu")
        self.checkpoint_dir = checkpoint_dir
        self.on_epoch = on_epoch

    # -- set-up -------------------------------------------------------------
    def data_config(self) -> DataConfig:
        size = self.config.input_size
        base = self.backbone.data_config
        return base if size is None else replace(base, input_size=(3, size, size))

    def _transforms(self) -> tuple[Callable, Callable]:
        from timm.data import create_transform

        cfg, c = self.data_config(), self.config
        common = dict(
            input_size=cfg.input_size, interpolation=cfg.interpolation, mean=cfg.mean, std=cfg.std
        )
        evaluate = cfg.transform()
        if not c.augment:
            return evaluate, evaluate
        train = create_transform(
            **common, is_training=True, scale=c.crop_scale, hflip=c.hflip, color_jitter=None
        )
        return train, evaluate

    def frozen_patterns(self) -> list[str]:
        """Regexes of the frozen parameters: ``settings.freeze``, else the frozen layers'."""
        if self.config.freeze is not None:
            return list(self.config.freeze)
        return frozen_patterns(self.backbone.model, self.frozen_layers)

    def _build(self, num_classes: int) -> None:
        self.model_ = copy.deepcopy(self.backbone.model)
        self.head_name_ = replace_head(self.model_, self.backbone, num_classes)
        self.frozen_ = freeze(self.model_, self.frozen_patterns())
        self.model_.to(self.device)
        if self.config.channels_last:
            self.model_.to(memory_format=torch.channels_last)

    def _loader(
        self, dataset: Dataset, *, shuffle: bool, epoch: int, shared: bool = False
    ) -> DataLoader:
        """Batches of ``dataset``; ``shared``: this rank's share only (training: a
        ``DistributedSampler`` and ``batch_size / ranks`` per batch; evaluation: every
        ranks-th image), the whole dataset outside a process group."""
        rank, world = rank_world()
        generator = torch.Generator().manual_seed(_seed(self.config.seed, epoch, rank))
        batch, sampler = self.config.batch_size, None
        if shared and world > 1 and shuffle:
            batch = max(1, batch // world)
            sampler = DistributedSampler(
                dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.config.seed
            )
            sampler.set_epoch(epoch)
        elif shared and world > 1:
            dataset = Subset(dataset, range(rank, len(dataset), world))
        elif shuffle and getattr(self, "balanced_", False):  # each class equally often
            targets = np.asarray(dataset.targets)  # type: ignore[attr-defined]
            weights = 1.0 / np.bincount(targets)[targets]
            sampler = WeightedRandomSampler(
                weights.tolist(), len(targets), replacement=True, generator=generator
            )
        rows = len(sampler) if sampler is not None else len(dataset)
        return DataLoader(
            dataset,
            batch_size=batch,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle and rows > batch,
            num_workers=resolve_workers(self.config.workers),
            worker_init_fn=_seed_worker,
            generator=generator,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _autocast(self) -> Any:
        import contextlib

        if self.device.type == "cuda" and self.config.amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def init_head(self, codes: np.ndarray, labels: Sequence[str]) -> None:
        """LP-FT: set the new head from a logistic-regression probe on the CNN codes.

        The probe is fitted on the raw codes, in the head's own parametrisation:
        standardising first would divide by per-feature spreads, and features
        that barely vary on clean images (but do under augmentation) would get
        huge weights and blow the first training steps up. At most 2,000 codes
        (stratified) are used, C is chosen on a held-out third: a starting point,
        not the final head.
        """
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        X, y = np.asarray(codes, dtype=np.float64), np.asarray(labels)
        rows = stratified_sample(y, 2000, seed=self.config.seed)  # plenty for a starting head
        X, y = X[rows], y[rows]
        held = held_in_split(y, 1 / 3, seed=self.config.seed)  # C chosen on a third
        if len(np.unique(y[~held])) < len(np.unique(y)) or not held.any():
            held = np.ones(len(y), dtype=bool)  # too few images to hold any out: train = held
        fit = ~held if (~held).any() else held
        probe = LogisticRegression(max_iter=HEAD_ITER, warm_start=True)
        scores: dict[float, float] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for C in (0.01, 0.1, 1.0):  # ascending, each warm-started from the last
                probe.set_params(C=C).fit(X[fit], y[fit])
                scores[C] = float(probe.score(X[held], y[held]))
            best_c = max(scores, key=scores.__getitem__)
            probe = LogisticRegression(C=best_c, max_iter=HEAD_ITER).fit(X, y)
        coef, bias = probe.coef_, probe.intercept_
        if coef.shape[0] == 1:  # binary: p(1) = sigmoid(z) = softmax([-z/2, z/2])
            coef, bias = np.vstack([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
        order = [list(probe.classes_).index(c) for c in self.classes_]
        head = self.model_.get_submodule(self.head_name_)
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(coef[order], dtype=head.weight.dtype))
            head.bias.copy_(torch.as_tensor(bias[order], dtype=head.bias.dtype))
        self.head_init_ = {"probe_C": best_c, "probe_held_out_accuracy": scores[best_c]}

    def _codes(self, dataset: Dataset) -> np.ndarray:
        """CNN codes of the pretrained network (unchanged) for ``dataset``, eval transform."""
        from transferpilot.zoo import PRE_LOGITS

        features = self.backbone.features.to(self.device).eval()
        out = []
        with torch.inference_mode():
            for x, _ in self._loader(dataset, shuffle=False, epoch=0):
                with self._autocast():
                    out.append(features(x.to(self.device))[PRE_LOGITS].float().cpu().numpy())
        return np.concatenate(out)

    # -- training -----------------------------------------------------------
    def _run_epoch(self, loader: DataLoader, optimizer, scheduler, criterion, train: bool):
        """One pass; loss and accuracy over every rank's images."""
        model = self.model_
        model.train(train)
        forward = self.train_model_ if train else model
        if train:
            set_batchnorm_mode(model, train_unfrozen=self.config.train_bn)
        total, correct, loss_sum = 0, 0, 0.0
        classes = len(self.classes_)
        hits, seen = torch.zeros(classes), torch.zeros(classes)
        grad = torch.enable_grad() if train else torch.inference_mode()
        with grad:
            for x, y in loader:
                x = x.to(self.device, non_blocking=True)
                if self.config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(self.device, non_blocking=True)
                with self._autocast():
                    logits = forward(x)
                    loss = criterion(logits.float(), y)
                if train:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                right = (logits.argmax(1) == y).cpu()
                total += len(y)
                correct += int(right.sum())
                loss_sum += float(loss.detach()) * len(y)
                seen += torch.bincount(y.cpu(), minlength=classes)
                hits += torch.bincount(y.cpu()[right], minlength=classes)
        summed = all_sum([loss_sum, correct, total, *hits.tolist(), *seen.tolist()], self.device)
        loss_sum, correct, total = summed[:3]
        hits, seen = np.array(summed[3 : 3 + classes]), np.array(summed[3 + classes :])
        recall = hits[seen > 0] / seen[seen > 0]
        balanced = float(recall.mean()) if len(recall) else float("nan")
        return loss_sum / max(total, 1), correct / max(total, 1), int(total), balanced

    def _run_key(self, paths: Sequence[Path], targets: Sequence[int]) -> str:
        text = json.dumps(
            [
                self.backbone.spec,
                self.backbone.weights_digest,
                self.config.model_dump_json(),
                self.frozen_patterns(),
                self.classes_,
                [str(p) for p in paths],
                list(targets),
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def fit(
        self,
        paths: Sequence[Path],
        labels: Sequence[str],
        val_paths: Sequence[Path],
        val_labels: Sequence[str],
        *,
        codes: np.ndarray | None = None,
    ) -> Finetuner:
        """Train on ``paths``/``labels``, select and early-stop on the validation images.

        ``codes`` (N, D) are the training images' CNN codes at the training resolution (the
        feature cache's, when it matches); without them they are computed here, one
        inference pass, since the LP-FT head is fitted to them.
        """
        c = self.config
        self.classes_ = sorted(set(labels))
        index = {label: i for i, label in enumerate(self.classes_)}
        targets, val_targets = [index[x] for x in labels], [index[x] for x in val_labels]
        self.balanced_ = rank_world()[1] == 1 and is_imbalanced(targets)
        if self.balanced_:
            log.info(
                "imbalanced classes (largest %.1fx the smallest): class-balanced batches, the "
                "epoch chosen by held-in balanced accuracy",
                imbalance(targets),
            )
        _seed_all(c.seed)
        self._build(len(self.classes_))
        train_tf, eval_tf = self._transforms()
        if codes is None:
            codes = self._codes(_Images(paths, targets, eval_tf))
        self.init_head(np.asarray(codes), labels)
        train_set = _Images(paths, targets, train_tf)
        val_set = _Images(val_paths, val_targets, eval_tf)
        steps_per_epoch = len(self._loader(train_set, shuffle=True, epoch=0, shared=True))
        optimizer, scheduler = self._optimizer(steps_per_epoch)
        criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
        progress = self._resume(self._run_key(paths, targets), optimizer, scheduler)
        self.train_model_ = self._parallel()
        self._body = [
            p
            for n, p in self.model_.named_parameters()
            if p.requires_grad and not n.startswith(self.head_name_ + ".")
        ]
        stopped = False
        for epoch in range(progress.start, c.epochs):
            if progress.stale >= c.patience:
                stopped = True
                break
            entry = self._epoch(epoch, train_set, val_set, optimizer, scheduler, criterion)
            improved = progress.update(epoch, entry, self.balanced_)
            self._checkpoint(epoch, progress, improved, optimizer, scheduler)
            if rank_world()[0] == 0:  # rank 0 logs and reports for every rank
                self._report(entry, improved)
        self._load_best()
        best = progress.history[progress.best_epoch] if progress.best_epoch >= 0 else None
        self.result_ = FitResult(
            progress.best_epoch + 1,
            best.val_accuracy if best is not None else progress.best_acc,
            len(progress.history),
            progress.resumed,
            stopped,
            progress.history,
            best.val_balanced_accuracy if best is not None else None,
        )
        return self

    def _optimizer(self, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW over the parameter groups (the head's rate, the body's lower), and its
        schedule: linear warm-up, then cosine decay over every step of the run."""
        c = self.config
        groups, self.groups_ = param_groups(
            self.model_, self.head_name_, lr=c.lr, lr_ratio=c.lr_ratio, weight_decay=c.weight_decay
        )
        optimizer = torch.optim.AdamW(groups)
        total_steps = steps_per_epoch * c.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(total_steps, round(c.warmup_epochs * steps_per_epoch))
        )
        return optimizer, scheduler

    def _resume(self, run_key: str, optimizer: Any, scheduler: Any) -> _Progress:
        """The run so far: from the last checkpoint when it is of this run (the same data
        and settings; the model, optimizer and schedule restored), else from the start."""
        state = load_checkpoint(self.checkpoint_dir, "last") if self.checkpoint_dir else None
        if state is None or state.get("run_key") != run_key:
            if state is not None:
                log.info(
                    "the last checkpoint is of another run (data or settings changed): "
                    "starting anew"
                )
            return _Progress(run_key)
        self.model_.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        log.info("resuming from the checkpoint of epoch %d", state["epoch"] + 1)
        return _Progress(
            run_key,
            start=state["epoch"] + 1,
            best_acc=state["best_accuracy"],
            best_epoch=state["best_epoch"],
            stale=state["stale"],
            history=[EpochLog(**h) for h in state["history"]],
            resumed=state["epoch"],
        )

    def _epoch(
        self,
        epoch: int,
        train_set: Dataset,
        val_set: Dataset,
        optimizer: Any,
        scheduler: Any,
        criterion: nn.Module,
    ) -> EpochLog:
        """One epoch: train (the head alone for the first ``head_epochs``), then validate."""
        c = self.config
        _seed_all(_seed(c.seed, epoch, rank_world()[0]))
        head_only = epoch < c.head_epochs
        for p in self._body:
            p.requires_grad_(not head_only)
        begin = time.perf_counter()
        tr_loss, tr_acc, seen, _ = self._run_epoch(
            self._loader(train_set, shuffle=True, epoch=epoch, shared=True),
            optimizer,
            scheduler,
            criterion,
            True,
        )
        train_s = time.perf_counter() - begin
        va_loss, va_acc, _, va_balanced = self._run_epoch(
            self._loader(val_set, shuffle=False, epoch=epoch, shared=True),
            None,
            None,
            criterion,
            False,
        )
        return EpochLog(
            epoch + 1,
            tr_loss,
            tr_acc,
            va_loss,
            va_acc,
            optimizer.param_groups[0]["lr"],
            time.perf_counter() - begin,
            seen / max(train_s, 1e-9),
            va_balanced,
        )

    def _checkpoint(
        self, epoch: int, progress: _Progress, improved: bool, optimizer: Any, scheduler: Any
    ) -> None:
        """Keep the best weights (in memory without a checkpoint folder) and, on rank 0, the
        epoch's checkpoint: ``last`` always, ``best`` when it improved."""
        if self.checkpoint_dir is None:
            if improved:
                self._best_state = copy.deepcopy(self.model_.state_dict())
            return
        if rank_world()[0] != 0:  # one writer; every rank reads the best weights back
            return
        record = {
            "epoch": epoch,
            "run_key": progress.run_key,
            "best_accuracy": progress.best_acc,
            "best_epoch": progress.best_epoch,
            "stale": progress.stale,
            "classes": self.classes_,
            "model": self.backbone.spec,
            "history": [asdict(h) for h in progress.history],
            "scheduler": scheduler.state_dict(),
            "config": self.config.model_dump(mode="json"),
        }
        if improved:
            save_checkpoint(self.checkpoint_dir, "best", self.model_, record)
        save_checkpoint(self.checkpoint_dir, "last", self.model_, record, optimizer)

    def _report(self, entry: EpochLog, improved: bool) -> None:
        log.info(
            "epoch %d/%d: train loss %.4f acc %.3f, held-in loss %.4f acc %.3f (%.1f images/s)%s",
            entry.epoch,
            self.config.epochs,
            entry.train_loss,
            entry.train_accuracy,
            entry.val_loss,
            entry.val_accuracy,
            entry.images_per_s,
            " *best*" if improved else "",
        )
        if self.on_epoch is not None:
            self.on_epoch(entry)

    def _parallel(self) -> nn.Module:
        """The model the training steps call: DistributedDataParallel in a process group
        (it starts from rank 0's weights), else the model itself."""
        if rank_world()[1] == 1:
            return self.model_
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            self.model_,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.config.head_epochs > 0,  # head-only epochs
        )

    def _load_best(self) -> None:
        barrier()  # rank 0 has written the best checkpoint
        if self.checkpoint_dir is not None:
            best = load_checkpoint(self.checkpoint_dir, "best")
            if best is not None:
                self.model_.load_state_dict(best["model"])
        elif getattr(self, "_best_state", None) is not None:
            self.model_.load_state_dict(self._best_state)
        self.model_.eval()

    # -- saved model ----------------------------------------------------------
    def save(self, directory: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the trained network as ``model.safetensors`` + ``model.json`` (its record)."""
        from safetensors.torch import save as save_bytes

        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / "model.safetensors"
        with atomic_open(weights, "wb") as fh:
            state = {k: v.detach().contiguous().cpu() for k, v in self.model_.state_dict().items()}
            fh.write(save_bytes(state))
        record = {
            "model": self.backbone.spec,
            "arch_weights_digest": self.backbone.weights_digest,
            "classes": self.classes_,
            "head": self.head_name_,
            "data_config": self.data_config().as_dict(),
            "config": self.config.model_dump(mode="json"),
            "frozen": self.frozen_patterns(),
            "sha256": sha256_file(weights),
        } | (extra or {})
        write_json(directory / "model.json", record)
        return record

    @classmethod
    def load(
        cls, directory: Path, backbone: Backbone, *, device: torch.device | None = None
    ) -> Finetuner:
        """A fine-tuned model saved by :meth:`save`, after checking its digest and model."""
        from safetensors.torch import load_file

        record = json.loads((directory / "model.json").read_text(encoding="utf-8"))
        weights = directory / "model.safetensors"
        if not weights.is_file() or sha256_file(weights) != record.get("sha256"):
            raise ModelError(f"{weights}: missing or not matching model.json's digest")
        if record["model"] != backbone.spec:
            raise ModelError(f"{weights} fine-tunes {record['model']}, not {backbone.spec}")
        settings = TrainParams.model_validate(record["config"])
        settings = settings.model_copy(update={"freeze": tuple(record["frozen"])})
        tuner = cls(backbone, settings, device=device)
        tuner.classes_ = list(record["classes"])
        tuner._build(len(tuner.classes_))
        tuner.model_.load_state_dict(load_file(str(weights)))
        tuner.model_.eval()
        return tuner

    # -- inference ----------------------------------------------------------
    def predict_proba(self, paths: Sequence[Path]) -> np.ndarray:
        """(N, classes) softmax probabilities, classes in ``classes_`` order."""
        _, eval_tf = self._transforms()
        loader = self._loader(_Images(paths, [0] * len(paths), eval_tf), shuffle=False, epoch=0)
        self.model_.eval()
        out = []
        with torch.inference_mode():
            for x, _ in loader:
                x = x.to(self.device)
                if self.config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    out.append(self.model_(x).float().softmax(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)))

    def predict(self, paths: Sequence[Path]) -> np.ndarray:
        return np.asarray(self.classes_)[self.predict_proba(paths).argmax(1)]
