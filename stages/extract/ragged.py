"""A dense set's shard while its videos are decoded and embedded chunk by chunk (FRAMES=all).

Each video keeps its own number of rows: its chunks' features arrive from the batcher in any
order of videos, and the video is settled (embedded, or failed) once its decoding has ended
and every row it queued has come back. The shard is written ragged (docs/store.md): every
video's rows concatenated in video order, with `lengths` saying where each one's rows are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .copying import stored_positions
from .datasets import VideoRecord
from .decode import Chunk


@dataclass
class VideoRows:
    """One video's rows so far: per chunk, its features (k, D) float16 (filled by the batcher),
    frame indices (k,) or (k, K) int32, timestamps (k,) float32 and spans (k, 2) float32 s."""

    features: list[np.ndarray] = field(default_factory=list)
    indices: list[np.ndarray] = field(default_factory=list)
    timestamps: list[np.ndarray] = field(default_factory=list)
    spans: list[np.ndarray] = field(default_factory=list)
    queued: int = 0  # rows handed to the batcher
    embedded: int = 0  # rows whose features came back
    ended: bool = False  # decoding is over (its last chunk, or its failure)
    settled: bool = False  # counted off the shard's pending videos
    duration: float = 0.0
    fps: float = 0.0


class RaggedShardBuffer:
    """The rows of one shard of a dense set; the same interface as runner.ShardBuffer for the
    runner, the row copier (copying.py) and --retry-failures (reuse)."""

    def __init__(
        self,
        index: int,
        records: list[VideoRecord],
        claim,
        dim: int,
        extras: tuple[str, ...] = (),
        clip_length: int | None = None,
    ):
        n = len(records)
        self.index, self.records, self.claim, self.dim = index, records, claim, dim
        self.step = (clip_length,) if clip_length else ()
        self.videos = [VideoRows() for _ in range(n)]
        self.fingerprints = [""] * n
        self.copied: dict[str, int] = {}
        self.extras = {name: np.zeros(n, np.uint8) for name in extras}
        self.ok = np.zeros(n, bool)
        self.failures: list[dict] = []
        self.pending = n  # videos not yet settled

    # -------------------------------------------------------------- decoding (a decode thread)
    def add_chunk(self, pos: int, chunk: Chunk) -> np.ndarray:
        """Room for a chunk's features, (k, D) float16, which the batcher fills; its rows recorded."""
        video, k = self.videos[pos], len(chunk.timestamps)
        rows = np.zeros((k, self.dim), np.float16)
        video.features.append(rows)
        video.indices.append(np.array(chunk.indices, np.int32).reshape(k, *self.step))
        video.timestamps.append(np.array(chunk.timestamps, np.float32))
        video.spans.append(np.array(chunk.spans, np.float32).reshape(k, 2))
        video.queued += k
        return rows

    # -------------------------------------------------------------- settling (under the runner's lock)
    def ended(self, pos: int, last: Chunk | None, flags: dict[str, int], error: str | None) -> None:
        """Decoding of video `pos` is over: its last chunk (rows, duration), or why it failed."""
        video = self.videos[pos]
        video.ended = True
        if error is not None:
            self.failures.append({"video_id": self.records[pos].video_id, "reason": error})
        else:
            assert last is not None, "a video decoded to its end has a last chunk"
            video.duration, video.fps = last.duration, last.fps
            self.ok[pos] = True
            for name, value in flags.items():
                self.extras[name][pos] = value
        self.settle(pos)

    def rows_embedded(self, pos: int, k: int) -> None:
        """k more of video `pos`'s rows have their features."""
        self.videos[pos].embedded += k
        self.settle(pos)

    def settle(self, pos: int) -> None:
        video = self.videos[pos]
        if video.ended and video.embedded == video.queued and not video.settled:
            video.settled = True
            self.pending -= 1

    def fail(self, pos: int, reason: str) -> None:
        """A video that failed before any of its rows was queued."""
        self.ended(pos, None, {}, reason)

    # -------------------------------------------------------------- rows from stored shards
    def reuse(self, stored: dict[str, np.ndarray]) -> None:
        """Copy the rows of videos this set's committed shard already holds (--retry-failures)."""
        for pos, k in stored_positions(self.records, stored):
            self.copy_row(pos, stored, k)

    def copy_row(self, pos: int, stored: dict[str, np.ndarray], k: int, from_set: str | None = None) -> None:
        """Video k of a ragged shard read whole (read_shard's arrays) as this shard's video `pos`,
        all its rows; from_set: the id of the other set it comes from (None: this set's own)."""
        lengths = np.asarray(stored["lengths"], np.int64)
        start = int(lengths[:k].sum())
        rows = slice(start, start + int(lengths[k]))
        video = self.videos[pos] = VideoRows(ended=True, settled=True)
        video.features.append(np.asarray(stored["features"][rows], np.float16))
        video.indices.append(np.asarray(stored["frame_indices"][rows], np.int32))
        video.timestamps.append(np.asarray(stored["timestamps"][rows], np.float32))
        video.spans.append(np.asarray(stored["spans"][rows], np.float32))
        video.queued = video.embedded = int(lengths[k])
        video.duration, video.fps = float(stored["durations"][k]), float(stored["video_fps"][k])
        self.ok[pos] = True
        self.fingerprints[pos] = stored["fingerprints"][k] if "fingerprints" in stored else ""
        for name, values in self.extras.items():
            values[pos] = stored[name][k]
        if from_set is not None:
            self.copied[from_set] = self.copied.get(from_set, 0) + 1
        self.pending -= 1

    # -------------------------------------------------------------- the shard file
    def arrays(self) -> dict[str, np.ndarray | list[str]]:
        """The ragged shard's datasets (docs/store.md), R rows of its n stored videos: features
        (R, D) float16, lengths (n,) int32, labels, video_ids, groups, frame_indices (R,) or
        (R, K) int32, timestamps (R,) float32, spans (R, 2) float32 cut at each video's
        duration, durations and video_fps (n,) float32, fingerprints and per-video flags."""
        keep = [pos for pos in range(len(self.records)) if self.ok[pos]]
        videos, recs = [self.videos[p] for p in keep], [self.records[p] for p in keep]
        joined = lambda name, shape: (
            np.concatenate([a for v in videos for a in getattr(v, name)]) if videos else np.zeros(shape)
        )
        spans = joined("spans", (0, 2)).astype(np.float32)
        durations = np.array([v.duration for v in videos], np.float32)
        lengths = np.array([v.queued for v in videos], np.int32)
        spans = np.minimum(spans, np.repeat(durations, lengths)[:, None])  # the last row ends with the video
        arrays: dict[str, np.ndarray | list[str]] = {
            "features": joined("features", (0, self.dim)).astype(np.float16),
            "lengths": lengths,
            "labels": np.array([r.label for r in recs], np.int32).reshape(-1),
            "video_ids": [r.video_id for r in recs],
            "groups": [r.group for r in recs],
            "frame_indices": joined("indices", (0, *self.step)).astype(np.int32),
            "timestamps": joined("timestamps", (0,)).astype(np.float32),
            "spans": spans,
            "durations": durations,
            "video_fps": np.array([v.fps for v in videos], np.float32),
            "fingerprints": [self.fingerprints[p] for p in keep],
        }
        return arrays | {name: values[keep] for name, values in self.extras.items()}
