"""An independent ActivityNet detection mAP, for checking stages/localize/scoring.py and a run's
results file: written from the metric's definition, not from eval_detection.py's code path.

Per class: predictions by score, highest first; each takes, among the ground truths of its video not
yet taken, the one with the largest tIoU, if that tIoU reaches the threshold; AP is the sum, over
the hits, of the best precision at that rank or later, divided by the number of ground truths.
"""

from __future__ import annotations

import json
from pathlib import Path


def reference_ap(gt: list[tuple], preds: list[tuple], threshold: float) -> float:
    """gt: (video, start, end); preds: (video, start, end, score) -> AP at `threshold`."""
    taken: set[int] = set()
    hits = []
    for vid, s, e, _score in sorted(preds, key=lambda p: -p[3]):
        best, best_iou = None, -1.0
        for k, (gv, gs, ge) in enumerate(gt):
            if gv != vid or k in taken:
                continue
            inter = max(0.0, min(e, ge) - max(s, gs))
            iou = inter / ((e - s) + (ge - gs) - inter)
            if iou >= threshold and iou > best_iou:
                best, best_iou = k, iou
        if best is not None:
            taken.add(best)
        hits.append(best is not None)
    precision = [sum(hits[: r + 1]) / (r + 1) for r in range(len(hits))]
    return sum(max(precision[r:]) for r, hit in enumerate(hits) if hit) / len(gt)


def reference_map(gt: list[tuple], preds: list[tuple], threshold: float) -> float:
    """gt: (video, start, end, label); preds: (video, start, end, label, score) -> mAP over gt's classes."""
    classes = sorted({g[3] for g in gt})
    aps = [
        reference_ap([g[:3] for g in gt if g[3] == c], [(*p[:3], p[4]) for p in preds if p[3] == c], threshold)
        for c in classes
    ]
    return sum(aps) / len(aps)


def score_files(annotations: Path, results: Path, subset: str, threshold: float) -> float:
    """mAP of an ActivityNet results file against the `subset` videos of an ActivityNet annotation file."""
    database = json.loads(Path(annotations).read_text())["database"]
    gt = [
        (vid, *a["segment"], a["label"])
        for vid, entry in database.items()
        if entry["subset"] == subset
        for a in entry["annotations"]
    ]
    found = json.loads(Path(results).read_text())["results"]
    preds = [(vid, *r["segment"], r["label"], r["score"]) for vid, rows in found.items() for r in rows]
    return reference_map(gt, preds, threshold)
