"""The profile as pictures: the similarity depth profile and the per-layer probe scores."""

from __future__ import annotations

from pathlib import Path

from transferpilot.plotting import pyplot, save_figure
from transferpilot.profile import Profile


def plot_similarity(profile: Profile, path: Path) -> Path | None:
    """Overlap with ImageNet's BatchNorm statistics, layer by layer (None without BatchNorm)."""
    depth = profile.similarity.depth
    if not depth:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    names = [g.layer for g in depth]
    ax.plot(names, [g.overlap for g in depth], marker="o", color="#1f77b4")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("overlap with ImageNet\nexp(-mean KL)")
    ax.set_xlabel("layer (early → late)")
    ax.set_title(f"Similarity to ImageNet by depth — score {profile.similarity.score:.2f}")
    ax.grid(alpha=0.3)
    ax.tick_params(axis="x", rotation=30)
    return save_figure(fig, path)


def plot_probes(profile: Profile, path: Path) -> Path:
    """Cross-validated linear-probe accuracy of every candidate layer."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    probes = profile.layer_probes
    ax.bar([p.layer for p in probes], [p.cv_accuracy for p in probes], color="#2ca02c")
    chance = 1.0 / max(profile.size.n_classes, 1)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance {chance:.2f}")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("CV accuracy")
    ax.set_title("Linear probe on each layer (training images, cross-validated)")
    ax.legend(loc="lower right")
    ax.tick_params(axis="x", rotation=30)
    return save_figure(fig, path)
