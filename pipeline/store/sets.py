"""Opening feature sets, their index and splits, and verified reads: how anyone reads the store.

    find_feature_set(ref, dataset, root) / resolve_feature_sets(...)   by id, prefix, path, or
                                                                      a dataset's default set
    open_feature_sets(dirs) -> [FeatureSet]                           refuses to mix unlike sets
    read_index(sets) -> Index                                         ids, labels, groups, lengths, presence,
                                                                      where each video's rows are
    split_names(splits, "all") / select_split(...) -> Split         the official splits
    carve_by_group(rows, index, fraction, seed) -> (kept, held)       validation / a missing test side
    read_features(sets, index, rows) / verified_shard(...)            features (n, T, D) of a fixed-T set, checksummed
    read_videos(sets, index, rows)                                    each video's own rows (T_i, D), either layout

Only shards listed in a manifest are ever opened, and every feature read goes through
`shards.read_shard`, which checks the sha256 over the bytes it returns. h5py files are
opened by the process (and thread) that reads them and never cross a fork.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import console
from ..config import store_dataset_name, store_root
from ..errors import ConfigError, IntegrityError, ReaderError, StoreError
from .catalog import feature_sets, list_sets, match_feature_sets, table
from .manifest import MANIFEST, Manifest, ShardEntry
from .roots import display, root_of
from .shards import ragged_problems, read_shard, video_offsets

# Identity fields that may differ between sets that can still be mixed: which videos and
# which dataset they came from. Everything else changes the numbers.
MIXABLE_IDENTITY = ("dataset", "videos_sha256")
# Extraction config fields that change the numbers, compared when a set has no identity.
NUMERIC_CONFIG = ("frames", "fps", "image_size", "resize", "backbone", "weights", "seed", "precision")
# Shards read at once by read_features.
READ_THREADS = min(4, os.cpu_count() or 1)


def describe_candidates(dirs: Iterable[Path]) -> str:
    lines = []
    for d in dirs:
        try:
            m = Manifest.read(d)
            state = "complete" if m.complete else f"partial {len(m.shards)}/{m.num_shards} shards"
            lines.append(
                f"  {display(d)}  (T={m.frames or 'per video'}, weights {m.identity.get('weights', '?')}, "
                f"{m.num_stored} videos, {state}, created {m.created_at})"
            )
        except StoreError as e:
            lines.append(f"  {display(d)}  (unreadable: {e})")
    return "\n".join(lines) or "  none"


def find_feature_set(ref: str, root: Path, dataset: str | None = None) -> Path:
    """A set by directory path, by id under root/<dataset>/, or by unique id (or dataset/id) prefix."""
    if Path(ref).parts and root_of(ref).exists(Path(ref) / MANIFEST):
        return Path(ref)
    if dataset and root_of(root).exists(root / dataset / ref / MANIFEST):
        return root / dataset / ref
    matches = match_feature_sets(root, ref)
    if len(matches) == 1:
        return matches[0]
    what = "more than one feature set matches" if matches else "no feature set matches"
    raise ReaderError(
        f"--features (FEATURES=): {what} {ref!r} under {display(root)}; known sets:\n"
        f"{describe_candidates(list(feature_sets(root)))}"
    )


def the_set(features_root: Path, ref: str | None = None) -> Path:
    """The set `store info` describes: the one `ref` names (an id, a unique prefix of one,
    dataset/id, or a directory), or without `ref` the only set under the root. Several sets and
    no `ref` is a ConfigError listing them; no set at all a StoreError."""
    if ref:
        return find_feature_set(ref, features_root)
    sets = list(feature_sets(features_root))
    if not sets:
        raise StoreError(f"no feature sets under {display(features_root)}; `make features` makes one")
    if len(sets) > 1:
        raise ConfigError(
            f"{len(sets)} feature sets under {display(features_root)}; pass one's id (ID= for `make store-info`), a unique "
            f"prefix of it, or dataset/id:\n{table(list_sets(features_root))}"
        )
    return sets[0]


def resolve_feature_sets(
    dataset: str,
    features: str | None = None,
    features_root: Path | str | None = None,
    modality: str | None = None,
    words: str = "",
) -> list[Path]:
    """Directories of the feature sets to read.

    features: comma-separated ids, id prefixes or paths (FEATURES=). None picks the set
    of `dataset` from what the store records: its only complete set; else the newest
    complete set that stage one made with its default settings (the manifest says so);
    else the newest complete set, saying which and what else is there. No complete set is
    an error that lists the candidates. modality ("rgb", "audio"; None: any) limits that
    choice to the sets of one modality (MODALITIES=); sets named by `features` are taken as named.
    words: the Make variables that name `dataset` (default DATASET=<dataset>), for the error's advice.
    """
    root = store_root(features_root)
    if features:
        return [find_feature_set(ref.strip(), root, dataset) for ref in features.split(",") if ref.strip()]
    in_dataset = [d for d in feature_sets(root) if d.parent.name == dataset]
    manifests = {d: Manifest.read(d) for d in in_dataset}  # one read each: a UCF101 manifest lists every split
    candidates = [d for d in in_dataset if modality in (None, manifests[d].modality)]
    if not candidates:
        held = sorted({m.modality for m in manifests.values()})
        raise ReaderError(no_set_message(dataset, root, modality, held, words or f"DATASET={dataset}"))
    newest_first = lambda dirs: sorted(dirs, key=lambda d: manifests[d].created_at, reverse=True)
    complete = newest_first(d for d in candidates if manifests[d].complete)
    kind = f"{modality} " if modality else ""
    if not complete:
        raise ReaderError(
            f"--features (FEATURES=): none of the {len(candidates)} {kind}feature set(s) for {dataset!r} under {display(root)} "
            f"is complete:\n{describe_candidates(candidates)}\nfinish one with `make features`, or pass "
            f"FEATURES=<id or path> to train on a partial set"
        )
    if len(complete) == 1:
        return complete
    defaults = [d for d in complete if manifests[d].default_settings]
    chosen = (defaults or complete)[0]
    console.say(
        f"note: {len(complete)} complete {kind}feature sets for {dataset!r}; using the newest"
        f"{' made with the default settings' if defaults else ''}, {chosen.name} (choose with FEATURES=):\n"
        f"{describe_candidates(complete)}"
    )
    return [chosen]


def no_set_message(dataset: str, root: Path, modality: str | None, held: list[str], words: str) -> str:
    """Why DATASET= (and MODALITIES=) found no set, and what to type; held: the modalities the dataset's
    sets hold; words: the Make variables the user gave that name the dataset."""
    where = "" if Path(root) == store_root(None) else f" FEATURES_ROOT={display(root)}"  # the root the user named
    if not held:
        made = {d.parent.name: d for d in feature_sets(root)}
        there = "".join(f"\n  `make train {made_with(d)}{where}`  ({name}/)" for name, d in sorted(made.items()))
        return (
            f"--dataset (DATASET=): no feature set for {dataset!r} under {display(root)}; "
            f"run `make features {words}{where}` first, or pass FEATURES=<id or path>. "
            + (f"The sets there are trained with:{there}" if there else "The store holds no feature set yet.")
        )
    return (
        f"--modalities (MODALITIES=): no {modality} feature set for {dataset!r} under {display(root)} (its sets hold "
        f"{', '.join(held)}); run `make features {words} MODALITY={modality}{where}` first, or pass "
        f"FEATURES=<id or path>"
    )


def made_with(set_dir: Path) -> str:
    """The Make variables that name a set's dataset, as `features` was given them (from its manifest)."""
    try:
        config = Manifest.read(set_dir).config
    except StoreError:
        return f"DATASET={set_dir.parent.name}"
    dataset, data_dir, name = config.get("dataset", ""), config.get("data_dir"), config.get("name")
    if store_dataset_name(dataset, data_dir, name) != set_dir.parent.name:  # moved, or not made by `features`
        return f"DATASET={set_dir.parent.name}"
    words = [f"DATASET={dataset}"]
    if name:
        words.append(f"NAME={name}")
    elif dataset in ("folder", "csv") and data_dir:
        words.append(f"DATA_DIR={data_dir}")
    return " ".join(words)


