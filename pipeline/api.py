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
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from . import store
from .config import MODALITIES, store_root
from .errors import IntegrityError, ReaderError
from .store import FeatureSet, Index

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

    def join(self, modality: str) -> np.ndarray:
        """Row of each video of the index in `modality`'s own index; a video missing on either side is an error."""
        primary, other = self.modalities[0], self.indexes[modality]
        if modality == primary:
            return np.arange(len(self.index.video_ids))
        a, b = self.sets[primary][0], self.sets[modality][0]
        if (a.frames, a.classes) != (b.frames, b.classes):
            raise ReaderError(
                f"cannot join {a.set_dir} ({primary}) and {b.set_dir} ({modality}): "
                f"their frames per video or classes differ; make both with the same dataset and sampling"
            )
        rows, missing = other.rows_of(self.index.video_ids)
        extra = sorted(set(other.video_ids) - set(self.index.video_ids))
        if missing or extra:
            where, vid = (b.set_dir, missing[0]) if missing else (a.set_dir, extra[0])
            raise ReaderError(
                f"FEATURES=: video {vid!r} has no features in {where} ({len(missing) + len(extra)} "
                f"video(s) differ); sets joined per modality must store the same videos"
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
    def frames(self) -> int:
        return self.manifest.frames

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
            f"FeatureSetView({', '.join(self.ids)}: {self.num_videos} videos, T={self.frames}, "
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
        """Features of `rows`: (n, T, D) float16, whole verified shards read (modalities side by side)."""
        parts = [store.read_features(self.sets[m], self.indexes[m], self.rows_in[m][rows]) for m in self.modalities]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def shards(
        self, rows: np.ndarray, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions (k,) into `rows`, features (k, T, D) float16), one shard of the first modality at a
        time, verified, the next one read by a thread while the caller uses this one."""
        rows = np.asarray(rows, dtype=np.int64)
        shard_of = self.index.shard[rows]
        order = np.unique(shard_of)
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator).numpy()]
        positions = [np.flatnonzero(shard_of == k) for k in order]
        if not positions:
            return
        with cf.ThreadPoolExecutor(1, thread_name_prefix="shard-prefetch") as pool:
            pending = pool.submit(self.read, rows[positions[0]])
            for n, pos in enumerate(positions):
                feats = pending.result()
                if n + 1 < len(positions):
                    pending = pool.submit(self.read, rows[positions[n + 1]])
                yield pos, feats

    def stats(self, rows: np.ndarray, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std (D,) float32 over the valid frames of `rows`, shard by shard; each
        modality's over the videos that have it."""
        lengths, presence = self.index.lengths, self.presence
        chunks = ((feats, lengths[rows[pos]], presence[rows[pos]]) for pos, feats in self.shards(rows))
        return store.feature_stats(chunks, device, list(self.dims.values()))

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
        bool (per modality, in `modalities` order)."""
        rows = self.rows(split, part, val_fraction, seed, test_fraction)
        feats = self.read(rows)
        if standardize:
            mean, std = self.training_stats(split, val_fraction, seed, test_fraction)
            lengths = torch.from_numpy(self.index.lengths[rows])
            feats = store.standardize(torch.from_numpy(feats), lengths, mean, std, torch.float32).numpy()
        return {
            "features": feats,
            "lengths": self.index.lengths[rows],
            "labels": self.index.labels[rows],
            "video_ids": self.index.video_ids[rows],
            "groups": self.index.groups[rows],
            "present": self.presence[rows],
        }

    def item(self, row: int, feats: dict[str, np.ndarray], stats: tuple | None) -> dict:
        """The item of index row `row` from its features per modality (T, D_m) float16."""
        length = int(self.index.lengths[row])
        out = {}
        start = 0
        for m in self.modalities:
            x = torch.from_numpy(np.asarray(feats[m], dtype=np.float32))
            if stats is not None:
                dim = self.dims[m]
                mean, std = stats[0][start : start + dim], stats[1][start : start + dim]
                x = store.standardize(x[None], torch.tensor([length]), mean, std, torch.float32)[0]
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


class FeatureDataset(torch.utils.data.Dataset):
    """Map-style dataset of one part.

    item i: {"features": float32 tensor (T, D) (a joined view: {modality: (T, D_m)}), "length": int
    (valid frames; rows past it are zeros), "label": int (index into `classes`), "video_id": str},
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
                raise IntegrityError(
                    f"{store.display(fs.set_dir / file)}: sha256 does not match the manifest; the shard is corrupt "
                    f"(run `store verify`)"
                )
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
