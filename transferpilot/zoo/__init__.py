"""The model zoo: pretrained ImageNet classifiers by name.

Names: ``efficientnet_lite0`` (bundled, offline, the default), ``timm:<name>``,
``torchvision:<name>``, and ``file:<path>`` with an ``arch``.

>>> from transferpilot.zoo import create_backbone
>>> backbone = create_backbone("efficientnet_lite0")  # doctest: +SKIP
>>> [layer.name for layer in backbone.layers]  # doctest: +SKIP
['blocks.0', 'blocks.1', 'blocks.2', 'blocks.4', 'blocks.6']
"""

from transferpilot.zoo import _file, _timm, _torchvision  # noqa: F401  (registration)
from transferpilot.zoo._backbone import (
    LOGITS,
    PRE_LOGITS,
    Backbone,
    DataConfig,
    FeatureLayer,
    imagenet_class_names,
    imagenet_indices,
)
from transferpilot.zoo._registry import (
    create_backbone,
    describe_named,
    list_models,
    register_model,
)

__all__ = [
    "LOGITS",
    "PRE_LOGITS",
    "Backbone",
    "DataConfig",
    "FeatureLayer",
    "create_backbone",
    "describe_named",
    "imagenet_class_names",
    "imagenet_indices",
    "list_models",
    "register_model",
]
