"""Profiles made by hand, for the decision's tests: a dataset's size, its similarity and its
layer probes, without measuring anything."""

from __future__ import annotations

from transferpilot.profile import (
    HeadMeasures,
    LayerGap,
    LayerProbe,
    Profile,
    Similarity,
    SizeProfile,
    Throughput,
)

LAYERS = ["blocks.0", "blocks.2", "blocks.4", "blocks.6"]


def make_profile(
    *,
    per_class: int,
    score: float,
    probes: dict[str, float] | None = None,
    overlaps: list[float] | None = None,
    train_rate: float = 100.0,
) -> Profile:
    probes = probes or {
        "blocks.0": 0.5,
        "blocks.2": 0.6,
        "blocks.4": 0.8,
        "blocks.6": 0.85,
        "pre_logits": 0.9,
        "logits": 0.88,
    }
    overlaps = overlaps or [0.99, 0.98, 0.97, 0.9, 0.8]
    names = [*LAYERS, "pre_logits"]
    depth = [LayerGap(n, f"{n}.bn", 8, 0.1, 0.1, o) for n, o in zip(names, overlaps, strict=True)]
    head = HeadMeasures(confidence=0.5, entropy=1 - score, certainty=score, prototype_cosine=0.2)
    n_classes = 4
    return Profile(
        model="efficientnet_lite0",
        layers=[*LAYERS, "pre_logits", "logits"],
        size=SizeProfile(
            n_images=per_class * n_classes * 5 // 4,
            n_train=per_class * n_classes,
            n_classes=n_classes,
            train_per_class={str(i): per_class for i in range(n_classes)},
            images_per_class={"min": per_class, "median": per_class, "max": per_class},
            imbalance=1.0,
            width={"min": 32, "median": 32, "max": 32},
            height={"min": 32, "median": 32, "max": 32},
            modes={"RGB": per_class * n_classes},
        ),
        similarity=Similarity(score, score, 1.0, "certainty x overlap", head, depth),
        probes=[LayerProbe(k, 8, v, 0.01, 100) for k, v in probes.items()],
        throughput=Throughput(train_rate, train_rate * 4, 16, "cpu"),
    )
