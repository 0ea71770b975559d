"""Stage two's view of the feature store: pick feature sets, pick a split, get batches.

    resolve_feature_sets(dataset, features, root) -> [set_dir]     FEATURES= / DATASET=
    open_feature_sets(dirs) -> [FeatureSet]                        refuses to mix unlike sets
    read_index(sets) -> Index                                      ids, labels, groups, lengths
    split_names(manifest, "all") -> ["1", "2", "3"]                SPLIT=
    select_split(sets, index, name, ...) -> Split                  train/test rows
    carve_by_group(rows, index, fraction, seed) -> (kept, held)    validation / missing test side
    MemorySource / StreamSource .batches(...)                      standardised (x, lengths, y)

Only shards listed in a manifest are ever opened, and every feature read goes through
`store.read_shard`, which checks the sha256 over the bytes it returns. h5py files are
opened by the process (and thread) that reads them and never cross a fork: the
streaming prefetcher is a thread, not a worker process.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np
import torch

from . import store
from .config import ConfigError, repo_root

# Identity fields that may differ between sets that can still be mixed: which videos and
# which dataset they came from. Everything else changes the numbers.
MIXABLE_IDENTITY = ("dataset", "videos_sha256")
# Extraction config fields that change the numbers, compared when a set has no identity.
NUMERIC_CONFIG = ("frames", "fps", "image_size", "resize", "backbone", "weights", "seed", "precision")
# Share of free memory (host RAM or GPU) a whole-in-memory load may take.
MEMORY_SHARE = 0.5
# Shards read at once by read_features.
READ_THREADS = min(4, os.cpu_count() or 1)


class ReaderError(store.StoreError):
    """A feature set or split cannot be used as asked; the message says why and what to do."""


# ---------------------------------------------------------------- finding feature sets
def store_root(features_root: Path | str | None) -> Path:
    return Path(features_root) if features_root else repo_root() / "data" / "features"


def describe_candidates(dirs: Iterable[Path]) -> str:
    lines = []
    for d in dirs:
        try:
            m = store.load_manifest(d)
            state = "complete" if m.get("complete") else f"partial {len(m['shards'])}/{m.get('num_shards', '?')} shards"
            lines.append(f"  {d}  (T={m['frames']}, weights {m['identity'].get('weights', '?')}, "
                         f"{m['num_stored']} videos, {state}, created {m.get('created_at', '?')})")
        except (store.StoreError, KeyError) as e:
            lines.append(f"  {d}  (unreadable: {e})")
    return "\n".join(lines) or "  none"


def find_feature_set(ref: str, dataset: str, root: Path) -> Path:
    """A set by directory path, by id under root/<dataset>/, or by unique id prefix anywhere."""
    if (Path(ref) / store.MANIFEST).is_file():
        return Path(ref)
    if (root / dataset / ref / store.MANIFEST).is_file():
        return root / dataset / ref
    matches = store.match_feature_sets(root, ref)
    if len(matches) == 1:
        return matches[0]
    what = "more than one feature set matches" if matches else "no feature set matches"
    raise ReaderError(f"--features (FEATURES=): {what} {ref!r} under {root}; known sets:\n"
                      f"{describe_candidates(list(store.feature_sets(root)))}")


def default_set_dir(dataset: str, root: Path) -> Path | None:
    """The set stage one's defaults produce for `dataset`, or None when it cannot be computed here.

    Computing it lists the raw dataset (the id hashes the video listing), so it is only
    tried when that is cheap and has no side effect: never generates the sample dataset.
    """
    try:
        from stages.extract import default_feature_set

        from .config import ExtractConfig
        from .synth import sample_dataset_ready

        if dataset == "sample" and not sample_dataset_ready(ExtractConfig(dataset="sample").root):
            return None
        return default_feature_set(dataset, root)
    except Exception:  # no raw data here, no cached weights, an unknown adapter name: fall back
        return None


def resolve_feature_sets(dataset: str, features: str | None = None, features_root: Path | str | None = None) -> list[Path]:
    """Directories of the feature sets to train on.

    features: comma-separated ids or paths (FEATURES=). None picks the set of `dataset`:
    the one stage one's default settings produce when it is there and complete, else the
    newest complete set under root/<dataset>/ (saying which, and what else is there).
    No complete set is an error that lists the candidates.
    """
    root = store_root(features_root)
    if features:
        return [find_feature_set(ref.strip(), dataset, root) for ref in features.split(",") if ref.strip()]
    candidates = [d for d in store.feature_sets(root) if d.parent.name == dataset]
    if not candidates:
        datasets = sorted({d.parent.name for d in store.feature_sets(root)})
        raise ReaderError(
            f"--dataset (DATASET=): no feature set for {dataset!r} under {root} (datasets there: "
            f"{', '.join(datasets) or 'none'}); run `make features DATASET={dataset}` first, or pass FEATURES=<id or path>"
        )
    manifests = {d: store.load_manifest(d) for d in candidates}  # one read each: a UCF101 manifest lists every split
    complete = sorted((d for d in candidates if manifests[d].get("complete")), key=lambda d: manifests[d].get("created_at", ""))
    if not complete:
        raise ReaderError(
            f"--features (FEATURES=): none of the {len(candidates)} feature set(s) for {dataset!r} under {root} is complete:\n"
            f"{describe_candidates(candidates)}\nfinish one with `make features`, or pass FEATURES=<id or path> to train on a partial set"
        )
    if len(complete) == 1:
        return complete
    default = default_set_dir(dataset, root)
    if default is not None and default in complete:
        return [default]
    chosen = complete[-1]
    print(f"note: {len(complete)} complete feature sets for {dataset!r} and none is stage one's default here; using the newest, "
          f"{chosen.name} (choose with FEATURES=):\n{describe_candidates(complete)}", file=sys.stderr)
    return [chosen]


# ---------------------------------------------------------------- opening and mixing sets
@dataclass(frozen=True)
class FeatureSet:
    """One feature set on disk and its manifest (the only record of what is committed)."""

    set_dir: Path
    manifest: dict

    @property
    def id(self) -> str:
        return self.manifest["feature_set_id"]

    @property
    def frames(self) -> int:
        return int(self.manifest["frames"])

    @property
    def feature_dim(self) -> int:
        return int(self.manifest["feature_dim"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    def shard_entry(self, file: str) -> dict:
        """The manifest entry of shard `file`; a file the manifest does not list is refused."""
        for s in self.manifest["shards"]:
            if s["file"] == file:
                return s
        raise store.IntegrityError(f"{self.set_dir / file}: not listed in {self.set_dir / store.MANIFEST}; "
                                   f"an uncommitted or foreign shard is never read")

    def read_shard(self, file: str) -> dict:
        """A listed shard, verified against its manifest sha256 and checked against the set.

        Returns features (n, T, D) float16; lengths (n,) int32; labels (n,) int32;
        video_ids, groups (n,) str; frame_indices (n, T) int32; timestamps (n, T) float32.
        """
        entry = self.shard_entry(file)
        data = store.read_shard(self.set_dir / file, entry["sha256"])
        n, t, d = data["features"].shape
        if (t, d) != (self.frames, self.feature_dim) or n != entry["videos"]:
            raise store.IntegrityError(f"{self.set_dir / file}: holds {n} x {t} x {d} features, the manifest says "
                                       f"{entry['videos']} x {self.frames} x {self.feature_dim}")
        shard_set = data["attrs"].get("feature_set_id")
        if shard_set not in (None, self.id):
            raise store.IntegrityError(f"{self.set_dir / file}: belongs to feature set {shard_set!r}, not {self.id!r}")
        return data


def open_feature_sets(dirs: list[Path]) -> list[FeatureSet]:
    """Load the manifests and refuse to mix sets that would not give comparable numbers."""
    if not dirs:
        raise ReaderError("no feature set given")
    sets = [FeatureSet(Path(d), store.load_manifest(d)) for d in dirs]
    for fs in sets:
        if not fs.manifest["shards"]:
            raise ReaderError(f"feature set {fs.set_dir} has no committed shard yet; run `make features` first")
    for other in sets[1:]:
        check_compatible(sets[0], other)
    return sets


def extraction_settings(fs: FeatureSet) -> dict:
    """The settings that change the numbers: the identity minus which videos were listed,
    or, for a set written by another tool without an identity, the numeric config fields."""
    if fs.manifest.get("identity"):
        return {k: v for k, v in fs.manifest["identity"].items() if k not in MIXABLE_IDENTITY}
    config = fs.manifest.get("config", {})
    return {k: config.get(k) for k in NUMERIC_CONFIG}


def check_compatible(a: FeatureSet, b: FeatureSet) -> None:
    """Raise ReaderError, naming the difference, unless a and b can be read as one set.

    T and D must match, and so must every extraction setting (backbone, weights, sampling,
    image size, crop, normalisation, precision): features computed differently live in
    different spaces and a model trained on one is meaningless on the other.
    """
    name = f"feature sets {a.set_dir} and {b.set_dir}"
    if a.frames != b.frames:
        raise ReaderError(f"refusing to mix {name}: T differs ({a.frames} vs {b.frames} frames per video)")
    if a.feature_dim != b.feature_dim:
        raise ReaderError(f"refusing to mix {name}: D differs ({a.feature_dim} vs {b.feature_dim})")
    sa, sb = extraction_settings(a), extraction_settings(b)
    diff = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
    if diff:
        detail = "; ".join(f"{k}: {json.dumps(sa.get(k))} vs {json.dumps(sb.get(k))}" for k in diff)
        raise ReaderError(f"refusing to mix {name}: their extraction config differs ({detail})")
    if a.classes != b.classes:
        raise ReaderError(f"refusing to mix {name}: their class lists differ ({len(a.classes)} vs {len(b.classes)} classes, "
                          f"first difference at index {next((i for i, (x, y) in enumerate(zip(a.classes, b.classes)) if x != y), min(len(a.classes), len(b.classes)))})")


# ---------------------------------------------------------------- the index: everything but features
@dataclass(frozen=True)
class ShardRef:
    set_index: int  # position of the feature set in the list of sets
    file: str
    rows: int


@dataclass
class Index:
    """Per-video metadata of every committed video, in (set, shard, row) order.

    video_ids, groups (N,) str; labels (N,) int64; lengths (N,) int64 frames before padding;
    shard (N,) int64 index into `shards`; row (N,) int64 row within that shard.
    """

    video_ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    shard: np.ndarray
    row: np.ndarray
    shards: list[ShardRef]

    def rows_of(self, ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """(positions of the stored ids, ids that are not stored), in the order given."""
        where = {v: i for i, v in enumerate(self.video_ids)}
        found, missing = [], []
        for v in ids:
            (found.append(where[v]) if v in where else missing.append(v))
        return np.asarray(found, dtype=np.int64), missing


def read_index(sets: list[FeatureSet]) -> Index:
    """Read ids, labels, groups and lengths of every listed shard (small; no features).

    These few small datasets are read with h5py directly and not checksummed here: every
    feature read later verifies the whole file and its ids against this index.
    """
    cols: dict[str, list] = {k: [] for k in ("video_ids", "groups", "labels", "lengths", "shard", "row")}
    shards: list[ShardRef] = []
    for k, fs in enumerate(sets):
        for entry in fs.manifest["shards"]:
            with h5py.File(fs.set_dir / entry["file"], "r") as f:
                ids = f["video_ids"].asstr()[()]
                cols["groups"].append(f["groups"].asstr()[()])
                cols["labels"].append(f["labels"][()].astype(np.int64))
                cols["lengths"].append(f["lengths"][()].astype(np.int64))
            cols["video_ids"].append(ids)
            cols["shard"].append(np.full(len(ids), len(shards), np.int64))
            cols["row"].append(np.arange(len(ids), dtype=np.int64))
            shards.append(ShardRef(k, entry["file"], len(ids)))
    index = Index(*(np.concatenate(cols[k]) for k in ("video_ids", "groups", "labels", "lengths", "shard", "row")), shards=shards)
    seen, dupes = set(), []
    for v in index.video_ids:
        (dupes.append(v) if v in seen else seen.add(v))
    if dupes:
        raise ReaderError(f"refusing to mix feature sets that store the same videos ({len(dupes)} duplicates, e.g. {dupes[0]!r})")
    return index


# ---------------------------------------------------------------- splits
@dataclass(frozen=True)
class Split:
    """Rows (into the Index) of one train/test split; test carved by group when the dataset has none."""

    name: str
    train: np.ndarray  # (n_train,) int64
    test: np.ndarray  # (n_test,) int64
    carved_test: bool
    missing: int  # listed videos with no stored features (failed extraction)


def split_names(manifest: dict, split: str) -> list[str]:
    """SPLIT= resolved against the manifest: "all" means every official split.

    A dataset with a single split (folder/csv: "all" or "csv") serves it for SPLIT=1 and
    SPLIT=all alike, since there is nothing else to choose.
    """
    available = sorted(manifest["splits"], key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    numbered = [k for k in available if k.isdigit()]
    if split == "all":
        return numbered or available
    if split in available:
        return [split]
    if len(available) == 1 and split == "1":
        return available
    raise ReaderError(f"--split (SPLIT=): {split!r} is not a split of this feature set; choose one of "
                      f"{', '.join(available + ['all'])}")


def select_split(sets: list[FeatureSet], index: Index, name: str, seed: int = 0, test_fraction: float = 0.2) -> Split:
    """Train and test rows of split `name` (merged over sets); only stored videos count.

    A split with no test side (a folder or csv dataset without a split column) gets one
    carved from its training side by group, `test_fraction` of each class, seeded: clips
    of one group never sit on both sides.
    """
    train_ids = [v for fs in sets for v in fs.manifest["splits"].get(name, {}).get("train", [])]
    test_ids = [v for fs in sets for v in fs.manifest["splits"].get(name, {}).get("test", [])]
    train, missing_train = index.rows_of(train_ids)
    test, missing_test = index.rows_of(test_ids)
    labelled = lambda rows: rows[index.labels[rows] >= 0]
    train, test = labelled(train), labelled(test)
    carved = False
    if len(test) == 0:
        train, test = carve_by_group(train, index, test_fraction, seed + 7919)
        carved = True
    if len(train) == 0 or len(test) == 0:
        raise ReaderError(f"--split (SPLIT=): split {name!r} has {len(train)} training and {len(test)} test videos with "
                          f"stored features; both sides need at least one")
    return Split(name, train, test, carved, len(missing_train) + len(missing_test))


def carve_by_group(rows: np.ndarray, index: Index, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split `rows` into (kept, held) so that no group is on both sides.

    Stratified by class: within each class, whole groups (shuffled, seeded) are held out
    until they hold at least `fraction` of its videos, never past twice that share, and
    always leaving one group on the kept side. So a class of few large groups may hold out
    nothing: a tiny dataset keeps its training videos rather than trade a third of them
    for a validation part too small to mean anything. rows (n,) int64 into the index.
    """
    if fraction <= 0 or len(rows) == 0:
        return rows, rows[:0]
    rng = np.random.default_rng(seed)
    groups = index.groups[rows]
    by_group: dict[str, list[int]] = {}
    for r, g in zip(rows.tolist(), groups.tolist()):
        by_group.setdefault(g, []).append(r)
    by_class: dict[int, list[str]] = {}
    for g, members in by_group.items():  # a group counts for the class of its first clip
        by_class.setdefault(int(index.labels[members[0]]), []).append(g)
    held: set[str] = set()
    for label in sorted(by_class):
        class_groups = sorted(by_class[label])
        if len(class_groups) < 2:
            continue
        rng.shuffle(class_groups)
        total = sum(len(by_group[g]) for g in class_groups)
        taken = 0
        for g in class_groups[:-1]:  # always leave one group to learn from
            if taken >= fraction * total:
                break
            if taken + len(by_group[g]) > 2 * fraction * total:
                continue  # too big a bite: a smaller group may still fit
            held.add(g)
            taken += len(by_group[g])
    mask = np.array([g in held for g in groups.tolist()], dtype=bool)
    return rows[~mask], rows[mask]