# ---------------------------------------------------------------- opening and mixing sets
@dataclass(frozen=True)
class FeatureSet:
    """One feature set on disk and its manifest (the only record of what is committed)."""

    set_dir: Path
    manifest: Manifest

    @property
    def id(self) -> str:
        return self.manifest.feature_set_id

    @property
    def frames(self) -> int | None:
        """T of a fixed-T set; None for a ragged one."""
        return self.manifest.frames

    @property
    def ragged(self) -> bool:
        return self.manifest.ragged

    @property
    def feature_dim(self) -> int:
        return self.manifest.feature_dim

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    def shard_entry(self, file: str) -> ShardEntry:
        """The manifest entry of shard `file`; a file the manifest does not list is refused."""
        entry = self.manifest.shard(file)
        if entry is not None:
            return entry
        raise IntegrityError(
            f"{display(self.set_dir / file)}: not listed in {display(self.set_dir / MANIFEST)}; "
            f"an uncommitted or foreign shard is never read"
        )

    def read_shard(self, file: str) -> dict[str, Any]:
        """A listed shard, verified against its manifest sha256 and checked against the set.

        Returns, fixed-T: features (n, T, D) float16; lengths (n,) int32; labels (n,) int32;
        video_ids, groups (n,) str; frame_indices (n, T) int32 ((n, T, K) for a clip model's
        set); timestamps (n, T) float32. Ragged (docs/store.md): features (R, D) float16, the
        per-row frame_indices (R,) or (R, K), timestamps (R,), spans (R, 2), and per video
        lengths, labels, video_ids, groups, durations, video_fps (n,).
        """
        entry = self.shard_entry(file)
        data = read_shard(self.set_dir / file, entry.sha256)
        shape = data["features"].shape
        if self.ragged:
            problems = ragged_problems(data, entry.videos)
            if shape[-1] != self.feature_dim:
                problems.insert(0, f"features are {shape[-1]} wide, the manifest says D = {self.feature_dim}")
            if problems:
                raise IntegrityError(f"{self.set_dir / file}: an inconsistent ragged shard: {'; '.join(problems)}")
        elif len(shape) != 3 or shape[1:] != (self.frames, self.feature_dim) or shape[0] != entry.videos:
            raise IntegrityError(
                f"{display(self.set_dir / file)}: holds {' x '.join(map(str, shape))} features, the manifest says "
                f"{entry.videos} x {self.frames} x {self.feature_dim}"
            )
        shard_set = data["attrs"].get("feature_set_id")
        if shard_set not in (None, self.id):
            raise IntegrityError(
                f"{display(self.set_dir / file)}: belongs to feature set {shard_set!r}, not {self.id!r}"
            )
        return data


