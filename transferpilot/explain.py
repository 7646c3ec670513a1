"""Where a trained model looked: a heat map over each image as the model saw it.

How the map is made depends only on the module a strategy exports
(:meth:`~transferpilot.strategies.Strategy.predictor`), never on the strategy's name:

- **A head on a layer's pooled features** (softmax regression, the linear SVM, the
  pretrained head as it is): Grad-CAM at that layer. For a linear head on
  average-pooled features the gradient of a class's score at each location of the map
  is the head's weight over the number of locations, so Grad-CAM *is* the class
  activation map (CAM, Zhou et al. 2016): the head's weights over the feature map,
  found by one backward pass through the head. A joined input adds its layers' maps.
- **A fine-tuned network**: Grad-CAM (Selvaraju et al. 2017) at its last
  convolutional feature map.
- **The no-transfer baseline** (a kernel SVM on the pixels): gradient x input, the
  pixels that pushed the score up.

Both methods are captum's (``LayerGradCam``, ``InputXGradient``), the attribution
library PyTorch maintains. Maps are of the predicted class unless a class is asked for,
positive evidence only, scaled to [0, 1] per image, at the model's input resolution.

>>> explainer = Explainer(*strategy.predictor(), strategy.classes_)  # doctest: +SKIP
>>> [e.label for e in explainer.explain_files([Path("cat.jpg")])]  # doctest: +SKIP
['cat']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from transferpilot.errors import ModelError
from transferpilot.heads import FeatureClassifier, NetworkClassifier
from transferpilot.images import open_rgb
from transferpilot.layer_names import PIXELS, TOP_LAYERS, parts
from transferpilot.predictor import pixels_for
from transferpilot.zoo import DataConfig

#: How much of the heat colour an overlay mixes into the image.
OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class Explanation:
    """One image's map: ``pixels`` (H, W, 3) uint8 as the model saw it (resized,
    cropped), ``heat`` (H, W) float32 in [0, 1], for class ``label`` at ``prob``."""

    path: str
    pixels: np.ndarray
    heat: np.ndarray
    label: str
    prob: float

    def overlay(self) -> Image.Image:
        """The image with the map laid over it in the 'jet' colours (red: looked at)."""
        from matplotlib import colormaps  # defers matplotlib

        colour = colormaps["jet"](self.heat)[..., :3]
        mixed = (1 - OVERLAY_ALPHA) * self.pixels / 255.0 + OVERLAY_ALPHA * colour
        return Image.fromarray(np.clip(mixed * 255 + 0.5, 0, 255).astype(np.uint8))


def last_map(model: nn.Module, sample: torch.Tensor) -> tuple[str, nn.Module]:
    """``(name, module)`` of the last module of ``model`` that outputs a spatial map
    (B, C, h, w) with h * w > 1, called once per forward pass: where Grad-CAM reads a
    convolutional network. A :class:`ModelError` when there is none (a transformer)."""
    seen: list[tuple[str, nn.Module]] = []
    calls: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, _args: object, out: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
                seen.append((name, module))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    once = [(n, m) for n, m in seen if calls[n] == 1]
    if not once:
        raise ModelError(
            f"{type(model).__name__} has no convolutional feature map to explain "
            "(a transformer, or a network of vectors): no class activation map"
        )
    return once[-1]


def _named(root: nn.Module, layer: str) -> nn.Module:
    for name, module in root.named_modules():
        if name == layer or name.endswith("." + layer):
            return module
    raise ModelError(f"no module named {layer!r} in the network: cannot map that layer")


def _method(module: nn.Module, config: DataConfig) -> tuple[str, list[nn.Module] | None]:
    """(words, the layers Grad-CAM reads) for ``module``; ``None``: gradient x input."""
    sample = torch.zeros(1, *config.input_size)
    if isinstance(module, FeatureClassifier):
        if module.layer == PIXELS:
            return "gradient x input on the pixels (the baseline has no feature map)", None
        layers, names = [], []
        for part in parts(module.layer):
            if part in TOP_LAYERS:  # the codes are pooled from the network's last map
                name, found = last_map(module.features, module.normalise(sample))
                names.append(f"{part} (its map, {name.removeprefix('model.')})")
            else:
                found = _named(module.features, part)
                names.append(part)
            layers.append(found)
        return f"Grad-CAM at {' + '.join(names)} — the head's weights over the map", layers
    if isinstance(module, NetworkClassifier):
        name, found = last_map(module.model, module.normalise(sample))
        return f"Grad-CAM at {name}, the network's last feature map", [found]
    raise ModelError(f"cannot explain a {type(module).__name__}: not a transferpilot predictor")


class Explainer:
    """Heat maps for a predictor module (a strategy's :meth:`predictor`) whose
    ``logits(images)`` are its class scores; ``classes`` names their columns.
    A :class:`ModelError` at once when the module has no map to read."""

    def __init__(self, module: nn.Module, config: DataConfig, classes: Sequence[str]) -> None:
        self.module = module.eval()
        self.device = next(module.parameters(), torch.zeros(0)).device
        self.config, self.classes = config, [str(c) for c in classes]
        self.method, self.layers = _method(self.module, config)
        #: PIL image -> (3, H, W) floats in [0, 1], resized and cropped as the model sees it
        self.pixels = pixels_for(config.as_dict())

    def heat(
        self, images: torch.Tensor, targets: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (B, classes), heat (B, H, W))`` for images (B, 3, H, W) in
        [0, 1]; the maps are of ``targets`` (default: each image's predicted class)."""
        from captum.attr import InputXGradient, LayerGradCam  # defers captum

        images = images.to(self.device)
        with torch.no_grad():
            proba = self.module.logits(images).float().softmax(-1).cpu()
        target = proba.argmax(1) if targets is None else torch.as_tensor(list(targets))
        size = images.shape[-2:]
        if self.layers is None:
            attribution = InputXGradient(self.module.logits).attribute(
                images.clone().requires_grad_(True), target=target.tolist()
            )
            heat = attribution.detach().float().sum(1).clamp_min(0).cpu()
        else:
            heat = torch.zeros(images.shape[0], *size)
            for layer in self.layers:
                cam = LayerGradCam(self.module.logits, layer).attribute(
                    images, target=target.tolist(), relu_attributions=True
                )
                heat += F.interpolate(cam.detach().float(), size=size, mode="bilinear")[:, 0].cpu()
        top = heat.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
        return proba.numpy(), (heat / top).numpy().astype(np.float32)

    def explain_files(
        self, paths: Sequence[Path | str], targets: Sequence[int] | None = None, batch: int = 8
    ) -> list[Explanation | None]:
        """An :class:`Explanation` per file (``None`` for a file that cannot be read)."""
        loaded: list[tuple[int, np.ndarray]] = []
        for i, path in enumerate(paths):
            try:
                loaded.append((i, self.pixels(open_rgb(Path(path)))))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                continue
        out: list[Explanation | None] = [None] * len(paths)
        for start in range(0, len(loaded), batch):
            chunk = loaded[start : start + batch]
            images = torch.as_tensor(np.stack([p for _, p in chunk]))
            wanted = None if targets is None else [targets[i] for i, _ in chunk]
            proba, heat = self.heat(images, wanted)
            for row, (i, pixels) in enumerate(chunk):
                k = int(proba[row].argmax()) if wanted is None else int(wanted[row])
                out[i] = Explanation(
                    str(paths[i]),
                    (pixels.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8),
                    heat[row],
                    self.classes[k],
                    float(proba[row, k]),
                )
        return out


def write_overlays(explanations: Sequence[Explanation | None], folder: Path) -> list[Path | None]:
    """Each explanation's overlay as ``folder/<image name>.png`` (a number added where
    two images share a name); the folder is created, never the images' own."""
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    written: list[Path | None] = []
    for e in explanations:
        if e is None:
            written.append(None)
            continue
        stem, n = Path(e.path).stem, 1
        name = f"{stem}.png"
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        tmp = folder / f".{name}.tmp"
        e.overlay().save(tmp, format="PNG")
        written.append(tmp.replace(folder / name))
    return written
