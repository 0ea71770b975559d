"""Batch sources for training and evaluation: a part of a split, standardised, on the device.

    choose_load(...)    "memory" when the part fits (the standardised copy on the GPU, or in RAM),
                        else "stream"
    MemorySource        the whole part as one tensor on the device; batches are index lookups
    StreamSource        shard by shard on every pass, through the store's reader (pipeline.api), each
                        shard read whole (checksummed) by a prefetch thread while the previous one trains
    RaggedSource        a ragged set's part (each video its own rows): the rows held flat (R, D), or
                        streamed shard by shard; batches of videos of similar length, each padded
                        only to its longest (pipeline.api.length_batches)

Both yield Batch tuples: x (B, T, D) with the modalities side by side, lengths, labels,
positions into the part, and present (B, M): which modalities each video has.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from pipeline import FeatureSetView
from pipeline.api import length_batches
from pipeline.errors import ConfigError
from pipeline.store.stats import standardize

# Share of free memory (host RAM or GPU) a whole-in-memory load may take.
MEMORY_SHARE = 0.5


class Batch(NamedTuple):
    """One batch of a part, on the source's device.

    x (B, T, D) standardised, padded frames zero, the modalities side by side along D;
    lengths (B,) int64 valid frames; labels (B,) int64; positions (B,) int64 numpy: each
    video's place in the part; present (B, M) bool: whether each video has each modality's
    stream (False: x holds the stored stand-in there, e.g. silence features).
    """

    x: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    positions: np.ndarray
    present: torch.Tensor

    def cut(self, rows: slice) -> Batch:
        """The videos `rows` of the batch, every field cut alike."""
        return Batch(self.x[rows], self.lengths[rows], self.labels[rows], self.positions[rows], self.present[rows])

    @staticmethod
    def join(pieces: list[Batch]) -> Batch:
        """The pieces one after the other."""
        cat = lambda name: torch.cat([getattr(p, name) for p in pieces])
        return Batch(
            cat("x"), cat("lengths"), cat("labels"), np.concatenate([p.positions for p in pieces]), cat("present")
        )


def available_bytes(device: torch.device) -> int:
    """Free memory where standardised features would live: the GPU, or host RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def choose_load(load: str, videos: int, frames: int, dim: int, dtype: torch.dtype, device: torch.device) -> str:
    """ "memory" or "stream" for LOAD=auto|memory|stream.

    Whole in memory needs the float16 features on the host while reading plus the
    standardised copy on the device; it is chosen when that takes at most MEMORY_SHARE
    of what is free there.
    """
    if load in ("memory", "stream"):
        return load
    if load != "auto":
        raise ConfigError(f"--load: choose auto, memory or stream, got {load!r}")
    host = videos * frames * dim * 2
    on_device = videos * frames * dim * torch.finfo(dtype).bits // 8
    if device.type == "cuda":
        fits = on_device <= MEMORY_SHARE * available_bytes(device) and host <= MEMORY_SHARE * available_bytes(
            torch.device("cpu")
        )
    else:
        fits = host + on_device <= MEMORY_SHARE * available_bytes(device)
    return "memory" if fits else "stream"


