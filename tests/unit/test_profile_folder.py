"""What a kept `transferpilot profile` result is keyed by: it is reused only when nothing
it depends on changed."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from transferpilot.config import Params
from transferpilot.intake import Record
from transferpilot.profile_folder import assessment_path


def _records() -> list[Record]:
    return [
        Record(Path(f"img/{c}/{i}.png"), c, "train", f"{c}{i}" * 8, 24, 24, "RGB", "")
        for c in ("a", "b")
        for i in range(3)
    ]


def test_the_same_images_and_settings_find_the_same_result(tmp_path: Path) -> None:
    params = Params().model_copy(
        update={"profile": Params().profile.model_copy(update={"cache_dir": tmp_path})}
    )
    path = assessment_path(_records(), params, 0)
    assert path is not None and path.parent == tmp_path / "assessments"
    assert assessment_path(_records(), params, 0) == path

    relabelled = _records()
    relabelled[0] = replace(relabelled[0], label="b")
    resplit = _records()
    resplit[0] = replace(resplit[0], split="val")
    edited = _records()
    edited[0] = replace(edited[0], sha256="f" * 64)
    probes = params.model_copy(
        update={"profile": params.profile.model_copy(update={"probe_folds": 2})}
    )
    budget = params.model_copy(
        update={"decide": params.decide.model_copy(update={"budget_minutes": 5})}
    )
    others = {
        assessment_path(relabelled, params, 0),
        assessment_path(resplit, params, 0),
        assessment_path(edited, params, 0),
        assessment_path(_records()[1:], params, 0),
        assessment_path(_records(), probes, 0),
        assessment_path(_records(), budget, 0),
        assessment_path(_records(), params, 100),
    }
    assert path not in others and len(others) == 7


def test_no_cache_dir_keeps_nothing() -> None:
    params = Params()
    params = params.model_copy(
        update={"profile": params.profile.model_copy(update={"cache_dir": None})}
    )
    assert assessment_path(_records(), params, 0) is None


def test_a_damaged_or_older_kept_result_is_measured_again(tmp_path: Path) -> None:
    from transferpilot.profile_folder import _read_assessment

    damaged, older = tmp_path / "damaged.json", tmp_path / "older.json"
    damaged.write_text('{"format": 1, "profile": ')
    older.write_text('{"format": 0, "profile": {}, "decision": {}}')
    assert _read_assessment(damaged) is None and _read_assessment(older) is None
    assert _read_assessment(tmp_path / "absent.json") is None


def test_a_changed_reference_folder_or_a_deleted_timing_is_measured_again(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TRANSFERPILOT_CACHE", str(tmp_path / "user"))
    reference = tmp_path / "reference"
    (reference / "any").mkdir(parents=True)
    (reference / "any" / "a.png").write_bytes(b"one")
    profile = Params().profile.model_copy(
        update={"cache_dir": tmp_path / "kept", "reference": reference}
    )
    params = Params().model_copy(update={"profile": profile})
    timing = tmp_path / "user" / "throughput" / "abc.json"
    timing.parent.mkdir(parents=True)
    timing.write_text("{}")
    before = assessment_path(_records(), params, 0)
    (reference / "any" / "b.png").write_bytes(b"two")
    with_new_reference = assessment_path(_records(), params, 0)
    timing.unlink()
    without_timing = assessment_path(_records(), params, 0)
    assert len({before, with_new_reference, without_timing}) == 3


def test_profile_json_is_one_document_whatever_the_work_prints(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a library prints while profiling (Python or a C++ exporter writing to file
    descriptor 1) goes to stderr under ``--json``; stdout parses as one JSON document."""
    from transferpilot import cli, profile_folder

    class Noisy:
        def summary(self) -> dict:
            return {"strategy": "linear", "similarity": 0.496}

    def noisy_profile(*args, **kwargs) -> Noisy:
        os.write(1, b"graph(%image : Float(1, 3, 260, 260)):\n" * 20)
        print("and a print")
        return Noisy()

    monkeypatch.setattr(profile_folder, "profile_folder", noisy_profile)
    cli.app(["profile", str(tmp_path), "--json", "--params", str(tmp_path / "none.yaml")],
            standalone_mode=False)  # fmt: skip
    out, err = capfd.readouterr()
    assert json.loads(out) == {"strategy": "linear", "similarity": 0.496}
    assert "graph(%image" in err and "and a print" in err
