"""Synthetic dense features with events at known steps, shaped as a dense set's videos are read.

Three classes over a background: Flash (a look of its own), and Rise and Fall, made of the same two
looks A and B in opposite orders (A then B, B then A): every single row of Rise looks like some
row of Fall, so only a head that reads neighbouring rows can tell them apart. One row per second.
"""

from __future__ import annotations

import numpy as np
import ragged_sets

from stages.localize.annotations import Matched, Segment, VideoTruth
from stages.localize.data import DenseSet, Video

CLASSES = ["Fall", "Flash", "Rise"]


def synthetic_set(videos: int = 22, scored: int = 6, dim: int = 24, seed: int = 0) -> tuple[DenseSet, Matched]:
    """`videos` videos of 50-80 rows (the last `scored` in the validation part), 2-3 events each."""
    rng = np.random.default_rng(seed)
    look = {k: rng.normal(0, 1, dim) for k in ("bg", "A", "B", "C")}
    dense, truths = {}, {}
    for v in range(videos):
        length = int(rng.integers(50, 81))
        rows = [look["bg"]] * length
        segments, t = [], int(rng.integers(2, 8))
        while True:
            n = int(rng.integers(6, 13))
            if t + n > length - 2:
                break
            label = CLASSES[int(rng.integers(3))]
            half = n // 2
            parts = {
                "Flash": ["C"] * n,
                "Rise": ["A"] * half + ["B"] * (n - half),
                "Fall": ["B"] * half + ["A"] * (n - half),
            }
            rows[t : t + n] = [look[k] for k in parts[label]]
            segments.append(Segment(float(t), float(t + n), label))
            t += n + int(rng.integers(3, 10))
        features = (np.stack(rows) + rng.normal(0, 0.4, (length, dim))).astype(np.float32)
        spans = np.stack([np.arange(length), np.arange(1, length + 1)], 1).astype(np.float64)
        vid = f"long/video_{v:02d}.mp4"
        dense[vid] = Video(vid, features, spans, np.ones(1, bool), float(length))
        part = "eval" if v >= videos - scored else "train"
        truths[vid] = VideoTruth(vid, f"video_{v:02d}", part, float(length), tuple(segments))
    return DenseSet(dense, [dim], ["rgb"], []), Matched(CLASSES, truths)


def as_stored(video_id: str, v: Video, group: str, fps: float = 25.0) -> ragged_sets.Video:
    """A synthetic video's rows as a dense set stores them (write_set's input): float16 features,
    each row's start as its timestamp, its span, the frame at its start at `fps`; unlabelled."""
    starts = v.spans[:, 0]
    return ragged_sets.Video(
        video_id,
        v.features.astype(np.float16),
        starts.astype(np.float32),
        v.spans.astype(np.float32),
        (starts * fps).astype(np.int32),
        -1,
        fps,
        v.duration,
        group,
    )
