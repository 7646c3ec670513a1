"""Champion and challenger: the paired comparison and the label check that decide a promotion."""

from __future__ import annotations

import numpy as np
import pytest

from transferpilot.errors import DataError
from transferpilot.promotion import compare, label_check, paired_difference


def keyed(correct: list[bool]) -> dict[str, bool]:
    return {f"{i:064x}": c for i, c in enumerate(correct)}


def test_an_equal_challenger_is_promoted_with_a_zero_interval() -> None:
    same = keyed([True] * 80 + [False] * 20)
    result = compare(same, same, margin=0.005)
    assert result.promoted and (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.reason().startswith("promoted: challenger 80.0 % vs champion 80.0 %")


def test_a_challenger_worse_by_more_than_the_margin_is_not_promoted() -> None:
    champion = keyed([True] * 90 + [False] * 10)
    challenger = keyed([True] * 88 + [False] * 12)  # two images lost: -2 points
    result = compare(challenger, champion, margin=0.005)
    assert not result.promoted and result.difference == pytest.approx(-0.02)
    assert result.low < -0.02 < result.high <= 0.0
    assert "worse by more than the 0.5-point margin" in result.reason()
    assert compare(challenger, champion, margin=0.03).promoted


def test_the_paired_interval_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(0)
    champion = rng.random(400) < 0.8
    challenger = champion.copy()
    flip = rng.choice(400, 40, replace=False)
    challenger[flip[:28]] = True  # 28 turned right (some already were), 12 turned wrong
    challenger[flip[28:]] = False
    diff, low, high = paired_difference(challenger, champion)
    d = challenger.astype(float) - champion
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert diff == pytest.approx(d.mean())
    assert low == pytest.approx(diff - half, abs=0.006) and high == pytest.approx(
        diff + half, abs=0.006
    )


def test_only_shared_images_are_compared_and_none_shared_is_an_error() -> None:
    champion = {"a" * 64: True, "b" * 64: False}
    challenger = {"a" * 64: True, "c" * 64: True}
    assert compare(challenger, champion, margin=0.0).images == 1
    with pytest.raises(DataError, match="share no evaluation image"):
        compare({"c" * 64: True}, champion, margin=0.0)


def test_a_batch_flagged_far_more_often_than_before_fails_the_label_check() -> None:
    mislabelled = label_check(111, 322, 30, 385, max_rise=0.10)  # 34 % against 8 %
    assert not mislabelled.passed and mislabelled.p_value < 1e-10
    assert "34 % of the 322 new training images look mislabelled" in mislabelled.reason()
    assert label_check(15, 160, 16, 233, max_rise=0.10).passed  # 9 % against 7 %: chance
    assert label_check(9, 20, 1, 20, max_rise=0.50).passed  # a rise under the allowed one
    assert label_check(0, 0, 3, 40, max_rise=0.10).passed  # no new training image
