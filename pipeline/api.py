"""Reading the store from your own code: a feature set as PyTorch datasets, or as arrays.

    from pipeline import FeatureStore
    store = FeatureStore()                       # $FEATURES_ROOT, else data/features; or FeatureStore(path),
                                                 # FeatureStore("s3://bucket/prefix") (shards cached locally)
    store.list()                                 # the catalog, as records (`store list --json`)
    fs = store.open("ucf101")                    # a dataset's set, an id, an id prefix, dataset/id or a directory;
                                                 # several (a list, or "a,b") of one dataset: one per modality
    train = fs.dataset(split=1, part="train")    # torch Dataset: {"features", "length", "label", "video_id"}
                                                 # (+ "present" {modality: bool} for a joined view)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, num_workers=2)
    stream = fs.stream(split=1, part="train")    # IterableDataset: shard by shard, for sets larger than memory
    arrays = fs.arrays(split=1, part="test")     # numpy: features (n, T, D), lengths, labels, video_ids
    fs.video("Class/clip.avi")                   # one video: features (T_i, D), timestamps, spans, frame_indices, ...

A ragged set (a dense one, FRAMES=all: each video its own number of rows) reads the same way:
`fs.ragged` is True, items carry their own (T_i, D) features and `length`, and `pad_collate`
pads a batch to its longest video with a mask; `LengthBatchSampler` batches videos of similar
length, so little is padded:

    loader = DataLoader(train, batch_sampler=LengthBatchSampler(train, 16), collate_fn=pad_collate)

Every read is verified like stage two's: a shard's bytes are checked against the sha256
its manifest recorded before any number of it is used, and a shard the manifest does not
list is never opened. The map-style dataset checks each shard once per process, through
the very file object h5py then reads (so the verified bytes are the ones read), and opens
its HDF5 files lazily in the process that reads them, never across a fork: DataLoader
workers each open their own.

Parts of a split: "train" and "test" are the official lists (for a dataset without a test
side, one carved by group, as stage two does); with `val_fraction`, a validation part
("val") is carved from the training side by group, and "train" is what is left. With
`standardize=True`, features are (x - mean) / std with the statistics of that training
part, padded frames zero: the same numbers stage two trains on.

Stage two reads through `FeatureSetView` too: there is one reader.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from . import store
from .config import MODALITIES, store_root
from .errors import IntegrityError, ReaderError
from .store import FeatureSet, Index
from .store.sets import video_rows
from .store.stats import feature_stats
from .store.stats import standardize as standardized  # `standardize` is a parameter here

PARTS = ("train", "val", "test")
MODALITY_ORDER = MODALITIES  # the order of a joined set's features along D


class FeatureStore:
    """A feature store root: list its sets, open one (or several of one dataset, one per modality)."""

    def __init__(self, root: str | Path | None = None):
        self.root = store_root(root)

    def __repr__(self) -> str:
        return f"FeatureStore({store.display(self.root)!r})"

    def list(self) -> list[dict]:
        """One record per feature set (dataset, id, path, modality, settings, videos, state), as `store list --json`."""
        return store.list_sets(self.root)

    def open(self, ref: str | Path | Sequence[str | Path], dataset: str | None = None) -> FeatureSetView:
        """A set by dataset name (its default complete set), id, unique id prefix, dataset/id or
        directory; a list (or comma-separated string) opens several: sets of one modality are
        read as one, sets of different modalities are joined on video id."""
        refs = [str(r) for r in ([ref] if isinstance(ref, (str, Path)) else ref)]
        refs = [r.strip() for part in refs for r in part.split(",") if r.strip()]
        dirs = []
        for r in refs:
            if dataset is None and "/" not in r and any(d.parent.name == r for d in store.feature_sets(self.root)):
                dirs += store.resolve_feature_sets(r, None, self.root, "rgb")  # a dataset name: its default rgb set
            else:
                dirs += store.resolve_feature_sets(dataset or "", r, self.root)
        return FeatureSetView(dirs)


class FeatureSetView:
    """One feature set, several of one modality read as one, or one per modality joined on video id.

    index: the per-video metadata of the first modality (video_ids, labels, groups, lengths);
    row r of it is video r everywhere in this class. dims: modality -> D; a joined view's
    features are the modalities' features side by side along D, in MODALITY_ORDER.
    presence (N, M) bool: whether video r has modality m's stream (an audio set's `has_audio`;
    where a video has none, its stored features are silence features, not sound).
    """

    def __init__(self, dirs: Sequence[str | Path]):
        by_modality: dict[str, list[Path]] = {}
        for d in dirs:
            fs = FeatureSet(Path(d), store.read_manifest(Path(d)))
            by_modality.setdefault(fs.manifest.modality, []).append(fs.set_dir)
        order = {m: k for k, m in enumerate(MODALITY_ORDER)}
        self.modalities = sorted(by_modality, key=lambda m: (order.get(m, len(order)), m))
        self.sets = {m: store.open_feature_sets(by_modality[m]) for m in self.modalities}
        self.indexes = {m: store.read_index(self.sets[m]) for m in self.modalities}
        self.index: Index = self.indexes[self.modalities[0]]
        self.rows_in = {m: self.join(m) for m in self.modalities}
        self.presence = np.stack([self.indexes[m].present[self.rows_in[m]] for m in self.modalities], axis=1)
        self._stats: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._row_of: dict[str, int] | None = None  # video id -> index row, built on video()'s first call
        self._last_shard: dict[str, tuple[int, dict]] = {}  # modality -> (shard, its verified data): video()'s

    def join(self, modality: str) -> np.ndarray:
        """Row of each video of the index in `modality`'s own index; a video missing on either side is an error."""
        primary, other = self.modalities[0], self.indexes[modality]
        if modality == primary:
            return np.arange(len(self.index.video_ids))
        a, b = self.sets[primary][0], self.sets[modality][0]
        if (a.frames, a.ragged, a.classes) != (b.frames, b.ragged, b.classes):
            raise ReaderError(
                f"cannot join {a.set_dir} ({primary}) and {b.set_dir} ({modality}): "
                f"their frames per video, layout or classes differ; make both with the same dataset and sampling"
            )
        rows, missing = other.rows_of(self.index.video_ids)
        extra = sorted(set(other.video_ids) - set(self.index.video_ids))
        if missing or extra:
            where, vid = (b.set_dir, missing[0]) if missing else (a.set_dir, extra[0])
            raise ReaderError(
                f"FEATURES=: video {vid!r} has no features in {where} ({len(missing) + len(extra)} "
                f"video(s) differ); sets joined per modality must store the same videos"
            )
        if a.ragged and (other.lengths[rows] != self.index.lengths).any():
            vid = self.index.video_ids[np.flatnonzero(other.lengths[rows] != self.index.lengths)[0]]
            raise ReaderError(
                f"cannot join {a.set_dir} ({primary}) and {b.set_dir} ({modality}): video {vid!r} has another "
                f"number of rows in each; make both with the same FRAMES=all, FPS= or STRIDE= and decoder"
            )
        return rows

    # -------------------------------------------------------------- what it holds
    @property
    def manifest(self) -> store.Manifest:
        """The first set's manifest (of the first modality)."""
        return self.sets[self.modalities[0]][0].manifest

    @property
    def ids(self) -> list[str]:
        return [fs.id for m in self.modalities for fs in self.sets[m]]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def frames(self) -> int | None:
        """T of a fixed-T set; None for a ragged one (each video's rows: index.lengths)."""
        return self.manifest.frames

    @property
    def ragged(self) -> bool:
        """True for a dense set: each video keeps its own number of rows, nothing padded."""
        return self.manifest.ragged

    @property
    def dims(self) -> dict[str, int]:
        return {m: self.sets[m][0].feature_dim for m in self.modalities}

    @property
    def feature_dim(self) -> int:
        """D of the features as read: the sum over modalities for a joined view."""
        return sum(self.dims.values())

    @property
    def num_videos(self) -> int:
        """Videos with stored features (in every modality)."""
        return len(self.index.video_ids)

    @property
    def complete(self) -> bool:
        return all(fs.manifest.complete for m in self.modalities for fs in self.sets[m])

    def __repr__(self) -> str:
        return (
            f"FeatureSetView({', '.join(self.ids)}: {self.num_videos} videos, "
            f"{'ragged' if self.ragged else f'T={self.frames}'}, "
            f"D={self.feature_dim}, {len(self.classes)} classes)"
        )

    # -------------------------------------------------------------- splits
    def split_names(self, split: str | int = "all") -> list[str]:
        """SPLIT= resolved: "all" is every official split; a dataset with one split serves it for 1."""
        return store.split_names(self.manifest.splits, str(split))

    def split(self, name: str | int = 1, seed: int = 0, test_fraction: float = 0.2) -> store.Split:
        """Train and test rows of one split (test carved by group, seeded, where the dataset has none)."""
        return store.select_split(
            self.sets[self.modalities[0]], self.index, self.split_names(name)[0], seed, test_fraction
        )

    def rows(
        self,
        split: str | int = 1,
        part: str = "train",
        val_fraction: float = 0.0,
        seed: int = 0,
        test_fraction: float = 0.2,
    ) -> np.ndarray:
        """Rows (n,) int64 into `index` of one part of a split (module docstring: the parts)."""
        if part not in PARTS:
            raise ReaderError(f"part: choose one of {', '.join(PARTS)}, got {part!r}")
        s = self.split(split, seed, test_fraction)
        if part == "test":
            return s.test
        kept, held = store.carve_by_group(s.train, self.index, val_fraction, seed)
        return kept if part == "train" else held

    # -------------------------------------------------------------- features, verified
    def read(self, rows: np.ndarray) -> np.ndarray:
        """Features of `rows`: (n, T, D) float16, whole verified shards read (modalities side by side).
        A fixed-T set's only: a ragged set's videos are read_videos'."""
        parts = [store.read_features(self.sets[m], self.indexes[m], self.rows_in[m][rows]) for m in self.modalities]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def read_videos(self, rows: np.ndarray) -> list[np.ndarray]:
        """Each video's own rows, either layout: [(T_i, D) float16] of `rows`, in that order (modalities
        side by side); a shard at a time, verified."""
        parts = [store.read_videos(self.sets[m], self.indexes[m], self.rows_in[m][rows]) for m in self.modalities]
        return parts[0] if len(parts) == 1 else [np.concatenate(videos, axis=-1) for videos in zip(*parts)]

    def shards(
        self, rows: np.ndarray, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | list[np.ndarray]]]:
        """(positions (k,) into `rows`, features), one shard of the first modality at a time, verified,
        the next one read by a thread while the caller uses this one. features: (k, T, D) float16 of a
        fixed-T set; a ragged set's k videos' own (T_i, D) float16 arrays, a list."""
        rows = np.asarray(rows, dtype=np.int64)
        shard_of = self.index.shard[rows]
        order = np.unique(shard_of)
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator).numpy()]
        positions = [np.flatnonzero(shard_of == k) for k in order]
        if not positions:
            return
        read: Callable[[np.ndarray], np.ndarray | list[np.ndarray]] = self.read_videos if self.ragged else self.read
        with cf.ThreadPoolExecutor(1, thread_name_prefix="shard-prefetch") as pool:
            pending = pool.submit(read, rows[positions[0]])
            for n, pos in enumerate(positions):
                feats = pending.result()
                if n + 1 < len(positions):
                    pending = pool.submit(read, rows[positions[n + 1]])
                yield pos, feats

    def stats(self, rows: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std (D,) float32 over the valid frames of `rows`, shard by shard; each
        modality's over the videos that have it."""
        lengths, presence = self.index.lengths, self.presence
        if self.ragged:  # every stored row counts: each is a "video" of one frame to feature_stats
            rows_ = ((pos, list(videos)) for pos, videos in self.shards(rows))
            return feature_stats(
                (row_chunk(videos, presence[rows[pos]]) for pos, videos in rows_), device, list(self.dims.values())
            )
        chunks = ((np.asarray(feats), lengths[rows[pos]], presence[rows[pos]]) for pos, feats in self.shards(rows))
        return feature_stats(chunks, device, list(self.dims.values()))

    def training_stats(
        self, split: str | int = 1, val_fraction: float = 0.0, seed: int = 0, test_fraction: float = 0.2
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """stats() of the training part of a split (computed once per split, carve and seed)."""
        key = (str(split), val_fraction, seed, test_fraction)
        if key not in self._stats:
            self._stats[key] = self.stats(self.rows(split, "train", val_fraction, seed, test_fraction))
        return self._stats[key]

    # -------------------------------------------------------------- for other teams' code
    def dataset(
        self,
        split: str | int = 1,
        part: str = "train",
        standardize: bool = False,
        val_fraction: float = 0.0,
        seed: int = 0,
        test_fraction: float = 0.2,
    ) -> FeatureDataset:
        """A map-style torch Dataset of one part; see FeatureDataset for its items."""
        rows = self.rows(split, part, val_fraction, seed, test_fraction)
        stats = self.training_stats(split, val_fraction, seed, test_fraction) if standardize else None
        return FeatureDataset(self, rows, stats)

    def stream(
        self,
        split: str | int = 1,
        part: str = "train",
        standardize: bool = False,
        val_fraction: float = 0.0,
        seed: int = 0,
        test_fraction: float = 0.2,
        shuffle: bool = True,
        buffer: int = 1024,
    ) -> FeatureStream:
        """An IterableDataset of one part, read shard by shard (memory: about two shards and `buffer` items)."""
        rows = self.rows(split, part, val_fraction, seed, test_fraction)
        stats = self.training_stats(split, val_fraction, seed, test_fraction) if standardize else None
        return FeatureStream(self, rows, stats, shuffle, buffer, seed)

    def arrays(
        self,
        split: str | int = 1,
        part: str = "train",
        standardize: bool = False,
        val_fraction: float = 0.0,
        seed: int = 0,
        test_fraction: float = 0.2,
    ) -> dict[str, np.ndarray]:
        """One part whole in memory: features (n, T, D) float16 (float32 when standardised, padded frames
        zero), lengths (n,) int64, labels (n,) int64, video_ids (n,) str, groups (n,) str, present (n, M)
        bool (per modality, in `modalities` order). A ragged set's features are (R, D), the videos' rows
        one after another (video i's from lengths[:i].sum()), nothing padded."""
        rows = self.rows(split, part, val_fraction, seed, test_fraction)
        if self.ragged:
            videos = self.read_videos(rows)
            flat = np.concatenate(videos) if videos else np.zeros((0, self.feature_dim), np.float16)
            if standardize:
                mean, std = self.training_stats(split, val_fraction, seed, test_fraction)
                ones = torch.ones(len(flat), dtype=torch.int64)
                flat = standardized(torch.from_numpy(flat)[:, None], ones, mean, std, torch.float32)[:, 0].numpy()
            feats = flat
        else:
            feats = self.read(rows)
        if standardize and not self.ragged:
            mean, std = self.training_stats(split, val_fraction, seed, test_fraction)
            lengths = torch.from_numpy(self.index.lengths[rows])
            feats = standardized(torch.from_numpy(feats), lengths, mean, std, torch.float32).numpy()
        return {
            "features": feats,
            "lengths": self.index.lengths[rows],
            "labels": self.index.labels[rows],
            "video_ids": self.index.video_ids[rows],
            "groups": self.index.groups[rows],
            "present": self.presence[rows],
        }

    # -------------------------------------------------------------- one video at a time
    def video(self, video_id: str) -> dict:
        """One stored video, read through its shard's checksum: features (T_i, D) float32 (modalities
        side by side), timestamps (T_i,) float32 s, spans (T_i, 2) float32 [start, end) s, frame_indices
        (T_i,) or (T_i, K) int32, label (int, -1 if none), fps, duration (s), video_id. A fixed-T set's
        rows up to its length; its shards record neither frame rate nor duration, so fps is measured
        from the rows' frame indices and times and duration is None (spans: module video_record)."""
        if self._row_of is None:
            self._row_of = {str(v): i for i, v in enumerate(self.index.video_ids)}
        if video_id not in self._row_of:
            near = [v for v in self._row_of if Path(v).stem == Path(video_id).stem][:3]
            raise ReaderError(
                f"no video {video_id!r} in {', '.join(self.ids)} ({self.num_videos} videos stored"
                f"{'; did you mean ' + ', '.join(map(repr, near)) if near else ''})"
            )
        return next(self.videos(np.array([self._row_of[video_id]])))

    def videos(self, rows: np.ndarray | None = None) -> Iterator[dict]:
        """video() of every row of `rows` (default: every stored video), a verified shard at a time,
        in shard order (not the order of `rows`)."""
        rows = np.arange(self.num_videos) if rows is None else np.asarray(rows, dtype=np.int64)
        for k in np.unique(self.index.shard[rows]).tolist():
            mine = rows[self.index.shard[rows] == k]
            data = {m: self.shard_of(m, self.rows_in[m][mine[0]]) for m in self.modalities}
            for r in mine.tolist():
                yield self.video_of(r, data)

    def shard_of(self, modality: str, r: int) -> dict:
        """The verified shard holding row r of `modality`'s own index (store.verified_shard); the last one
        read is kept, so video() over the videos of one shard reads and checks it once."""
        index = self.indexes[modality]
        k = int(index.shard[r])
        if self._last_shard.get(modality, (None,))[0] != k:
            self._last_shard[modality] = (k, store.verified_shard(self.sets[modality], index, k))
        return self._last_shard[modality][1]

    def video_of(self, row: int, data: dict[str, dict]) -> dict:
        """video()'s dict of index row `row` from its shard per modality (FeatureSet.read_shard's dicts)."""
        feats = []
        for m in self.modalities:
            index, r = self.indexes[m], int(self.rows_in[m][row])
            feats.append(video_rows(data[m]["features"], int(index.offset[r]), int(index.lengths[r]), self.ragged))
        primary = self.modalities[0]
        local, start, length = int(self.index.row[row]), int(self.index.offset[row]), int(self.index.lengths[row])
        sampling = (self.manifest.identity or {}).get("sampling") or {}
        return {
            "video_id": str(self.index.video_ids[row]),
            "features": np.concatenate(feats, axis=-1).astype(np.float32),
            "label": int(self.index.labels[row]),
            **video_record(data[primary], local, start, length, self.ragged, sampling),
        }

    def item(self, row: int, feats: dict[str, np.ndarray], stats: tuple | None) -> dict:
        """The item of index row `row` from its features per modality (T, D_m) float16 (a ragged set's: (T_i, D_m))."""
        length = int(self.index.lengths[row])
        out = {}
        start = 0
        for m in self.modalities:
            x = torch.from_numpy(np.asarray(feats[m], dtype=np.float32))
            if stats is not None:
                dim = self.dims[m]
                mean, std = stats[0][start : start + dim], stats[1][start : start + dim]
                x = standardized(x[None], torch.tensor([length]), mean, std, torch.float32)[0]
                start += dim
            out[m] = x
        item: dict[str, object] = {
            "features": out[self.modalities[0]] if len(out) == 1 else out,
            "length": length,
            "label": int(self.index.labels[row]),
            "video_id": str(self.index.video_ids[row]),
        }
        if len(out) > 1:
            item["present"] = {m: bool(self.presence[row, k]) for k, m in enumerate(self.modalities)}
        return item


def video_record(data: dict, local: int, start: int, length: int, ragged: bool, sampling: dict) -> dict:
    """Where a video's rows come from, from its shard (FeatureSet.read_shard's dict): timestamps (T,)
    float32, spans (T, 2) float32, frame_indices (T,) or (T, K) int32, fps, duration. local: the video
    in the shard; start: its first row (ragged); length: its rows (T).

    A ragged shard records all of it. A fixed-T shard records times and frame indices only: fps is
    measured from them (None for a single row), duration is None, and each row's span is what its
    sampling says it stands for: FPS=R's [t, t + 1/R); a clip's first frame to its last frame's end;
    a uniform segment centre's segment, as wide as the rows are apart, centred on it.
    """
    if ragged:
        rows = slice(start, start + length)
        return {
            "timestamps": data["timestamps"][rows].astype(np.float32),
            "spans": data["spans"][rows].astype(np.float32),
            "frame_indices": data["frame_indices"][rows].astype(np.int32),
            "fps": float(data["video_fps"][local]),
            "duration": float(data["durations"][local]),
        }
    times = data["timestamps"][local, :length].astype(np.float64)
    index = data["frame_indices"][local, :length].astype(np.int32)
    centre = index if index.ndim == 1 else index[:, index.shape[1] // 2]
    fps = float((centre[-1] - centre[0]) / (times[-1] - times[0])) if length > 1 and times[-1] > times[0] else None
    if index.ndim == 2 and fps:
        spans = np.stack([times + (index[:, 0] - centre) / fps, times + (index[:, -1] - centre + 1) / fps], 1)
    elif sampling.get("mode") == "fps":
        spans = np.stack([times, times + 1 / sampling["fps"]], 1)
    else:
        width = float(np.median(np.diff(times))) if length > 1 else 1 / fps if fps else 0.0
        spans = np.stack([np.maximum(times - width / 2, 0), times + width / 2], 1)
    return {
        "timestamps": times.astype(np.float32),
        "spans": spans.astype(np.float32),
        "frame_indices": index,
        "fps": fps,
        "duration": None,
    }


def row_chunk(videos: list[np.ndarray], present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ragged shard's videos as feature_stats' chunk: every row a "video" of one frame.
    videos [(T_i, D)]; present (k, M) bool -> features (R, 1, D), lengths (R,) ones, present (R, M)."""
    lengths = np.array([len(v) for v in videos], np.int64)
    flat = np.concatenate(videos) if videos else np.zeros((0, 1), np.float16)
    return flat[:, None], np.ones(len(flat), np.int64), np.repeat(present, lengths, axis=0)


def pad_collate(items: Sequence[dict]) -> dict:
    """A DataLoader's collate_fn for items of their own length (a ragged set's; fixed-T items too).

    Returns features (B, T_max, D) float32 zero past each length (a joined view's: {modality: (B,
    T_max, D_m)}), mask (B, T_max) bool (True on real rows), lengths (B,) int64, labels (B,) int64,
    video_ids [B] str, and present {modality: (B,) bool} where the items have it.
    """
    lengths = torch.tensor([int(it["length"]) for it in items], dtype=torch.int64)
    longest = int(lengths.max()) if len(items) else 0
    mask = torch.arange(longest)[None, :] < lengths[:, None]

    def pad(xs: list[torch.Tensor]) -> torch.Tensor:
        out = xs[0].new_zeros((len(xs), longest, xs[0].shape[-1]))
        for i, (x, n) in enumerate(zip(xs, lengths.tolist())):
            out[i, :n] = x[:n]
        return out

    first = items[0]["features"]
    feats = (
        pad([it["features"] for it in items])
        if not isinstance(first, dict)
        else {m: pad([it["features"][m] for it in items]) for m in first}
    )
    batch: dict = {
        "features": feats,
        "mask": mask,
        "lengths": lengths,
        "labels": torch.tensor([int(it["label"]) for it in items], dtype=torch.int64),
        "video_ids": [it["video_id"] for it in items],
    }
    if "present" in items[0]:
        batch["present"] = {m: torch.tensor([it["present"][m] for it in items]) for m in items[0]["present"]}
    return batch


def length_batches(
    lengths: np.ndarray, batch: int, shuffle: bool = True, generator: torch.Generator | None = None, pool: int = 50
) -> list[np.ndarray]:
    """Batches of positions into `lengths` (n,) whose videos have similar lengths, so padding each batch
    to its longest wastes little: shuffled, then sorted by length within pools of `pool` batches, cut,
    and the batches shuffled (in order of length without `shuffle`). Every position once; the last
    batch of a pool may be short."""
    n = len(lengths)
    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    out = []
    for s in range(0, n, batch * pool):
        chunk = order[s : s + batch * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[b : b + batch] for b in range(0, len(chunk), batch)]
    if shuffle:
        out = [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]
    return out


class LengthBatchSampler(torch.utils.data.Sampler):
    """A DataLoader batch_sampler over a FeatureDataset: batches of `batch` videos of similar length
    (length_batches), reshuffled each pass; with pad_collate, each batch is padded only to its longest."""

    def __init__(self, dataset: FeatureDataset, batch: int, shuffle: bool = True, seed: int = 0):
        self.lengths = dataset.view.index.lengths[dataset.rows]
        self.batch, self.shuffle = batch, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[list[int]]:
        for b in length_batches(self.lengths, self.batch, self.shuffle, self.generator):
            yield b.tolist()

    def __len__(self) -> int:
        return len(length_batches(self.lengths, self.batch, shuffle=False))


class FeatureDataset(torch.utils.data.Dataset):
    """Map-style dataset of one part.

    item i: {"features": float32 tensor (T, D) (a joined view: {modality: (T, D_m)}; a ragged set's:
    the video's own (T_i, D)), "length": int (valid frames; rows past it are zeros), "label": int (index into `classes`), "video_id": str},
    and for a joined view "present": {modality: bool} (False: the video has no such stream, and
    its features there are the stored stand-in, e.g. silence).
    A shard is verified once per process on first use; a corrupt one raises IntegrityError
    naming it, here and in DataLoader workers alike.
    """

    def __init__(self, view: FeatureSetView, rows: np.ndarray, stats: tuple | None = None):
        self.view, self.rows, self.stats = view, np.asarray(rows, dtype=np.int64), stats
        self.classes = view.classes
        self._files: dict[tuple[str, str], h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        feats = {}
        for m in self.view.modalities:
            index, r = self.view.indexes[m], int(self.view.rows_in[m][row])
            fs = self.view.sets[m][index.shards[index.shard[r]].set_index]
            f = self.verified_file(fs, index.shards[index.shard[r]].file)
            local = int(index.row[r])
            if f["video_ids"].asstr()[local] != index.video_ids[r]:
                raise IntegrityError(
                    f"{fs.set_dir / index.shards[index.shard[r]].file}: row {local} is not "
                    f"{index.video_ids[r]!r}; the shard changed since the index was read"
                )
            if fs.ragged:  # the video's own rows of the shard's (R, D)
                start = int(index.offset[r])
                feats[m] = f["features"][start : start + int(index.lengths[r])]
            else:
                feats[m] = f["features"][local]
        return self.view.item(row, feats, self.stats)

    def verified_file(self, fs: FeatureSet, file: str) -> h5py.File:
        """The shard, checked against its manifest sha256 once in this process and then read through
        the same open file object (the verified bytes are the ones h5py reads)."""
        if os.getpid() != self._pid:  # a forked worker: the parent's handles are not ours to use
            self._files, self._pid = {}, os.getpid()
        key = (str(fs.set_dir), file)
        if key not in self._files:
            entry = fs.shard_entry(file)
            # kept open: h5py reads through it (a bucket's shard: its cached copy)
            handle = open(store.root_of(fs.set_dir).local_file(fs.set_dir / file, entry.sha256), "rb")
            digest = hashlib.sha256()
            while block := handle.read(1 << 20):
                digest.update(block)
            if digest.hexdigest() != entry.sha256:
                handle.close()
                raise IntegrityError.checksum(store.display(fs.set_dir / file))
            handle.seek(0)
            self._files[key] = h5py.File(handle, "r")
        return self._files[key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": {}}  # open files never travel to another process


class FeatureStream(torch.utils.data.IterableDataset):
    """Iterable dataset of one part: shards in a shuffled order (a new one each epoch), items
    shuffled within a buffer; DataLoader workers split the shards between them. Items as
    FeatureDataset's."""

    def __init__(
        self, view: FeatureSetView, rows: np.ndarray, stats: tuple | None, shuffle: bool, buffer: int, seed: int
    ):
        self.view, self.rows, self.stats = view, np.asarray(rows, dtype=np.int64), stats
        self.shuffle, self.buffer, self.seed, self.epoch = shuffle, max(1, buffer), seed, 0
        self.classes = view.classes

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """The shuffle of the next pass (every worker must agree on it; iteration advances it too)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict]:
        generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        self.epoch += 1
        worker = torch.utils.data.get_worker_info()
        mine = self.rows
        if worker is not None and worker.num_workers > 1:  # whole shards per worker: each is read once
            shard = self.view.index.shard[self.rows]
            mine = self.rows[np.isin(shard, np.unique(shard)[worker.id :: worker.num_workers])]
        buffer: list[dict] = []
        for pos, feats in self.view.shards(mine, self.shuffle, generator):
            for k, p in enumerate(pos):
                row = int(mine[p])
                split = np.split(feats[k], np.cumsum(list(self.view.dims.values()))[:-1], axis=-1)
                buffer.append(self.view.item(row, dict(zip(self.view.modalities, split)), self.stats))
                if len(buffer) >= self.buffer:
                    yield buffer.pop(int(torch.randint(len(buffer), (1,), generator=generator)) if self.shuffle else 0)
        if self.shuffle:
            buffer = [buffer[i] for i in torch.randperm(len(buffer), generator=generator).tolist()]
        yield from buffer
