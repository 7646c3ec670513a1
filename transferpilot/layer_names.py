"""Names of the two outputs every backbone has beside its candidate layers, and how a
linear model reads a layer. No heavy imports: the pure ``decide`` rule uses these too."""

from __future__ import annotations

import numpy as np

#: The CNN codes: the pooled activations the ImageNet classifier reads.
PRE_LOGITS = "pre_logits"
#: The ImageNet classifier's 1,000 outputs.
LOGITS = "logits"
#: The top of the network, where the seed's "linear classifier on CNN codes" reads.
TOP_LAYERS = (PRE_LOGITS, LOGITS)
#: No transfer at all: the network's (normalised) input, average-pooled to
#: ``PIXEL_GRID`` x ``PIXEL_GRID`` x 3. The baseline every transfer has to beat.
PIXELS = "pixels"
PIXEL_GRID = 16


#: Joins layer names into one candidate input, their features side by side
#: (``blocks.6+pre_logits``). Only pooled feature layers join: not ``logits``, ``pixels``.
JOIN = "+"


def parts(layer: str) -> list[str]:
    """The layers a (possibly joined) input name is made of."""
    return layer.split(JOIN)


def joinable(layer: str) -> bool:
    """Whether ``layer`` may be part of a joined input."""
    return layer not in (LOGITS, PIXELS) and JOIN not in layer


def is_transfer(layer: str) -> bool:
    """Whether a classifier on ``layer`` uses the pretrained network (all but ``pixels``)."""
    return layer != PIXELS


def linear_inputs(name: str, array: np.ndarray) -> np.ndarray:
    """A layer's features as a linear model reads them: (N, D) float32.

    ``logits`` become log-probabilities (log-softmax): the pretrained head's own
    answer over the 1,000 ImageNet classes, a candidate layer like any other.
    """
    x = np.asarray(array, dtype=np.float32)
    if name == LOGITS:
        shifted = x - x.max(axis=1, keepdims=True)
        x = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return x.astype(np.float32, copy=False)
