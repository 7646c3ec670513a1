"""Use a pretrained model as-is: top-k ImageNet labels for images (the seed's third scenario).

>>> from transferpilot.zoo import create_backbone
>>> backbone = create_backbone("efficientnet_lite0")
>>> preds = predict_images(backbone, [Path("cat.jpg")])  # doctest: +SKIP
>>> preds[0].top[0].label  # doctest: +SKIP
'tabby'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from transferpilot.images import open_rgb
from transferpilot.predictor import Guess, Prediction
from transferpilot.zoo import Backbone


def predict_images(
    backbone: Backbone,
    images: Sequence[Path],
    *,
    top_k: int = 5,
    batch_size: int = 16,
    device: torch.device | None = None,
) -> list[Prediction]:
    """Classify each image with the backbone's own head; unreadable files get an ``error``."""
    device = device or torch.device("cpu")
    model = backbone.model.to(device).eval()
    transform = backbone.data_config.transform()
    k = max(1, min(top_k, backbone.num_classes))
    results: dict[int, Prediction] = {}
    batch: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        x = torch.stack([t for _, t in batch]).to(device)
        with torch.inference_mode():
            probs = model(x).float().softmax(-1).cpu()
        values, indices = probs.topk(k, dim=-1)
        for (i, _), vals, idxs in zip(batch, values, indices, strict=True):
            top = tuple(
                Guess(backbone.class_names[int(j)], int(j), round(float(v), 6))
                for v, j in zip(vals, idxs, strict=True)
            )
            results[i] = Prediction(str(images[i]), top)
        batch.clear()

    for i, path in enumerate(images):
        try:
            batch.append((i, transform(open_rgb(Path(path)))))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            results[i] = Prediction(str(path), error=f"{type(err).__name__}: {err}")
        if len(batch) >= batch_size:
            flush()
    flush()
    return [results[i] for i in range(len(images))]