def open_feature_sets(dirs: list[Path]) -> list[FeatureSet]:
    """Load the manifests and refuse to mix sets that would not give comparable numbers."""
    if not dirs:
        raise ReaderError("no feature set given")
    sets = [FeatureSet(Path(d), Manifest.read(d)) for d in dirs]
    for fs in sets:
        if not fs.manifest.shards:
            raise ReaderError(
                f"feature set {display(fs.set_dir)} has no committed shard yet; run `make features` first"
            )
    for other in sets[1:]:
        check_compatible(sets[0], other)
    return sets


def extraction_settings(fs: FeatureSet) -> dict:
    """The settings that change the numbers: the identity minus which videos were listed,
    or, for a set written by another tool without an identity, the numeric config fields."""
    if fs.manifest.identity:
        return {k: v for k, v in fs.manifest.identity.items() if k not in MIXABLE_IDENTITY}
    config = fs.manifest.config
    return {k: config.get(k) for k in NUMERIC_CONFIG}


def check_compatible(a: FeatureSet, b: FeatureSet) -> None:
    """Raise ReaderError, naming the difference, unless a and b can be read as one set.

    T and D must match, and so must every extraction setting (backbone, weights, sampling,
    image size, crop, normalisation, precision): features computed differently live in
    different spaces and a model trained on one is meaningless on the other.
    """
    name = f"feature sets {display(a.set_dir)} and {display(b.set_dir)}"
    if a.ragged != b.ragged:
        raise ReaderError(f"refusing to mix {name}: one is ragged (rows per video), the other fixed-T")
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
        raise ReaderError(
            f"refusing to mix {name}: their class lists differ ({len(a.classes)} vs {len(b.classes)} classes, "
            f"first difference at index {next((i for i, (x, y) in enumerate(zip(a.classes, b.classes)) if x != y), min(len(a.classes), len(b.classes)))})"
        )


