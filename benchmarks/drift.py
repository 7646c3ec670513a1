"""Benchmark: does the drift check see another domain, and stay quiet on the same one?

    python -m benchmarks.drift [--trials 100] [--sizes 200,500] [--share 0.2]

Two pairs of real sets, Lite0's CNN codes (``pre_logits``, cached under
``data/cache/features``): imagenette with flowers11's photos filed under its class names,
and mnist with scikit-learn's digits (the embedded default: the same ten classes, another
scanner). The reference is what a champion is trained on: up to 1,000 training images
(the check's own cap). Each trial draws a batch of new images from the validation split
(never seen by the reference): in-distribution resamples for the false-positive rate, and
batches with ``--share`` from the other domain for the power, at each size in
``--sizes``; the labels of the other domain's images are drawn from the reference's
classes. The verdict is the product's: :func:`transferpilot.drift.detect`, covariate drift
(BBSD or MMD at alpha/2 each, alpha 0.05). Target (issue #30): power >= 0.8 at 20 % out of
domain and <= 500 new images, false-positive rate <= 5 % over 100 resamples.
Writes ``benchmarks/results/drift.{json,md}``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import SHARED, dataset_setup, feature_table, publish
from transferpilot.datasets import write_digits
from transferpilot.drift import MAX_IMAGES, detect
from transferpilot.layer_names import PRE_LOGITS

PAIRS = (("imagenette", "flowers11"), ("mnist", "sklearn-digits"))


def codes(backbone, folder: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, splits) of every image in ``folder``."""
    with feature_table(backbone, folder, cache) as table:
        return np.array(table.array(PRE_LOGITS)), table.labels, table.split


def trial(ref, ref_y, pool, pool_y, other, size, share, rng, seed):
    n_other = round(share * size)
    mine = rng.choice(len(pool), size - n_other, replace=False)
    theirs = rng.choice(len(other), n_other, replace=False)
    new = np.vstack([pool[mine], other[theirs]]) if n_other else pool[mine]
    labels = [*pool_y[mine], *rng.choice(np.unique(ref_y), n_other)]
    start = time.perf_counter()
    report = detect(ref, new, ref_y, labels, seed=seed)
    return (
        report.covariate,
        {t: r.detected for t, r in report.tests.items()},
        (time.perf_counter() - start),
    )


def main() -> None:
    args, _, backbone = dataset_setup(
        __doc__.split("\n")[0], (), trials=100, sizes="200,500", share=0.2
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, other_name in PAIRS:
            folder = SHARED / name
            other_folder = (
                write_digits(Path(tmp) / "digits") if other_name == "sklearn-digits"
                else SHARED / other_name
            )  # fmt: skip
            X, y, split = codes(backbone, folder, args.cache)
            other, _, _ = codes(backbone, other_folder, args.cache)
            rng = np.random.default_rng(0)
            train = np.flatnonzero(split == "train")
            train = rng.choice(train, min(MAX_IMAGES, len(train)), replace=False)
            val = np.flatnonzero(split == "val")
            ref, ref_y, pool, pool_y = X[train], y[train], X[val], y[val]
            for size in sizes:
                for share in (0.0, args.share):
                    flagged, by_test, seconds = 0, {"bbsd": 0, "mmd": 0}, []
                    for t in range(args.trials):
                        hit, tests, s = trial(
                            ref, ref_y, pool, pool_y, other, size, share, rng, seed=t
                        )
                        flagged += hit
                        for k in by_test:
                            by_test[k] += tests.get(k, False)
                        seconds.append(s)
                    rate = flagged / args.trials
                    kind = "false-positive rate" if share == 0 else "power"
                    results.append(
                        {
                            "dataset": name, "other": other_name, "size": size, "share": share,
                            "trials": args.trials, "flagged": flagged, "rate": rate,
                            "by_test": by_test, "median_seconds": float(np.median(seconds)),
                        }
                    )  # fmt: skip
                    target = "<= 0.05" if share == 0 else ">= 0.80"
                    met = rate <= 0.05 if share == 0 else rate >= 0.8
                    rows.append(
                        [
                            name,
                            other_name if share else "-",
                            size,
                            f"{100 * share:.0f} %",
                            kind,
                            f"{rate:.2f}",
                            f"{by_test['bbsd'] / args.trials:.2f}",
                            f"{by_test['mmd'] / args.trials:.2f}",
                            f"{target} {'met' if met else 'NOT met'}",
                            f"{np.median(seconds):.1f}",
                        ]
                    )
                    print(rows[-1], flush=True)
    title = (
        f"Drift: the check (BBSD + MMD on Lite0's pre_logits, alpha 0.05) on batches of new "
        f"validation images, some from another domain under the same class names; reference "
        f"{MAX_IMAGES} training images; {args.trials} trials each"
    )
    header = [
        "dataset", "other domain", "new images", "other share", "measure", "rate",
        "BBSD alone", "MMD alone", "target", "s per check",
    ]  # fmt: skip
    publish("drift", title, header, rows, args, results)


if __name__ == "__main__":
    main()
