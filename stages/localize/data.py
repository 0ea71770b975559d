"""A dense set's videos as localization reads them, and the step grid that turns seconds into steps.

read_dense(dirs)   every stored video of the set(s) (one per modality, joined on video id), whole in
                   memory: the one place that reads the store (pipeline.api's FeatureSetView.videos)
Video              one video's rows (T, D) with their time spans, and its step grid
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import FeatureSetView
from pipeline.errors import ConfigError
from stages.train.trainer import feature_sets_record


@dataclass
class Video:
    """One video's rows: features (T, D) float16 as stored, or float32 (modalities side by side), spans (T, 2) float s
    ([start, end) each row stands for), present (M,) bool (which modalities it has), duration s.

    Its step grid: row k stands for steps [k, k+1), centred on the centre of its span; a time t
    in seconds is step (t - origin) / step."""

    video_id: str
    features: np.ndarray
    spans: np.ndarray
    present: np.ndarray
    duration: float

    @property
    def length(self) -> int:
        return len(self.features)

    @property
    def step(self) -> float:
        """Seconds per row: the median gap between row starts (one row: its span)."""
        if self.length > 1:
            return float(np.median(np.diff(self.spans[:, 0])))
        return float(self.spans[0, 1] - self.spans[0, 0])

    @property
    def origin(self) -> float:
        """The time of step 0, s: rows' span centres less their step centres, the median of them."""
        centres = self.spans.mean(1)
        return float(np.median(centres - (np.arange(self.length) + 0.5) * self.step))

    def to_steps(self, seconds: float) -> float:
        return (seconds - self.origin) / self.step

    def to_seconds(self, steps: float) -> float:
        """A step position in seconds, within [0, duration]."""
        return float(min(max(self.origin + steps * self.step, 0.0), self.duration))


@dataclass
class DenseSet:
    """The set(s) a run reads: their videos by id, D per modality, and their record for config.json."""

    videos: dict[str, Video]
    dims: list[int]
    modalities: list[str]
    records: list[dict]


def read_dense(dirs: Sequence[Path]) -> DenseSet:
    """Every stored video of the set(s) `dirs` (one per modality, joined on video id), verified as read."""
    view = FeatureSetView(dirs)
    if not view.ragged:
        raise ConfigError(
            f"--features (FEATURES=): {', '.join(view.ids)} holds {view.frames} rows per video (FRAMES={view.frames}); "
            f"localization needs every step of each video: make the set with FRAMES=all and FPS= or STRIDE= "
            f"(docs/localization.md)"
        )
    row_of = {str(v): r for r, v in enumerate(view.index.video_ids)}
    videos = {}
    for item in view.videos():
        vid = item["video_id"]
        videos[vid] = Video(
            vid,
            item["features"].astype(np.float16),  # as stored: half the memory; batches are made float32
            np.asarray(item["spans"], np.float64),
            view.presence[row_of[vid]],
            float(item["duration"]),
        )
    return DenseSet(videos, list(view.dims.values()), list(view.modalities), feature_sets_record(view))
