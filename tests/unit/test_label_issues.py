"""Mislabelled training images found from out-of-fold probabilities (cleanlab), and the bad
inputs of that path told plainly."""

from __future__ import annotations

import pickle

import numpy as np

from transferpilot.config import TrainParams
from transferpilot.estimators import LinearClassifier
from transferpilot.label_issues import find_label_issues, probe_proba

CLASSES = ["ant", "bee", "cat"]


def blobs(per_class: int = 60, flip: int = 9, seed: int = 0):
    """Three separable clusters; ``flip`` images given another class's label."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(3), per_class)
    X = rng.normal(size=(len(truth), 16)) + 4.0 * np.eye(3, 16)[truth]
    flipped = rng.choice(len(truth), flip, replace=False)
    given = truth.copy()
    given[flipped] = (truth[flipped] + 1) % 3
    paths = [f"img/{CLASSES[g]}/{i}.png" for i, g in enumerate(given)]
    return X.astype(np.float32), np.array(CLASSES)[given], np.array(CLASSES)[truth], paths, flipped


def test_flipped_labels_are_found_with_the_label_they_should_have() -> None:
    X, given, truth, paths, flipped = blobs()
    head = LinearClassifier("linear", c_grid=(0.1, 1.0), cv_folds=3).fit(X, given)
    proba = head.out_of_fold_proba()
    assert proba is not None and proba.shape == (len(given), 3)
    issues = find_label_issues(paths, given, proba, list(head.classes_), source="a test head")
    found = {paths.index(i.path) for i in issues.issues}
    hits = found & set(flipped.tolist())
    assert len(hits) / len(found) >= 0.6 and len(hits) / len(flipped) >= 0.8  # precision, recall
    for issue in issues.issues:
        i = paths.index(issue.path)
        if i in hits:
            assert (issue.given, issue.suggested) == (given[i], truth[i])
            assert issue.given_prob < issue.suggested_prob
    ranks = [i.given_prob for i in issues.issues]
    assert ranks == sorted(ranks)  # the most suspect first
    assert issues.checked == len(given) and "look mislabelled" in issues.words()


def test_the_out_of_fold_probabilities_are_evidence_not_part_of_the_saved_head() -> None:
    X, given, *_ = blobs(per_class=20, flip=0)
    head = LinearClassifier("svm", c_grid=(1.0,), cv_folds=2).fit(X, given)
    assert head.out_of_fold_proba() is not None
    loaded = pickle.loads(pickle.dumps(head))
    assert loaded.out_of_fold_proba() is None
    np.testing.assert_allclose(loaded.predict_proba(X), head.predict_proba(X))


def test_a_class_with_one_image_is_reported_not_raised() -> None:
    labels = ["ant"] * 5 + ["bee"]
    proba = np.full((6, 2), 0.5)
    issues = find_label_issues([f"{i}.png" for i in range(6)], labels, proba, ["ant", "bee"],
                               source="x")  # fmt: skip
    assert issues.count == 0 and "fewer than 2 training images (bee)" in issues.skipped
    assert issues.words().startswith("Label issues were not looked for")
    assert probe_proba(np.eye(6, 3), labels, TrainParams()) is None  # no CV on one image


def test_a_whole_class_flagged_is_a_warning_about_the_class() -> None:
    labels = ["ant"] * 8 + ["bee"] * 8
    proba = np.tile([0.9, 0.1], (16, 1))  # every 'bee' looks like an 'ant'
    issues = find_label_issues([f"{i}.png" for i in range(16)], labels, proba, ["ant", "bee"],
                               source="x")  # fmt: skip
    assert {i.given for i in issues.issues} == {"bee"} and issues.whole == ("bee",)
    assert (
        len(issues.warnings) == 1
        and "training images of class 'bee' are flagged" in (issues.warnings[0])
    )
    assert issues.droppable() == set()  # a question about the class: nothing is dropped
