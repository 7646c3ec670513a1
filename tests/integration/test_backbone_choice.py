"""model.name auto through `dvc repro` and `transferpilot profile`, with the real offline
Lite weights: the ranking is written, every later stage uses the chosen backbone, and the
report and the decision show why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.projects import run, working_copy, write_params

pytestmark = pytest.mark.slow

CANDIDATES = ["efficientnet_lite0", "efficientnet_lite1"]


@pytest.fixture(scope="module")
def auto_project(tmp_path_factory: pytest.TempPathFactory, project_root: Path) -> Path:
    work = working_copy(tmp_path_factory.mktemp("auto") / "work", project_root)
    write_params(work, {"model": {"name": "auto", "candidates": CANDIDATES, "select_images": 20}})
    run(["dvc", "repro"], work)
    return work


def test_repro_ranks_the_candidates_and_every_stage_uses_the_one_chosen(
    auto_project: Path,
) -> None:
    ranking = json.loads((auto_project / "data/features/backbones.json").read_text())
    chosen = ranking["chosen"]
    assert chosen in CANDIDATES
    assert sorted(s["model"] for s in ranking["scores"]) == sorted(CANDIDATES)
    assert [s["model"] for s in ranking["scores"] if s["chosen"]] == [chosen]
    assert ranking["sample_images"] == 8  # the 8 training images of the tiny set: all of them
    for score in ranking["scores"]:
        assert 0.0 <= score["probe_accuracy"] <= 1.0 and score["verdict"]
        assert score["extract_minutes"] is None  # the working copy measures no throughput
    meta = json.loads((auto_project / "data/features/meta.json").read_text())
    profile = json.loads((auto_project / "data/profile/profile.json").read_text())
    decision = json.loads((auto_project / "data/decision/decision.json").read_text())
    trained = json.loads((auto_project / "models/train/train.json").read_text())
    assert meta["model"] == profile["model"] == chosen
    assert trained["model"] == chosen
    assert profile["backbones"]["chosen"] == chosen
    assert decision["reason"].startswith(f"Backbone {chosen}: ")  # then the ranking's words
    assert ranking["reason"] in decision["reason"] and "linear probe" in ranking["reason"]
    assert decision["evidence"]["backbone"] == chosen
    report = (auto_project / "reports/report.md").read_text()
    assert "Backbones measured (`model.name: auto`)" in report
    assert f"**{chosen}**" in report


def test_params_yaml_keeps_auto_and_a_second_repro_runs_nothing(auto_project: Path) -> None:
    assert yaml.safe_load((auto_project / "params.yaml").read_text())["model"]["name"] == "auto"
    again = run(["dvc", "repro"], auto_project)
    assert "Running stage" not in again.stdout


def test_profile_json_has_the_backbones_ranking(auto_project: Path) -> None:
    out = run(["transferpilot", "profile", "data/tiny", "--model", "auto", "--json"], auto_project)
    summary = json.loads(out.stdout)
    rows = summary["backbones"]
    assert sorted(r["model"] for r in rows) == sorted(CANDIDATES)
    assert sum(r["chosen"] for r in rows) == 1
    assert summary["model"] == next(r["model"] for r in rows if r["chosen"])
    assert {"probe_accuracy", "knn_accuracy", "logme", "layer", "cost_minutes"} <= set(rows[0])


def test_the_cluster_plan_ranks_the_same_and_finds_the_chosen_features_cached(
    auto_project: Path,
) -> None:
    """`--cluster`: the flow's shard plan ranks as the stage did (from the same caches) and
    extracts with the backbone chosen; after `dvc repro` there is nothing left to compute."""
    from transferpilot.stages.extract import plan_shards

    chosen = json.loads((auto_project / "data/features/backbones.json").read_text())["chosen"]
    assert plan_shards(auto_project, 2) == (chosen, [])