# ---------------------------------------------------------------- standardisation statistics
def feature_stats(chunks: Iterable[tuple[np.ndarray, np.ndarray]], device: torch.device | str = "cpu"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over the valid frames of all chunks, computed on `device`.

    chunks: (features (n, T, D) float16, lengths (n,) int). Returns mean, std (D,) float32 on the CPU.
    Each chunk is reduced with its own mean first and the partial results are combined
    with Chan's formula in float64: ResNet features share a large common component, and
    the naive E[x^2] - E[x]^2 would cancel away the small variance that matters.
    """
    n_total, mean, m2 = 0, None, None
    for feats, lengths in chunks:
        x = torch.from_numpy(np.ascontiguousarray(feats)).to(device)
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < torch.as_tensor(lengths, device=x.device)[:, None]
        for start in range(0, x.shape[0], 1024):  # bounded float32 working copy
            frames = x[start : start + 1024][valid[start : start + 1024]].float()
            if len(frames) == 0:
                continue
            n = frames.shape[0]
            mu = frames.mean(0, dtype=torch.float64)
            d2 = ((frames - mu.float()) ** 2).sum(0, dtype=torch.float64)
            if mean is None:
                n_total, mean, m2 = n, mu, d2
                continue
            delta = mu - mean
            total = n_total + n
            mean = mean + delta * (n / total)
            m2 = m2 + d2 + delta**2 * (n_total * n / total)
            n_total = total
    if mean is None:
        raise ReaderError("no valid frame to compute standardisation statistics from (empty training part)")
    std = (m2 / max(n_total - 1, 1)).sqrt()
    # A constant dimension (e.g. a ReLU that never fires) carries nothing; dividing by
    # ~0 would blow its rounding noise up to O(1).
    std = torch.where(std > 1e-6 * (1 + mean.abs()), std, torch.ones_like(std))
    return mean.float().cpu(), std.float().cpu()


def standardize(features: torch.Tensor, lengths: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                dtype: torch.dtype) -> torch.Tensor:
    """(x - mean) / std with padded frames set to exactly zero.

    features (n, T, D) any float dtype; lengths (n,) int; mean, std (D,) float32 on the
    same device. Returns (n, T, D) `dtype`.
    """
    x = (features.float() - mean) / std
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x.mul_(valid[..., None]).to(dtype)


# ---------------------------------------------------------------- loading strategy
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
    """"memory" or "stream" for LOAD=auto|memory|stream.

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
        fits = on_device <= MEMORY_SHARE * available_bytes(device) and host <= MEMORY_SHARE * available_bytes(torch.device("cpu"))
    else:
        fits = host + on_device <= MEMORY_SHARE * available_bytes(device)
    return "memory" if fits else "stream"


# ---------------------------------------------------------------- reading features
def read_features(sets: list[FeatureSet], index: Index, rows: np.ndarray) -> np.ndarray:
    """Features of `rows`, read whole shard by whole shard (contiguous reads), verified.

    rows (n,) int64 into the index. Returns (n, T, D) float16 in the order of `rows`.
    """
    fs0 = sets[0]
    out = np.empty((len(rows), fs0.frames, fs0.feature_dim), np.float16)
    wanted = np.zeros(len(index.video_ids), dtype=np.int64) - 1
    wanted[rows] = np.arange(len(rows))
    needed = np.unique(index.shard[rows]).tolist()  # the other shards are never opened

    def copy_shard(k: int) -> None:
        mine = np.flatnonzero(index.shard == k)
        dest = wanted[mine]
        take = dest >= 0
        out[dest[take]] = verified_shard(sets, index, k)["features"][index.row[mine[take]]]

    # Threads overlap file reads and sha256 (both release the GIL); each opens its own
    # in-memory HDF5 image, so no h5py handle is shared. Few in flight: each holds a shard twice.
    with cf.ThreadPoolExecutor(min(READ_THREADS, len(needed) or 1), thread_name_prefix="shard-read") as pool:
        list(pool.map(copy_shard, needed))  # re-raises a reader's error here
    return out


def verified_shard(sets: list[FeatureSet], index: Index, k: int) -> dict:
    """Shard k of the index, read through the checksum, with its ids checked against the index."""
    ref = index.shards[k]
    data = sets[ref.set_index].read_shard(ref.file)
    expected = index.video_ids[index.shard == k]
    if len(data["video_ids"]) != len(expected) or (np.asarray(data["video_ids"]) != expected).any():
        raise store.IntegrityError(f"{sets[ref.set_index].set_dir / ref.file}: its video ids changed since the index was read")
    return data


class MemorySource:
    """One part (train, validation or test) held whole as a standardised tensor on the device.

    Built from `store_features (M, T, D) float16` (the videos read once for all splits)
    and `positions (n,)` of this part's videos in it. Holds features (n, T, D) `dtype`,
    standardised with padded frames zero, lengths (n,) and labels (n,) int64, all on
    `device`. Batches index these tensors directly: no DataLoader, no per-batch conversion.
    """

    def __init__(self, store_features: np.ndarray, positions: np.ndarray, lengths: np.ndarray, labels: np.ndarray,
                 video_ids: np.ndarray, mean: torch.Tensor, std: torch.Tensor, device: torch.device, dtype: torch.dtype,
                 chunk: int = 512):
        self.device = device
        self.video_ids = np.asarray(video_ids)
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64).to(device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(device)
        self.features = torch.empty((len(positions), *store_features.shape[1:]), dtype=dtype, device=device)
        mean, std = mean.to(device), std.to(device)
        for s in range(0, len(positions), chunk):  # bounded float32 working copy
            x = torch.from_numpy(store_features[positions[s : s + chunk]]).to(device, non_blocking=True)
            self.features[s : s + chunk] = standardize(x, self.lengths[s : s + chunk], mean, std, dtype)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch: int, shuffle: bool = False, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]]:
        """Yield (x (B, T, D), lengths (B,), labels (B,), positions (B,) numpy into this part)."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        # One copy of the whole order per pass, from pinned memory and asynchronous: a
        # per-batch copy from pageable memory would wait for the GPU on every step.
        on_device = order.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else order
        for s in range(0, len(self), batch):
            idx = on_device[s : s + batch]
            yield self.features[idx], self.lengths[idx], self.labels[idx], order[s : s + batch].numpy()


def memory_chunks(store_features: np.ndarray, positions: np.ndarray, lengths: np.ndarray, chunk: int = 1024
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(features (n, T, D) float16, lengths (n,)) of `positions`, a chunk at a time (for feature_stats)."""
    for s in range(0, len(positions), chunk):
        yield store_features[positions[s : s + chunk]], lengths[s : s + chunk]


