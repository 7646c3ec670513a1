"""The exported predictor, run with ONNX Runtime: images in, your classes out.

Loading and running one needs Pillow, NumPy and onnxruntime only, never PyTorch: the
graph normalises, and the resizing and cropping before it is timm's evaluation transform
reproduced to the last bit (:func:`~transferpilot.images.eval_pixels`), so
``transferpilot predict --model predictor.onnx`` and the evaluate stage's check start at
once. (A preprocessing it does not reproduce falls back to timm's transform.)

>>> Predictor(Path("models/train/predictor.onnx")).predict_files(["bee.jpg"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferpilot.errors import ModelError
from transferpilot.images import eval_pixels, open_rgb

#: Metadata key marking a transferpilot predictor, and its format version.
FORMAT_KEY = "transferpilot_predictor"
FORMAT_VERSION = "1"


@dataclass(frozen=True)
class Guess:
    """One of the top-k answers."""

    label: str
    index: int
    prob: float


@dataclass(frozen=True)
class Prediction:
    """The answer for one image, or why there is none."""

    image: str
    top: tuple[Guess, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "top": [asdict(g) for g in self.top]}
        if self.error:
            out["error"] = self.error
        return out


def _config_args(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_size": tuple(raw["input_size"]),
        "mean": tuple(raw["mean"]),
        "std": tuple(raw["std"]),
        "interpolation": raw.get("interpolation", "bilinear"),
        "crop_pct": raw.get("crop_pct", 0.875),
        "crop_mode": raw.get("crop_mode", "center"),
    }


def pixels_for(config: dict[str, Any]) -> Callable[[Image.Image], np.ndarray]:
    """Image -> (3, H, W) floats in [0, 1], resized and cropped as the model was trained."""
    args = _config_args(config)
    if eval_pixels(Image.new("RGB", (3, 2)), args) is not None:
        return lambda img: eval_pixels(img, args)  # type: ignore[return-value]
    from transferpilot.zoo import DataConfig  # defers torch and timm: a rarer preprocessing

    transform = DataConfig(**(args | {"mean": (0.0,) * 3, "std": (1.0,) * 3})).transform()
    return lambda img: transform(img).numpy()


class Predictor:
    """An exported predictor, run with onnxruntime.

    ``predict_proba(images)`` takes PIL images or paths and returns (N, classes)
    probabilities in ``classes`` order.
    """

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: not a readable ONNX model ({err})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if props.get(FORMAT_KEY) != FORMAT_VERSION:
            raise ModelError(
                f"{self.path}: not a transferpilot predictor (no '{FORMAT_KEY}' metadata); "
                "export one with the train stage"
            )
        self.meta = {k: _maybe_json(v) for k, v in props.items() if k != FORMAT_KEY}
        self.classes: list[str] = [str(c) for c in self.meta["classes"]]
        self.data_config: dict[str, Any] = _config_args(self.meta["data_config"])
        # The graph normalises: the preprocessing only resizes, crops and scales to [0, 1].
        self._pixels = pixels_for(self.meta["data_config"])

    def _run(self, batch: list[np.ndarray]) -> np.ndarray:
        return self.session.run(None, {"image": np.stack(batch).astype(np.float32)})[0]

    def predict_proba(
        self, images: Sequence[Image.Image | Path | str], *, batch_size: int = 32
    ) -> np.ndarray:
        out: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        for image in images:
            pil = image if isinstance(image, Image.Image) else open_rgb(Path(image))
            batch.append(self._pixels(pil))
            if len(batch) == batch_size:
                out.append(self._run(batch))
                batch = []
        if batch:
            out.append(self._run(batch))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def predict_files(
        self, paths: Sequence[Path], *, top_k: int = 5, batch_size: int = 32
    ) -> list[Prediction]:
        """Top-k classes per file; an unreadable file gets an ``error`` instead."""
        results: dict[int, Prediction] = {}
        batch: list[tuple[int, np.ndarray]] = []
        k = max(1, min(top_k, len(self.classes)))

        def flush() -> None:
            for (i, _), row in zip(batch, self._run([t for _, t in batch]), strict=True):
                order = np.argsort(-row, kind="stable")[:k]
                top = tuple(Guess(self.classes[j], int(j), round(float(row[j]), 6)) for j in order)
                results[i] = Prediction(str(paths[i]), top)
            batch.clear()

        for i, path in enumerate(paths):
            try:
                batch.append((i, self._pixels(open_rgb(Path(path)))))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                results[i] = Prediction(str(path), error=f"{type(err).__name__}: {err}")
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
        return [results[i] for i in range(len(paths))]


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
