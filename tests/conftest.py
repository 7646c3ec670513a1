"""Shared fixtures. The suite runs offline: no hub downloads, no analytics."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Offline and quiet, before anything imports DVC, Prefect or huggingface_hub.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
# Throughput measurements are kept per machine in the user's cache: not the tests'.
os.environ["TRANSFERPILOT_CACHE"] = tempfile.mkdtemp(prefix="transferpilot-test-cache-")

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = PROJECT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets``, or skip: the real datasets are not part of the project."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is absent (the real datasets are only on CI/dev machines)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def lite0():
    """The bundled EfficientNet-Lite0 with its real ImageNet weights (built once)."""
    from transferpilot.zoo import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def sample_images() -> dict[str, Path]:
    """scikit-learn's two bundled photos: china.jpg and flower.jpg."""
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    return {name: folder / name for name in ("china.jpg", "flower.jpg")}


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (and database) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
