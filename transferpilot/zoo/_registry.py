"""The model zoo registry: named entries and ``scheme:`` families.

>>> backbone = create_backbone("efficientnet_lite0")  # doctest: +SKIP
>>> backbone.layers[0]
FeatureLayer(name='blocks.0', channels=16, reduction=2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from transferpilot._registry import Registry
from transferpilot.errors import ModelError
from transferpilot.zoo._backbone import Backbone


class NamedBuilder(Protocol):
    def __call__(self, *, pretrained: bool = True) -> Backbone: ...


class SchemeBuilder(Protocol):
    def __call__(self, name: str, *, arch: str | None, pretrained: bool) -> Backbone: ...


_NAMED: Registry[NamedBuilder] = Registry("model", ModelError)
_SCHEMES: Registry[tuple[SchemeBuilder, str]] = Registry("model scheme", ModelError)


def register_model(name: str) -> Callable[[NamedBuilder], NamedBuilder]:
    """Register a named backbone builder; a duplicate name raises."""
    return _NAMED.register(name)


def register_scheme(scheme: str, usage: str) -> Callable[[SchemeBuilder], SchemeBuilder]:
    """Register a ``scheme:<name>`` family of backbones (``usage`` shows the pattern)."""

    def deco(fn: SchemeBuilder) -> SchemeBuilder:
        _SCHEMES.add(scheme, (fn, usage))
        return fn

    return deco


def list_models() -> list[str]:
    """The valid model names: the named entries, then the families' patterns."""
    return sorted(_NAMED.names()) + [usage for _, (_, usage) in _SCHEMES.items()]


def describe_named() -> list[tuple[str, str, Any]]:
    """Each named model: its name, its one-line description and its preprocessing
    (:class:`~transferpilot.zoo.DataConfig`), read from the architecture built without
    its weights (no download, no weights file read)."""
    out = []
    for name in sorted(_NAMED.names()):
        builder = _NAMED.get(name)
        about = (builder.__doc__ or "").strip().splitlines()[0] if builder.__doc__ else ""
        out.append((name, about, builder(pretrained=False).data_config))
    return out


def create_backbone(name: str, *, arch: str | None = None, pretrained: bool = True) -> Backbone:
    """Build the backbone ``name`` (a named entry or ``scheme:<rest>``).

    ``arch`` is the architecture of a ``file:<path>`` checkpoint. ``pretrained=False``
    gives random weights (for tests); otherwise weights load or a
    :class:`~transferpilot.errors.ModelError` explains how to provide them.
    """
    if name in _NAMED:
        if arch:
            raise ModelError(f"model {name!r} takes no `arch`; `arch` is for file:<path> models")
        return _NAMED.get(name)(pretrained=pretrained)
    scheme, sep, rest = name.partition(":")
    if sep and scheme in _SCHEMES and rest:
        builder, _ = _SCHEMES.get(scheme)
        return builder(rest, arch=arch, pretrained=pretrained)
    raise ModelError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
