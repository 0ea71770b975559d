"""Localization mAP as ActivityNet's eval_detection.py computes it: hand-worked cases, and an
independent implementation (tests/anet_reference.py: greedy matching, AP from the precision
envelope) on random cases."""

from __future__ import annotations

import random

import numpy as np
import pytest
from anet_reference import reference_map

from stages.localize.scoring import ANET_KEY, THRESHOLDS, average_precision, localization_metrics, segment_iou


def ap_of(gt, preds, threshold):
    return float(average_precision(gt, preds, [threshold])[gt[0][3]][0])


def test_segment_iou_by_hand():
    got = segment_iou(np.array([0.0, 10.0]), np.array([[0.0, 10.0], [5.0, 15.0], [20.0, 30.0], [2.0, 4.0]]))
    assert got == pytest.approx([1.0, 5 / 15, 0.0, 0.2])


def test_a_ground_truth_is_matched_once_and_a_tiou_equal_to_the_threshold_counts():
    # g1 [0, 10], g2 [20, 30]. p1 [0, 10] takes g1; p2 [1, 10] overlaps g1 by 0.9, but g1 is taken,
    # and g2 not at all: a false positive; p3 [20, 25] has tIoU 0.5 with g2.
    gt = [("v", 0, 10, "a"), ("v", 20, 30, "a")]
    preds = [("v", 0, 10, "a", 0.9), ("v", 1, 10, "a", 0.8), ("v", 20, 25, "a", 0.7)]
    # at 0.5: tp fp tp -> recall .5 .5 1, precision 1 .5 2/3 -> AP = .5 * 1 + .5 * 2/3
    assert ap_of(gt, preds, 0.5) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # at 0.7: tp fp fp -> recall stays .5 -> AP = .5
    assert ap_of(gt, preds, 0.7) == pytest.approx(0.5)


def test_the_highest_score_takes_the_ground_truth_first():
    # Both predictions overlap g enough; the higher-scoring but worse one takes it, the better one is a false positive.
    gt = [("v", 0, 10, "a")]
    preds = [("v", 0, 10, "a", 0.4), ("v", 0, 8, "a", 0.9)]
    # ranking: [0, 8] tp (tIoU .8), [0, 10] fp -> precision 1 at recall 1: AP 1 at 0.5 ...
    assert ap_of(gt, preds, 0.5) == pytest.approx(1.0)
    # ... but at 0.9 [0, 8] misses and [0, 10] takes it second: precision 1/2 at recall 1
    assert ap_of(gt, preds, 0.9) == pytest.approx(0.5)


def test_predictions_in_other_videos_are_false_positives_and_a_class_without_predictions_scores_zero():
    gt = [("v", 0, 10, "a"), ("w", 5, 9, "b")]
    preds = [("x", 0, 10, "a", 0.95), ("v", 0, 10, "a", 0.9), ("v", 0, 10, "c", 0.99)]
    m = localization_metrics(gt, preds)
    # class a: fp then tp -> precision 1/2 at recall 1; class b: no predictions -> 0; class c has no ground truth
    assert m["per_class"]["a"]["AP@0.5"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["AP@0.5"] == 0.0
    assert set(m["per_class"]) == {"a", "b"}
    assert m["mAP@0.5"] == pytest.approx(0.25)
    assert m["mAP"] == pytest.approx(0.25)
    assert m[ANET_KEY] == pytest.approx(0.25)


def test_metric_keys_are_flat_and_the_mean_is_over_the_five_thresholds():
    gt = [("v", 0, 10, "a")]
    preds = [("v", 0, 6.6, "a", 0.9)]  # tIoU .66: a hit at .3 .. .6, a miss at .7
    m = localization_metrics(gt, preds)
    assert [m[f"mAP@{t:g}"] for t in THRESHOLDS] == [1, 1, 1, 1, 0]
    assert m["mAP"] == pytest.approx(0.8)
    assert m[ANET_KEY] == pytest.approx(0.4)  # of 0.5:0.05:0.95, .5 .55 .6 .65 hit: 4 of 10


@pytest.mark.parametrize("seed", range(6))
def test_against_an_independent_implementation_on_random_cases(seed):
    rng = random.Random(seed)
    gt, preds = [], []
    for v in range(4):
        for _ in range(rng.randint(1, 5)):
            s = rng.uniform(0, 100)
            gt.append((f"v{v}", s, s + rng.uniform(1, 20), rng.choice("ab")))
    for vid, s, e, label in gt:
        for _ in range(rng.randint(0, 3)):  # near misses and duplicates
            d = (e - s) * 0.4
            preds.append((vid, s + rng.uniform(-d, d), e + rng.uniform(-d, d), label, rng.random()))
    for _ in range(10):  # strays
        s = rng.uniform(0, 100)
        preds.append((f"v{rng.randrange(5)}", s, s + rng.uniform(1, 20), rng.choice("ab"), rng.random()))
    m = localization_metrics(gt, preds)
    for t in THRESHOLDS:
        assert m[f"mAP@{t:g}"] == pytest.approx(reference_map(gt, preds, t), abs=1e-6)