# ---------------------------------------------------------------- the index: everything but features
@dataclass(frozen=True)
class ShardRef:
    set_index: int  # position of the feature set in the list of sets
    file: str
    rows: int


@dataclass
class Index:
    """Per-video metadata of every committed video, in (set, shard, row) order.

    video_ids, groups (N,) str; labels (N,) int64; lengths (N,) int64 frames before padding
    (a ragged set's: the video's rows); shard (N,) int64 index into `shards`; row (N,) int64
    video within that shard; offset (N,) int64 where its rows start in the shard's features (a
    ragged shard's (R, D); a fixed-T shard's: row); present (N,) bool: the set's stream exists
    for the video (an audio set's `has_audio`; True for every video of a set whose shards carry
    no such flag).
    """

    video_ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    shard: np.ndarray
    row: np.ndarray
    present: np.ndarray
    shards: list[ShardRef]
    offset: np.ndarray

    def rows_of(self, ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """(positions of the stored ids, ids that are not stored), in the order given."""
        where = {v: i for i, v in enumerate(self.video_ids)}
        found, missing = [], []
        for v in ids:
            (found.append(where[v]) if v in where else missing.append(v))
        return np.asarray(found, dtype=np.int64), missing


def read_index(sets: list[FeatureSet]) -> Index:
    """Read ids, labels, groups, lengths and presence (`has_audio`, where a shard has it) of
    every listed shard (small; no features).

    These few small datasets are read with h5py directly and not checksummed here: every
    feature read later verifies the whole file and its ids against this index.
    """
    columns = ("video_ids", "groups", "labels", "lengths", "shard", "row", "present", "offset")
    cols: dict[str, list] = {k: [] for k in columns}
    shards: list[ShardRef] = []
    for k, fs in enumerate(sets):
        for entry in fs.manifest.shards:
            with h5py.File(root_of(fs.set_dir).local_file(fs.set_dir / entry.file, entry.sha256), "r") as f:
                ids = f["video_ids"].asstr()[()]
                cols["groups"].append(f["groups"].asstr()[()])
                cols["labels"].append(f["labels"][()].astype(np.int64))
                lengths = f["lengths"][()].astype(np.int64)
                cols["lengths"].append(lengths)
                cols["present"].append(f["has_audio"][()] != 0 if "has_audio" in f else np.ones(len(ids), bool))
            cols["video_ids"].append(ids)
            cols["shard"].append(np.full(len(ids), len(shards), np.int64))
            cols["row"].append(np.arange(len(ids), dtype=np.int64))
            cols["offset"].append(video_offsets(lengths) if fs.ragged else cols["row"][-1])
            shards.append(ShardRef(k, entry.file, len(ids)))
    cat = {k: np.concatenate(cols[k]) for k in columns}
    index = Index(
        cat["video_ids"],
        cat["groups"],
        cat["labels"],
        cat["lengths"],
        cat["shard"],
        cat["row"],
        cat["present"],
        shards,
        cat["offset"],
    )
    seen, dupes = set(), []
    for v in index.video_ids:
        (dupes.append(v) if v in seen else seen.add(v))
    if dupes:
        raise ReaderError(
            f"refusing to mix feature sets that store the same videos ({len(dupes)} duplicates, e.g. {dupes[0]!r})"
        )
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


def split_names(splits: dict[str, Any], split: str) -> list[str]:
    """SPLIT= resolved against a manifest's `splits`: "all" means every official split.

    A dataset with a single split (folder/csv: "1"; sets made before it was so named call it
    "all" or "csv") serves it for SPLIT=1 and SPLIT=all alike, since there is nothing else to choose.
    """
    available = sorted(splits, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    numbered = [k for k in available if k.isdigit()]
    if split == "all":
        return numbered or available
    if split in numbered:
        return [split]
    if len(available) == 1 and split == "1":
        return available
    choices = numbered if numbered and len(available) > 1 else ["1"]
    raise ConfigError(
        f"--split (SPLIT=): this feature set has no split {split!r}; choose one of {', '.join(choices + ['all'])}"
    )


def select_split(sets: list[FeatureSet], index: Index, name: str, seed: int = 0, test_fraction: float = 0.2) -> Split:
    """Train and test rows of split `name` (merged over sets); only stored videos count.

    A split with no test side (a folder or csv dataset without a split column) gets one
    carved from its training side by group, `test_fraction` of each class, seeded: clips
    of one group never sit on both sides. An unlabelled set (no classes) keeps its listed
    sides, every stored video, nothing carved.
    """
    train_ids = [v for fs in sets for v in fs.manifest.splits.get(name, {}).get("train", [])]
    test_ids = [v for fs in sets for v in fs.manifest.splits.get(name, {}).get("test", [])]
    train, missing_train = index.rows_of(train_ids)
    test, missing_test = index.rows_of(test_ids)
    missing = len(missing_train) + len(missing_test)
    if not any(fs.manifest.classes for fs in sets):
        # An unlabelled set (a CSV of untrimmed videos without labels): its listed sides as they
        # are; a test side is carved for scoring a classifier, and nothing here can be scored.
        if len(train) + len(test) == 0:
            raise ReaderError(f"--split (SPLIT=): split {name!r} has no videos with stored features")
        return Split(name, train, test, False, missing)
    labelled = lambda rows: rows[index.labels[rows] >= 0]
    train, test = labelled(train), labelled(test)
    carved = False
    if len(test) == 0:
        train, test = carve_by_group(train, index, test_fraction, seed + 7919)
        carved = True
    if len(train) == 0 or len(test) == 0:
        advice = (
            f"; the test side is carved by group with --test-fraction (TEST_FRACTION=) {test_fraction:g} of each "
            f"class: raise it, or add videos or groups"
            if carved
            else ""
        )
        raise ReaderError(
            f"--split (SPLIT=): split {name!r} has {len(train)} training and {len(test)} test videos with "
            f"stored features; both sides need at least one{advice}"
        )
    return Split(name, train, test, carved, missing)


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


# ---------------------------------------------------------------- reading features
def read_features(sets: list[FeatureSet], index: Index, rows: np.ndarray) -> np.ndarray:
    """Features of `rows`, read whole shard by whole shard (contiguous reads), verified.

    rows (n,) int64 into the index. Returns (n, T, D) float16 in the order of `rows`. A ragged
    set has no T: read_videos reads its videos.
    """
    fs0 = sets[0]
    if fs0.frames is None:
        raise ReaderError(
            f"{fs0.set_dir}: a ragged set (each video its own rows) has no (n, T, D) array; read its videos one by one"
        )
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


def read_videos(sets: list[FeatureSet], index: Index, rows: np.ndarray) -> list[np.ndarray]:
    """Each video's own rows, for either layout: features (T_i, D) float16 of every row in `rows`
    (n,) int64 into the index, in that order; a fixed-T video's rows up to its length. Whole
    shards are read (verified) one at a time, so memory holds one shard and the rows asked for."""
    rows = np.asarray(rows, dtype=np.int64)
    out: list[np.ndarray | None] = [None] * len(rows)
    for k in np.unique(index.shard[rows]).tolist():
        feats = verified_shard(sets, index, k)["features"]
        for p in np.flatnonzero(index.shard[rows] == k).tolist():
            r = rows[p]
            out[p] = video_rows(feats, int(index.offset[r]), int(index.lengths[r]), sets[0].ragged)
    return [x for x in out if x is not None]


def video_rows(features: np.ndarray, start: int, length: int, ragged: bool) -> np.ndarray:
    """One video's (length, D) rows of a shard's features: a ragged shard's (R, D) from row `start`,
    a fixed-T shard's (n, T, D) video `start` up to its length. A copy: the shard can be freed."""
    return (features[start : start + length] if ragged else features[start, :length]).copy()


def verified_shard(sets: list[FeatureSet], index: Index, k: int) -> dict:
    """Shard k of the index, read through the checksum, with its ids checked against the index."""
    ref = index.shards[k]
    data = sets[ref.set_index].read_shard(ref.file)
    expected = index.video_ids[index.shard == k]
    if len(data["video_ids"]) != len(expected) or (np.asarray(data["video_ids"]) != expected).any():
        raise IntegrityError(
            f"{display(sets[ref.set_index].set_dir / ref.file)}: its video ids changed since the index was read"
        )
    return data
