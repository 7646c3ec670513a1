"""Exporting a module to ONNX, in one place: the feature graph and the predictor use it.

The TorchScript exporter first: seconds for Lite0 where the dynamo exporter takes
tens of seconds, and it runs forward hooks as they are. A graph it cannot express
(adaptive pooling to a grid that does not divide the map, e.g. a 2x2 grid of a
7x7 map) goes through the dynamo exporter instead. Written atomically.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from transferpilot.io import stdout_redirected

log = logging.getLogger(__name__)


def onnx_export(
    module: nn.Module, example: torch.Tensor, path: Path, output_names: Sequence[str]
) -> Path:
    """Export ``module(image)`` with a dynamic batch to ``path``; the file appears whole."""
    module = module.eval().to("cpu")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    names = list(output_names)
    try:
        with warnings.catch_warnings(), stdout_redirected(None):  # a failed graph is dumped there
            warnings.simplefilter("ignore")
            common = {"input_names": ["image"], "output_names": names}
            try:
                torch.onnx.export(
                    module,
                    (example,),
                    tmp,
                    dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
                    dynamo=False,
                    opset_version=17,
                    **common,
                )
            except Exception as err:  # an operator the TorchScript exporter cannot express
                log.info("ONNX export through dynamo (%s)", str(err).splitlines()[0][:120])
                torch.onnx.export(
                    module,
                    (example,),
                    tmp,
                    dynamic_shapes=({0: "batch"},),
                    dynamo=True,
                    external_data=False,
                    **common,
                )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