def stream_chunks(sets: list[FeatureSet], index: Index, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(features (n, T, D) float16, lengths (n,)) of `rows`, one verified shard at a time (for feature_stats)."""
    selected = np.zeros(len(index.video_ids), dtype=bool)
    selected[rows] = True
    for k in sorted(set(index.shard[rows].tolist())):
        mine = np.flatnonzero((index.shard == k) & selected)
        yield verified_shard(sets, index, k)["features"][index.row[mine]], index.lengths[mine]


class StreamSource:
    """One part read shard by shard on every pass, for sets larger than memory.

    Each shard is read whole (one contiguous read, checksummed) by a prefetch thread while
    the previous one trains; its selected rows are shuffled, standardised and cut into
    batches, with leftovers carried into the next shard so every batch but the last is full.
    """

    def __init__(self, sets: list[FeatureSet], index: Index, rows: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
                 device: torch.device, dtype: torch.dtype):
        self.sets, self.index, self.device, self.dtype = sets, index, device, dtype
        self.rows = np.asarray(rows, dtype=np.int64)
        self.video_ids = index.video_ids[self.rows]
        self.mean, self.std = mean.to(device), std.to(device)
        # position within this part of each index row (-1: not in it), to report predictions in part order
        self.position = np.full(len(index.video_ids), -1, np.int64)
        self.position[self.rows] = np.arange(len(self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def shard_order(self, shuffle: bool, generator: torch.Generator | None) -> list[int]:
        used = np.unique(self.index.shard[self.rows]).tolist()
        if shuffle:
            used = [used[i] for i in torch.randperm(len(used), generator=generator).tolist()]
        return used

    def batches(self, batch: int, shuffle: bool = False, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]]:
        """Yield (x (B, T, D), lengths (B,), labels (B,), positions (B,) into this part)."""
        order = self.shard_order(shuffle, generator)
        selected = self.position >= 0
        carry: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]] = []
        with cf.ThreadPoolExecutor(1, thread_name_prefix="shard-prefetch") as pool:
            pending = pool.submit(verified_shard, self.sets, self.index, order[0]) if order else None
            for n, k in enumerate(order):
                data = pending.result()
                pending = pool.submit(verified_shard, self.sets, self.index, order[n + 1]) if n + 1 < len(order) else None
                mine = np.flatnonzero((self.index.shard == k) & selected)
                if shuffle:
                    mine = mine[torch.randperm(len(mine), generator=generator).numpy()]
                local = self.index.row[mine]
                lengths = torch.from_numpy(self.index.lengths[mine]).to(self.device)
                x = standardize(torch.from_numpy(data["features"][local]).to(self.device), lengths, self.mean, self.std, self.dtype)
                labels = torch.from_numpy(data["labels"][local].astype(np.int64)).to(self.device)
                pos = self.position[mine]
                carry.append((x, lengths, labels, pos))
                yield from self.drain(carry, batch, final=False)
        yield from self.drain(carry, batch, final=True)

    @staticmethod
    def drain(carry: list, batch: int, final: bool) -> Iterator[tuple]:
        """Cut full batches off the carried pieces (all of it when `final`); keep the rest."""
        total = sum(len(c[2]) for c in carry)
        if total < batch and not (final and total):
            return
        x, lengths, labels = (torch.cat([c[i] for c in carry]) for i in range(3))
        pos = np.concatenate([c[3] for c in carry])
        carry.clear()
        full = total if final else total - total % batch
        for s in range(0, full, batch):
            yield x[s : s + batch], lengths[s : s + batch], labels[s : s + batch], pos[s : s + batch]
        if full < total:
            carry.append((x[full:], lengths[full:], labels[full:], pos[full:]))
