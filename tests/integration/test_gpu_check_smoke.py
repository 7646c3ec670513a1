"""``benchmarks/gpu_check.py`` is the one script a session lent a GPU runs, on a machine
nobody can debug on: every step of it (the PyTorch extraction rows, the ONNX Runtime CPU
row, the fine-tuning epoch, the table and the JSON) runs here on the CPU, tiny network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def test_gpu_check_runs_every_step_on_the_cpu(tmp_path: Path, monkeypatch) -> None:
    import benchmarks._common as common
    from benchmarks import gpu_check

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    args = ["--device", "cpu", "--images", "24", "--batch-size", "8", "--workers", "0"]
    args += ["--cpu-images", "16", "--model", "timm:test_efficientnet", "--random-weights"]
    assert gpu_check.main(args) == 0

    result = json.loads((tmp_path / "gpu_check.json").read_text())
    runs = result["runs"]
    assert [r["images"] for r in runs.values()] == [24, 24, 16, 24]
    assert all(r["images_per_s"] > 0 for r in runs.values())
    assert any("ONNX Runtime" in name for name in runs)
    assert result["amp_speedup"] > 0 and result["over_cpu_path"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "over the CPU path" in table and "fine-tuning epoch" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_without_a_gpu_says_so(capsys) -> None:
    from benchmarks import gpu_check

    assert gpu_check.main([]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
