"""Benchmark: `transferpilot profile` cold against warm (features, probes and throughput kept).

    python -m benchmarks.profile_cache [DATASET_DIR] [--repeats R]

On ``../shared/datasets/hymenoptera`` when present (else the embedded digits),
the command a user types, timed as a whole (imports included): cold = empty
feature, probe and throughput caches; warm = the same command again (the kept
result, read back after the intake); then a decide setting changed, so the
profile is computed again from the cached features, probes and throughput.
Target: warm >= 10x faster than cold. Writes
``benchmarks/results/profile_cache.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import SHARED, machine, median, print_table, stamp, write_results

BIN = Path(sys.executable).parent / "transferpilot"


def profile_once(folder: Path, work: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(BIN), "-q", "profile", str(folder), "--json", "--sample", "0"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", nargs="?", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tp-bench-profile-") as tmp:
        work = Path(tmp)
        folder = args.dataset or SHARED / "hymenoptera"
        if not folder.is_dir():
            subprocess.run([str(BIN), "digits", str(work / "digits")], check=True)
            folder = work / "digits"
        cold, warm, changed = [], [], []
        for i in range(args.repeats):
            run_dir = work / f"run{i}"
            run_dir.mkdir()
            env = {**os.environ, "TRANSFERPILOT_CACHE": str(run_dir / "user-cache")}
            cold.append(profile_once(folder.resolve(), run_dir, env))
            warm.append(profile_once(folder.resolve(), run_dir, env))
            (run_dir / "params.yaml").write_text("decide:\n  budget_minutes: 30\n")
            changed.append(profile_once(folder.resolve(), run_dir, env))
    ratio = median(cold) / median(warm)
    m = machine()
    rows = [
        ["cold (empty caches)", median(cold), "reference", ""],
        ["warm (the same command again)", median(warm), f"{ratio:.1f}x faster", ">= 10x"],
        [
            "a decide setting changed (features, probes, throughput cached)",
            median(changed),
            f"{median(cold) / median(changed):.1f}x faster",
            "",
        ],
    ]
    title = (
        f"`transferpilot profile {folder.name} --sample 0`, median of {args.repeats} — "
        f"{stamp(m)}, {m['cpu']}, {m['cores']} cores"
    )
    table = print_table(title, ["run", "seconds", "ratio", "target"], rows)
    payload = {
        "machine": m,
        "dataset": folder.name,
        "cold_s": cold,
        "warm_s": warm,
        "settings_changed_s": changed,
    }
    write_results("profile_cache", payload | {"warm_speedup": ratio}, table)


if __name__ == "__main__":
    main()
