"""Benchmark: is static INT8 worth building into extraction on this CPU? Speed and probe accuracy.

    python -m benchmarks.int8 [DATASET_DIR] [--images 256] [--calibration 100]

The extraction graph (every candidate layer pooled inside it, as ``extract``
exports it) is quantized with ONNX Runtime's static QDQ quantization, in several
recipes side by side: per-channel int8 weights, uint8 activations, calibrated on
``--calibration`` training images, either every quantizable operator with min/max
ranges (ONNX Runtime's default), or the convolutions alone (the pooling, the moments
and the head stay fp32) with min/max or 99.999th-percentile ranges. Every graph then
runs with ONNX Runtime on the same pre-decoded batches (decoding excluded, the median
of three passes), and a linear SVM probe (the profile's, 3-fold CV) is fitted on each
graph's features of the training images for the CNN codes and the last block — the
accuracy guard ``extract.precision: auto`` would apply (int8 kept only within 0.5
point of fp32). Writes ``benchmarks/results/int8.{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import SHARED, machine, print_table, stamp, write_results
from transferpilot.config import Params, ProfileParams
from transferpilot.features._extract import ForwardOutputs, export_forward
from transferpilot.images import open_rgb
from transferpilot.intake import prepare_dataset
from transferpilot.layer_names import PRE_LOGITS
from transferpilot.profile import stratified_sample
from transferpilot.profile.build import probe_layers
from transferpilot.zoo import create_backbone

log = logging.getLogger("int8")


def _batches(paths: list[Path], transform: Any, size: int) -> list[np.ndarray]:
    images = [transform(open_rgb(p)).numpy() for p in paths]
    return [np.stack(images[i : i + size]) for i in range(0, len(images), size)]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session: Any, batches: list[np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    parts = [dict(zip(keys, session.run(None, {"image": b}), strict=True)) for b in batches]
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


#: name -> (operator types quantized, None = all; calibration method)
RECIPES = {
    "int8 all ops, min/max": (None, "MinMax"),
    "int8 Conv only, min/max": (["Conv"], "MinMax"),
    "int8 Conv only, percentile": (["Conv"], "Percentile"),
}


def _quantize(
    fp32: Path, int8: Path, calibration: list[np.ndarray], ops: list[str] | None, method: str
) -> float:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"image": b} for b in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    start = time.perf_counter()
    prepared = fp32.with_suffix(".pre.onnx")
    if not prepared.is_file():
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=ops,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=SHARED / "flowers11")
    parser.add_argument("--images", type=int, default=256, help="training images timed/probed")
    parser.add_argument("--calibration", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    params = Params()
    backbone = create_backbone(params.model.name)
    records = prepare_dataset(params.prepare.model_copy(update={"source": args.dataset})).records
    train = [r for r in records if r.split == "train"]
    labels = np.asarray([r.label for r in train])
    rows = stratified_sample(labels, args.images, seed=0)
    calib_rows = stratified_sample(labels, args.calibration, seed=1)
    config = backbone.data_config
    batches = _batches([train[i].path for i in rows], config.transform(), args.batch)
    # One image per calibration batch: the histogram calibrators need batches of one shape.
    calibration = _batches([train[i].path for i in calib_rows], config.transform(), 1)
    outputs = ForwardOutputs(backbone, 1)
    keys = list(outputs.keys)
    results: dict[str, Any] = {"dataset": args.dataset.name, "images": len(rows)}
    graphs: dict[str, dict[str, Any]] = {}
    features: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_forward(outputs, config.input_size, Path(tmp) / "fp32.onnx")
        paths = {"fp32": fp32}
        for i, (name, (ops, method)) in enumerate(RECIPES.items()):
            paths[name] = Path(tmp) / f"int8-{i}.onnx"
            seconds = _quantize(fp32, paths[name], calibration, ops, method)
            graphs[name] = {"ops": ops or "all", "calibration": method, "quantize_s": seconds}
        graphs["fp32"] = {}
        for name, path in paths.items():
            session = _session(path)
            _run(session, batches[:1], keys)  # warm-up
            times = []
            for _ in range(3):
                start = time.perf_counter()
                features[name] = _run(session, batches, keys)
                times.append(time.perf_counter() - start)
            graphs[name]["images_per_s"] = len(rows) / statistics.median(times)
            graphs[name]["mb"] = path.stat().st_size / 1e6
    layers = [backbone.layers[-1].name, PRE_LOGITS]
    settings = ProfileParams()
    y = list(labels[rows])
    for name in features:
        probes = probe_layers(
            {k: features[name][k] for k in layers},
            y,
            layers,
            settings.model_copy(update={"cache_dir": None}),
            join=False,
        )
        graphs[name]["probes"] = {p.layer: p.cv_accuracy for p in probes if p.kind == "svm"}
        graphs[name]["cosine"] = {}
        for layer in layers:
            a, b = features["fp32"][layer], features[name][layer]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            graphs[name]["cosine"][layer] = float(np.median(cos))
    m = machine()
    base = graphs["fp32"]
    rows_out = [
        [
            name,
            f"{g['images_per_s']:.1f}",
            f"{g['images_per_s'] / base['images_per_s']:.2f}x",
            f"{g['mb']:.1f}",
            *(
                f"{g['probes'][ly]:.3f} ({100 * (g['probes'][ly] - base['probes'][ly]):+.1f}), "
                f"cos {g['cosine'][ly]:.3f}"
                for ly in layers
            ),
        ]
        for name, g in ((n, graphs[n]) for n in paths)
    ]
    title = (
        f"Static INT8 (QDQ, per-channel, {args.calibration} calibration images) against fp32, "
        f"ONNX Runtime, {backbone.spec} on {args.dataset.name} ({len(rows)} training images; "
        f"probe: linear SVM 3-fold CV, points against fp32; cos: median cosine to fp32) — "
        f"{stamp(m)}, {m['cpu']}, {m['cores']} cores"
    )
    table = print_table(
        title,
        ["graph", "images/s", "vs fp32", "MB", *(f"{ly} probe" for ly in layers)],
        rows_out,
    )
    results["graphs"] = graphs
    write_results("int8", {"machine": m, "args": vars(args) | {"dataset": args.dataset.name},
                           "results": results}, table)  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    main()