class MemorySource:
    """One part (train, validation or test) held whole as a standardised tensor on the device.

    Built from `store_features (M, T, D) float16` (the videos read once for all splits)
    and `positions (n,)` of this part's videos in it. Holds features (n, T, D) `dtype`,
    standardised with padded frames zero, lengths (n,) and labels (n,) int64, present (n, M)
    bool (None: one modality, always there), all on `device`. Batches index these tensors
    directly: no DataLoader, no per-batch conversion.
    """

    def __init__(
        self,
        store_features: np.ndarray,
        positions: np.ndarray,
        lengths: np.ndarray,
        labels: np.ndarray,
        video_ids: np.ndarray,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
        present: np.ndarray | None = None,
        chunk: int = 512,
    ):
        self.device = device
        self.video_ids = np.asarray(video_ids)
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64).to(device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(device)
        present = np.ones((len(positions), 1), bool) if present is None else np.asarray(present, bool)
        self.present = torch.from_numpy(present).to(device)
        self.features = torch.empty((len(positions), *store_features.shape[1:]), dtype=dtype, device=device)
        mean, std = mean.to(device), std.to(device)
        for s in range(0, len(positions), chunk):  # bounded float32 working copy
            x = torch.from_numpy(store_features[positions[s : s + chunk]]).to(device, non_blocking=True)
            self.features[s : s + chunk] = standardize(x, self.lengths[s : s + chunk], mean, std, dtype)

    @classmethod
    def of_rows(
        cls,
        view: FeatureSetView,
        store_features: np.ndarray,
        positions: np.ndarray,
        rows: np.ndarray,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
    ) -> MemorySource:
        """The part of `rows` (into view.index), its features at `positions` in store_features."""
        idx = view.index
        return cls(
            store_features,
            positions,
            idx.lengths[rows],
            idx.labels[rows],
            idx.video_ids[rows],
            mean,
            std,
            device,
            dtype,
            view.presence[rows],
        )

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch: int, shuffle: bool = False, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Yield the part's Batches, `batch` videos each (the last may be short), shuffled or in order."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        # One copy of the whole order per pass, from pinned memory and asynchronous: a
        # per-batch copy from pageable memory would wait for the GPU on every step.
        on_device = order.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else order
        for s in range(0, len(self), batch):
            idx = on_device[s : s + batch]
            yield Batch(
                self.features[idx], self.lengths[idx], self.labels[idx], order[s : s + batch].numpy(), self.present[idx]
            )


def memory_chunks(
    store_features: np.ndarray, positions: np.ndarray, lengths: np.ndarray, present: np.ndarray, chunk: int = 1024
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(features (n, T, D) float16, lengths (n,), present (n, M) bool) of `positions`, a chunk at a time
    (for feature_stats); lengths and present are those of the same videos, in the order of `positions`."""
    for s in range(0, len(positions), chunk):
        yield store_features[positions[s : s + chunk]], lengths[s : s + chunk], present[s : s + chunk]


class StreamSource:
    """One part read shard by shard on every pass, for sets larger than memory.

    Each shard is read whole (one contiguous read, checksummed) by the view's prefetch thread
    while the previous one trains; its rows of this part are shuffled, standardised and cut
    into batches, with leftovers carried into the next shard so every batch but the last is full.
    """

    def __init__(
        self,
        view: FeatureSetView,
        rows: np.ndarray,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
    ):
        self.view, self.device, self.dtype = view, device, dtype
        self.rows = np.asarray(rows, dtype=np.int64)
        self.video_ids = view.index.video_ids[self.rows]
        self.mean, self.std = mean.to(device), std.to(device)

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, batch: int, shuffle: bool = False, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Yield the part's Batches, shard by shard, `batch` videos each (the last may be short)."""
        carry: list[Batch] = []
        index = self.view.index
        for shard_pos, shard_feats in self.view.shards(self.rows, shuffle, generator):
            pos, feats = shard_pos, shard_feats
            if shuffle:
                order = torch.randperm(len(pos), generator=generator).numpy()
                pos, feats = pos[order], feats[order]
            rows = self.rows[pos]
            lengths = torch.from_numpy(index.lengths[rows]).to(self.device)
            x = standardize(torch.from_numpy(feats).to(self.device), lengths, self.mean, self.std, self.dtype)
            labels = torch.from_numpy(index.labels[rows]).to(self.device)
            present = torch.from_numpy(self.view.presence[rows]).to(self.device)
            carry.append(Batch(x, lengths, labels, pos, present))
            yield from self.drain(carry, batch, final=False)
        yield from self.drain(carry, batch, final=True)

    @staticmethod
    def drain(carry: list[Batch], batch: int, final: bool) -> Iterator[Batch]:
        """Cut full batches off the carried pieces (all of it when `final`); keep the rest."""
        total = sum(len(c.labels) for c in carry)
        if total < batch and not (final and total):
            return
        joined = Batch.join(carry)
        carry.clear()
        full = total if final else total - total % batch
        for s in range(0, full, batch):
            yield joined.cut(slice(s, s + batch))
        if full < total:
            carry.append(joined.cut(slice(full, None)))


def flat_rows(videos: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Videos' rows one after another: [(T_i, D)] -> rows (R, D), starts (n,) int64, lengths (n,) int64."""
    lengths = np.array([len(v) for v in videos], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    rows = np.concatenate(videos) if videos else np.zeros((0, dim), np.float16)
    return rows, starts, lengths


def ragged_chunks(
    rows: np.ndarray, present: np.ndarray, lengths: np.ndarray, chunk: int = 65536
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """feature_stats' chunks of flat rows (R, D) float16: each row a "video" of one frame, so every
    stored row counts once; present (n, M) per video, lengths (n,) its rows."""
    per_row = np.repeat(present, lengths, axis=0)
    for s in range(0, len(rows), chunk):
        block = rows[s : s + chunk]
        yield block[:, None], np.ones(len(block), np.int64), per_row[s : s + chunk]


class RaggedSource:
    """One part of a ragged set: videos of their own lengths, batched by length.

    memory: the part's rows standardised once into one flat tensor (R, D) `dtype` on the device
    (never an (n, T_max, D) array: a few long videos would make it mostly padding), with each
    video's start and length; a batch gathers its videos' rows into (B, T_b, D), T_b the batch's
    longest, zero past each length. stream: each pass reads the part shard by shard (verified,
    prefetched), standardises that shard's rows and batches its videos the same way.
    Batches hold videos of similar length (length_batches), in a shuffled order when training.
    """

    def __init__(
        self,
        view: FeatureSetView,
        rows: np.ndarray,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: torch.device,
        dtype: torch.dtype,
        mode: str = "memory",
        videos: list[np.ndarray] | None = None,
    ):
        """rows (n,) into view.index; mode "memory" or "stream"; videos: in memory, the part's videos
        (T_i, D) float16 in the order of `rows`, if read already (else read here)."""
        self.view, self.device, self.dtype, self.mode = view, device, dtype, mode
        self.rows = np.asarray(rows, dtype=np.int64)
        self.video_ids = view.index.video_ids[self.rows]
        self.lengths_np = view.index.lengths[self.rows]
        self.mean, self.std = mean.to(device), std.to(device)
        if mode == "memory":
            feats, starts, _ = flat_rows(view.read_videos(self.rows) if videos is None else videos, view.feature_dim)
            self.features = self.standardized(feats)
            self.starts = torch.from_numpy(starts).to(device)
            self.lengths = torch.from_numpy(self.lengths_np).to(device)
            self.labels = torch.from_numpy(view.index.labels[self.rows]).to(device)
            self.present = torch.from_numpy(view.presence[self.rows]).to(device)

    def __len__(self) -> int:
        return len(self.rows)

    def standardized(self, feats: np.ndarray, chunk: int = 65536) -> torch.Tensor:
        """Rows (R, D) float16 -> (R, D) `dtype` on the device, (x - mean) / std (a bounded float32 copy)."""
        out = torch.empty((len(feats), feats.shape[1]), dtype=self.dtype, device=self.device)
        for s in range(0, len(feats), chunk):
            x = torch.from_numpy(feats[s : s + chunk]).to(self.device)
            out[s : s + chunk] = ((x.float() - self.mean) / self.std).to(self.dtype)
        return out

    def batches(self, batch: int, shuffle: bool = False, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Yield the part's Batches, `batch` videos of similar length each, padded to the batch's longest."""
        if self.mode == "memory":
            for pos in length_batches(self.lengths_np, batch, shuffle, generator):
                yield self.gather(self.features, self.starts, self.lengths, self.labels, self.present, pos)
            return
        index = self.view.index
        for pos, videos in self.view.shards(self.rows, shuffle, generator):
            feats, starts, lengths = flat_rows(list(videos), self.view.feature_dim)
            rows = self.rows[pos]
            parts = (
                self.standardized(feats),
                torch.from_numpy(starts).to(self.device),
                torch.from_numpy(lengths).to(self.device),
                torch.from_numpy(index.labels[rows]).to(self.device),
                torch.from_numpy(self.view.presence[rows]).to(self.device),
            )
            for local in length_batches(lengths, batch, shuffle, generator):
                b = self.gather(*parts, local)
                yield b._replace(positions=pos[local])

    @staticmethod
    def gather(
        feats: torch.Tensor,
        starts: torch.Tensor,
        lengths: torch.Tensor,
        labels: torch.Tensor,
        present: torch.Tensor,
        pos: np.ndarray,
    ) -> Batch:
        """The Batch of videos `pos` (positions into starts/lengths): x (B, T_b, D) zero past each length."""
        idx = torch.from_numpy(pos).to(feats.device)
        n = lengths[idx]
        longest = int(n.max()) if len(pos) else 0
        steps = torch.arange(longest, device=feats.device)
        valid = steps[None, :] < n[:, None]
        where = (starts[idx][:, None] + steps[None, :]).clamp(max=max(len(feats) - 1, 0))
        x = feats[where] * valid[..., None].to(feats.dtype)
        return Batch(x, n, labels[idx], pos, present[idx])


# What the training loop and evaluation read: any kind of part, the same batches.
Source = MemorySource | StreamSource | RaggedSource
