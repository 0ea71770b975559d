"""Ragged (dense) feature sets for the readers' tests, written through the store's own writer.

ragged_set(root, lengths, ...)   a dense set per docs/store.md's ragged layout (FRAMES=all with FPS=
                                 or STRIDE=), each video's rows known: returns the set and the truth
fixed_twin(root, truth, T)       the same videos as a fixed-T set: each video's first T rows, padded

The rows are seeded random numbers with a per-video offset (so videos differ in their mean, and a
head can tell classes apart); timestamps, spans and frame indices follow the contract's sampling.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import store

CLASSES = ["Calm", "Busy"]


@dataclass
class Video:
    """One stored video as the factory wrote it: features (T, D) float16; timestamps (T,) float32;
    spans (T, 2) float32; frame_indices (T,) or (T, K) int32; label; fps; duration."""

    video_id: str
    features: np.ndarray
    timestamps: np.ndarray
    spans: np.ndarray
    frame_indices: np.ndarray
    label: int
    fps: float
    duration: float
    group: str


def rows_of(duration: float, fps: float, rate: float | None, stride: int | None, clip: int | None) -> tuple:
    """(timestamps (T,), spans (T, 2), frame_indices (T,) or (T, K)) of the contract's dense sampling."""
    frames = int(round(duration * fps))
    if rate:
        starts = np.arange(int(np.ceil(duration * rate - 1e-9))) / rate
        index = np.minimum(np.round(starts * fps).astype(np.int64), frames - 1)
        ends = np.minimum(starts + 1 / rate, duration)
    else:
        assert stride
        index = np.arange(0, frames, stride)
        starts, ends = index / fps, np.minimum((index + stride) / fps, duration)
    if clip:
        clips = np.clip(index[:, None] + np.arange(clip)[None, :] - (clip // 2 if rate else 0), 0, frames - 1)
        stamps = clips[:, clip // 2] / fps
        spans = np.stack([clips[:, 0] / fps, clips[:, -1] / fps + 1 / fps], axis=1)
        return stamps.astype(np.float32), spans.astype(np.float32), clips.astype(np.int32)
    return (index / fps).astype(np.float32), np.stack([starts, ends], 1).astype(np.float32), index.astype(np.int32)


def make_videos(
    durations: list[float],
    dim: int,
    rate: float | None,
    stride: int | None,
    clip: int | None,
    fps: float = 25.0,
    seed: int = 0,
    labelled: bool = True,
) -> list[Video]:
    """Videos of the given durations (s), alternating classes, two per group, in class folders."""
    rng = np.random.default_rng(seed)
    out = []
    for i, duration in enumerate(durations):
        label = i % 2 if labelled else -1
        stamps, spans, index = rows_of(duration, fps, rate, stride, clip)
        shift = (2.0 if label == 1 else -2.0) if labelled else 0.0
        feats = (rng.standard_normal((len(stamps), dim)) + shift).astype(np.float16)
        name = CLASSES[i % 2]
        out.append(
            Video(
                f"{name}/v_{name}_g{i // 4:02d}_c{i:02d}.avi",
                feats,
                stamps,
                spans,
                index,
                label,
                fps,
                float(duration),
                f"{name}_g{i // 4:02d}",
            )
        )
    return out


def identity(dataset: str, sampling: dict, dim: int, ids: list[str]) -> dict:
    return {
        "schema_version": 1,
        "dataset": dataset,
        "videos_sha256": hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest(),
        "backbone": "toy",
        "weights": "random:seed0",
        "sampling": sampling,
        "feature_dim": dim,
        "store_dtype": "float16",
    }


def splits_of(videos: list[Video]) -> dict:
    """Split 1: every third group on the test side."""
    test = [v.video_id for v in videos if int(v.group.rsplit("_g", 1)[1]) % 3 == 2]
    return {"1": {"train": [v.video_id for v in videos if v.video_id not in test], "test": test}}


def write_set(
    root: Path,
    dataset: str,
    videos: list[Video],
    ident: dict,
    prefix: str,
    frames: int | None,
    shard_size: int,
    labelled: bool,
    modality: str = "rgb",
) -> Path:
    """The set through the store's writer: a manifest, shards committed one by one, marked complete."""
    fsid = f"{prefix}-{hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]}"
    set_dir = Path(root) / dataset / fsid
    set_dir.mkdir(parents=True)
    shards = [videos[s : s + shard_size] for s in range(0, len(videos), shard_size)]
    manifest = store.new_manifest(
        fsid,
        dataset,
        ident,
        {"dataset": "csv", "frames": "all" if frames is None else frames},
        frames,
        videos[0].features.shape[1],
        CLASSES if labelled else [],
        splits_of(videos),
        len(videos),
        shard_size,
        len(shards),
        layout="ragged" if frames is None else "fixed",
        modality=modality,
    )
    store.create(set_dir, manifest)
    for k, part in enumerate(shards):
        arrays = shard_arrays(part, frames)
        attrs = {"feature_set_id": fsid, "shard_index": k, "identity": ident, "config": {}}
        if frames is None:
            attrs["layout"] = store.RAGGED
        entry = store.write_shard(set_dir / store.shard_name(k), arrays, attrs)
        store.commit_shard(set_dir, k, entry, [])
    store.mark_complete(set_dir)
    return set_dir


def shard_arrays(part: list[Video], frames: int | None) -> dict:
    """A shard's datasets: ragged (frames None) as the contract lays them out, else padded to T."""
    per_video = {
        "labels": np.array([v.label for v in part], np.int32),
        "video_ids": [v.video_id for v in part],
        "groups": [v.group for v in part],
    }
    if frames is None:
        return per_video | {
            "features": np.concatenate([v.features for v in part]),
            "lengths": np.array([len(v.features) for v in part], np.int32),
            "frame_indices": np.concatenate([v.frame_indices for v in part]),
            "timestamps": np.concatenate([v.timestamps for v in part]),
            "spans": np.concatenate([v.spans for v in part]),
            "durations": np.array([v.duration for v in part], np.float32),
            "video_fps": np.array([v.fps for v in part], np.float32),
        }
    n, d = len(part), part[0].features.shape[1]
    feats = np.zeros((n, frames, d), np.float16)
    stamps = np.full((n, frames), np.nan, np.float32)
    index = np.full((n, frames, *part[0].frame_indices.shape[1:]), -1, np.int32)
    lengths = np.array([min(frames, len(v.features)) for v in part], np.int32)
    for i, v in enumerate(part):
        feats[i, : lengths[i]] = v.features[:frames]
        stamps[i, : lengths[i]] = v.timestamps[:frames]
        index[i, : lengths[i]] = v.frame_indices[:frames]
    return per_video | {"features": feats, "lengths": lengths, "frame_indices": index, "timestamps": stamps}


def ragged_set(
    root: Path,
    durations: list[float],
    dim: int = 8,
    rate: float | None = None,
    stride: int | None = 4,
    clip: int | None = None,
    shard_size: int = 4,
    dataset: str = "csv-long",
    labelled: bool = True,
    seed: int = 0,
    modality: str = "rgb",
) -> tuple[Path, dict[str, Video]]:
    """A dense set of videos of `durations` seconds at 25 fps: FPS=`rate`, else STRIDE=`stride`
    (a clip model's K=`clip` frames per row), of `modality` (an audio set: the same rows, other
    numbers with another seed). Returns (set directory, {video id: Video})."""
    videos = make_videos(durations, dim, rate, None if rate else stride, clip, seed=seed, labelled=labelled)
    sampling: dict = {"mode": "dense", **({"fps": rate} if rate else {"stride": stride})}
    if clip:
        sampling["clip"] = {"frames": clip, "frame_rate": 25.0}
    ident = identity(dataset, sampling, dim, [v.video_id for v in videos]) | {"modality": modality}
    steps = f"{rate:g}fps" if rate else f"s{stride}"
    prefix = f"{'toy' if modality == 'rgb' else 'audio-toy'}-random-all-{steps}"
    set_dir = write_set(root, dataset, videos, ident, prefix, None, shard_size, labelled, modality)
    return set_dir, {v.video_id: v for v in videos}


def fixed_twin(root: Path, truth: dict[str, Video], frames: int, dataset: str = "csv-long-fixed") -> Path:
    """The same videos as a fixed-T set (uniform sampling of T): each video's first `frames` rows."""
    videos = list(truth.values())
    ident = identity(
        dataset, {"mode": "uniform", "frames": frames}, videos[0].features.shape[1], [v.video_id for v in videos]
    )
    return write_set(root, dataset, videos, ident, f"toy-random-t{frames}", frames, 4, videos[0].label >= 0)
