"""`transferpilot profile` puts each shared dataset in its quadrant (skipped without ../shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.shared, pytest.mark.slow]

# From ../shared/datasets/SOURCES.md: one dataset per quadrant.
QUADRANTS = {
    "hymenoptera": "small/similar",
    "brain_tumor_mri": "small/different",
    "mnist": "large/different",
    "imagenette": "large/similar",
}


@pytest.mark.parametrize("name", list(QUADRANTS))
def test_each_dataset_lands_in_its_quadrant(
    shared_datasets: Path, tmp_path: Path, name: str
) -> None:
    cmd = [
        str(Path(sys.executable).parent / "transferpilot"),
        "-q",
        "profile",
        str(shared_datasets / name),
        "--json",
        "--sample",
        "400",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # No time budget: the veto depends on a throughput probe, i.e. on the machine's load
    # (tests/unit/test_decide.py covers it); here the quadrant rules alone decide.
    (tmp_path / "params.yaml").write_text("decide:\n  budget_minutes: null\n")
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["quadrant"] == QUADRANTS[name], out["reason"]
    table = {  # the seed's table: the prior
        "small/similar": "linear",
        "small/different": "svm",
        "large/similar": "finetune",
        "large/different": "finetune",
    }[out["quadrant"]]
    chosen = [c for c in out["candidates"] if c["verdict"] == "chosen"]
    assert [(c["strategy"], c["layer"]) for c in chosen] == [(out["strategy"], out["layer"])]
    if table == "finetune":
        assert out["strategy"] == "finetune", out["reason"]
    elif out["strategy"] != table:  # overturned by held-in evidence, and the reason says so
        words = ("more than one standard error", "cross-validates better")
        assert any(w in out["reason"] for w in words), out["reason"]
    scored = [c["score"] for c in out["candidates"] if c["score"] is not None]
    if out["strategy"] != "finetune":  # nothing scored clearly above the choice was passed over
        best = max(scored)
        assert chosen[0]["score"] >= best - 2 * max(c["spread"] for c in chosen) - 1e-9
    assert out["baseline_score"] is not None
    assert (out["transfer_gain"] is None) == (out["strategy"] == "finetune")
    assert str(round(out["similarity"], 2)) in out["reason"]
