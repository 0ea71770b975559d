"""Temporal action localization scored as ActivityNet's official code scores it.

ActivityNet's Evaluation/eval_detection.py (ANETdetection), step by step:

- per class, the predictions of every video sorted by score, highest first;
- each prediction, in that order, is compared with the ground truths of its video by temporal IoU
  (segment_iou); it is a true positive at a threshold if its best-overlapping ground truth not yet
  taken has tIoU >= the threshold (that ground truth is then taken, once per threshold), else a
  false positive; a prediction for a video without ground truth of its class is a false positive;
- precision and recall along that ranking, and the interpolated average precision
  (interpolated_prec_rec: precision made monotone from the right, summed over recall steps);
- mAP at a threshold: the mean of that AP over the classes that have ground truth. A class with
  ground truth and no prediction scores 0; predictions of a class without ground truth are ignored.

Segments are [start, end] in seconds. THRESHOLDS are THUMOS14's usual five, ANET_THRESHOLDS
ActivityNet's ten (0.5:0.05:0.95), whose mean is its headline figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
ANET_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
ANET_KEY = "mAP@0.5:0.95"  # metrics.json's key for the mean over ANET_THRESHOLDS

# One segment: (video id, start s, end s, label) for ground truth, plus a score for a prediction.
GroundTruth = Sequence[tuple[str, float, float, str]]
Predictions = Sequence[tuple[str, float, float, str, float]]


def segment_iou(target: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """tIoU of one segment (2,) with each of candidates (n, 2) -> (n,) float64 (eval_detection's segment_iou)."""
    tt1 = np.maximum(target[0], candidates[:, 0])
    tt2 = np.minimum(target[1], candidates[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    return inter.astype(float) / union


def interpolated_prec_rec(prec: np.ndarray, rec: np.ndarray) -> float:
    """Interpolated AP of a precision/recall curve (eval_detection's interpolated_prec_rec)."""
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def class_ap(
    gt_videos: np.ndarray,
    gt_segments: np.ndarray,
    pred_videos: np.ndarray,
    pred_segments: np.ndarray,
    pred_scores: np.ndarray,
    thresholds: Sequence[float],
) -> np.ndarray:
    """AP (len(thresholds),) of one class (eval_detection's compute_average_precision_detection).

    gt_videos (G,) str, gt_segments (G, 2); pred_videos (P,) str, pred_segments (P, 2), pred_scores (P,).
    """
    ap = np.zeros(len(thresholds))
    if len(pred_scores) == 0 or len(gt_segments) == 0:
        return ap
    lock = -np.ones((len(thresholds), len(gt_segments)), np.int64)  # which prediction took each ground truth
    order = np.asarray(pred_scores).argsort()[::-1]  # as the official code sorts (ties: its order too)
    tp = np.zeros((len(thresholds), len(order)))
    fp = np.zeros((len(thresholds), len(order)))
    by_video: dict[str, np.ndarray] = {}
    for v in np.unique(gt_videos):
        by_video[str(v)] = np.flatnonzero(gt_videos == v)
    for rank, p in enumerate(order):
        rows = by_video.get(str(pred_videos[p]))
        if rows is None:
            fp[:, rank] = 1
            continue
        tiou = segment_iou(pred_segments[p], gt_segments[rows])
        best_first = tiou.argsort()[::-1]
        for t, threshold in enumerate(thresholds):
            for j in best_first:
                if tiou[j] < threshold:
                    fp[t, rank] = 1
                    break
                if lock[t, rows[j]] >= 0:
                    continue
                tp[t, rank] = 1
                lock[t, rows[j]] = rank
                break
            if fp[t, rank] == 0 and tp[t, rank] == 0:
                fp[t, rank] = 1
    tp_sum, fp_sum = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    recall = tp_sum / len(gt_segments)
    precision = tp_sum / (tp_sum + fp_sum)
    return np.array([interpolated_prec_rec(precision[t], recall[t]) for t in range(len(thresholds))])


def average_precision(
    ground_truth: GroundTruth, predictions: Predictions, thresholds: Sequence[float]
) -> dict[str, np.ndarray]:
    """class label -> AP (len(thresholds),), for every class with ground truth."""
    gt_labels = np.array([g[3] for g in ground_truth], dtype=object)
    gt_videos = np.array([g[0] for g in ground_truth], dtype=object)
    gt_segments = np.array([[g[1], g[2]] for g in ground_truth], np.float64).reshape(-1, 2)
    p_labels = np.array([p[3] for p in predictions], dtype=object)
    p_videos = np.array([p[0] for p in predictions], dtype=object)
    p_segments = np.array([[p[1], p[2]] for p in predictions], np.float64).reshape(-1, 2)
    p_scores = np.array([p[4] for p in predictions], np.float64)
    out = {}
    for label in sorted(set(gt_labels.tolist())):
        g, p = gt_labels == label, p_labels == label
        out[label] = class_ap(gt_videos[g], gt_segments[g], p_videos[p], p_segments[p], p_scores[p], thresholds)
    return out


def localization_metrics(ground_truth: GroundTruth, predictions: Predictions) -> dict:
    """metrics.json's figures: mAP@0.3 ... mAP@0.7, their mean `mAP`, ActivityNet's 0.5:0.95 average
    (ANET_KEY), and per-class AP at each of THRESHOLDS (`per_class`)."""
    if not ground_truth:
        raise ValueError("no ground-truth segments to score against")
    thresholds = sorted(set(THRESHOLDS) | set(ANET_THRESHOLDS))
    per_class = average_precision(ground_truth, predictions, thresholds)
    maps = np.mean(np.stack(list(per_class.values())), axis=0)  # (thresholds,)
    at = dict(zip(thresholds, maps.tolist()))
    metrics: dict = {f"mAP@{t:g}": at[t] for t in THRESHOLDS}
    metrics["mAP"] = float(np.mean([at[t] for t in THRESHOLDS]))
    metrics[ANET_KEY] = float(np.mean([at[t] for t in ANET_THRESHOLDS]))
    metrics["per_class"] = {
        label: {f"AP@{t:g}": float(ap[thresholds.index(t)]) for t in THRESHOLDS} for label, ap in per_class.items()
    }
    return metrics


def results_rows(results: Mapping[str, Sequence[Mapping]]) -> list[tuple[str, float, float, str, float]]:
    """ActivityNet's results format ({id: [{"label", "score", "segment": [s, e]}]}) as prediction tuples."""
    return [
        (vid, float(r["segment"][0]), float(r["segment"][1]), str(r["label"]), float(r["score"]))
        for vid, rows in results.items()
        for r in rows
    ]
