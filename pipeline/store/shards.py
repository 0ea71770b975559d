"""Shard files: one immutable HDF5 file per shard, written whole and checksummed.

A fixed-T shard holds `features (n, T, D) float16` and the per-video datasets of SHARD_FIELDS;
a ragged shard (attribute `layout = "ragged"`, a dense set's) holds `features (R, D) float16`,
every video's rows one after another, with `lengths` saying how many are each video's, and
the RAGGED_FIELDS besides (docs/store.md). It is built in memory, so its sha256 is taken over exactly
the bytes written, then written under a temp name, fsync'd and renamed into place; a
reader reads it whole and checks the sha256 over the very bytes it returns. In a bucket
the whole file is one PUT whose sha256 the server checks on arrival, and a reader gets it
from the local shard cache (cache.py), fetched on a miss (roots.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..config import SCHEMA_VERSION
from ..errors import IntegrityError
from ..files import TMP_MARK
from .roots import display, root_of

STR = h5py.string_dtype(encoding="utf-8")
# Datasets every shard holds, in the order docs/store.md documents them.
SHARD_FIELDS = ("features", "lengths", "labels", "video_ids", "groups", "frame_indices", "timestamps")
# Datasets some shards hold: has_audio (n,) uint8 in audio sets (0: the video has no sound track);
# fingerprints (n,) str, the sha256 of each video file's bytes (what reuse across sets keys on).
OPTIONAL_FIELDS = ("has_audio", "fingerprints")
# Datasets of a ragged shard only: spans (R, 2) float32 [start, end) seconds each row stands for;
# durations, video_fps (n,) float32 per video.
RAGGED_FIELDS = ("spans", "durations", "video_fps")
STR_FIELDS = ("video_ids", "groups", "fingerprints")
RAGGED = "ragged"  # the shard attribute and manifest key `layout` of a dense set; absent: fixed-T
SHARD_NAME = re.compile(r"shard-(\d{5,})(?:\.r\d+)?\.h5")


def shard_name(index: int, revision: int = 0) -> str:
    """shard-00005.h5; a shard rewritten by `--retry-failures` is shard-00005.r1.h5, .r2, ..."""
    return f"shard-{index:05d}.h5" if not revision else f"shard-{index:05d}.r{revision}.h5"


def shard_index(name: str) -> int | None:
    """5 for 'shard-00005.h5', 'shard-00005.r1.h5' (or their temp names), None for any other file name."""
    m = SHARD_NAME.fullmatch(name.split(TMP_MARK)[0])
    return int(m.group(1)) if m else None


def write_shard(path: Path, arrays: Mapping[str, np.ndarray | list[str]], attrs: dict) -> dict:
    """Write one shard to a temp name, fsync, and rename it to `path` (in a bucket: one checked PUT).

    arrays: features (n, T, D) float16; lengths (n,) int32; labels (n,) int32;
    video_ids (n,) str; groups (n,) str; frame_indices (n, T) int32, or (n, T, K) in a set
    of a clip model (every frame of each step's clip) (-1 = padding);
    timestamps (n, T) float32 seconds (NaN = padding); optionally has_audio (n,) uint8
    and fingerprints (n,) str.
    A ragged shard (attrs["layout"] == "ragged"): features (R, D) float16, frame_indices (R,) or
    (R, K), timestamps (R,), and RAGGED_FIELDS spans (R, 2), durations (n,), video_fps (n,).
    Returns the manifest entry: {"file", "videos", "bytes", "sha256"}.
    """
    # Built in memory first: the sha256 is then taken over exactly the bytes written.
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver="latest") as f:
        for name in SHARD_FIELDS + tuple(k for k in OPTIONAL_FIELDS + RAGGED_FIELDS if k in arrays):
            data = arrays[name]
            if name in STR_FIELDS:
                f.create_dataset(name, data=np.asarray(data, dtype=object), dtype=STR)
            else:
                f.create_dataset(name, data=data)
        f.attrs["schema_version"] = SCHEMA_VERSION
        for k, v in attrs.items():
            f.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v, sort_keys=True)
    blob = buf.getvalue()
    root_of(path).write(path, blob)
    return {
        "file": path.name,
        "videos": int(len(arrays["lengths"])),
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }


def read_shard(path: Path, sha256: str | None = None) -> dict[str, Any]:
    """Read a whole shard into memory, verifying its checksum over the bytes read.

    Reading the file once into memory and opening the HDF5 image from there means the
    checksum covers exactly the data returned (no window between verify and read).
    Returns the SHARD_FIELDS arrays (video_ids/groups as str arrays), the optional and ragged
    ones the shard has, plus "attrs" (dict).
    """
    data = root_of(path).shard_bytes(Path(path), sha256)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError.checksum(display(path))
    out: dict = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        for name in SHARD_FIELDS + tuple(k for k in OPTIONAL_FIELDS + RAGGED_FIELDS if k in f):
            ds = f[name]
            out[name] = ds.asstr()[()] if name in STR_FIELDS else ds[()]
        out["attrs"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    return out


def video_offsets(lengths: np.ndarray) -> np.ndarray:
    """Where each video's rows start in a ragged shard's features: lengths (n,) -> (n,) int64."""
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1]]).astype(np.int64)


def ragged_problems(f: h5py.File | Mapping[str, Any], videos: int) -> list[str]:
    """What is inconsistent in a ragged shard (an open file or read_shard's dict), empty if nothing:
    sum(lengths) equals the rows of features, and every per-row and per-video dataset has as many
    rows as it should. videos: the rows the manifest lists for it."""
    problems = []
    lengths = np.asarray(f["lengths"][()], dtype=np.int64)
    rows = f["features"].shape[0] if len(f["features"].shape) == 2 else None
    if rows is None:
        return [f"features has shape {f['features'].shape}, a ragged shard's is (rows, D)"]
    if len(lengths) != videos:
        problems.append(f"lengths holds {len(lengths)} videos, the manifest lists {videos}")
    if (lengths < 0).any() or int(lengths.sum()) != rows:
        problems.append(f"sum(lengths) = {int(lengths.sum())} != {rows} rows of features")
    per_row = {"timestamps": ((rows,),), "spans": ((rows, 2),), "frame_indices": ((rows,), (rows, None))}
    for name, shapes in per_row.items():
        shape = tuple(f[name].shape) if name in f else None
        if shape is None:
            problems.append(f"{name} is missing")
        elif not any(len(shape) == len(s) and all(w in (None, h) for h, w in zip(shape, s)) for s in shapes):
            problems.append(f"{name} has shape {shape}, expected {' or '.join(str(s) for s in shapes)} (one per row)")
    for name in ("labels", "video_ids", "groups", "durations", "video_fps") + tuple(
        k for k in OPTIONAL_FIELDS if k in f
    ):
        if name not in f:
            problems.append(f"{name} is missing")
        elif f[name].shape[0] != len(lengths):
            problems.append(f"{name} holds {f[name].shape[0]} rows, lengths {len(lengths)}")
    return problems
