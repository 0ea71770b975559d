"""The feature store: immutable HDF5 shards, an atomic manifest, claims and checksums.

Layout of one feature set (see README "Storage schema"):

    <features_root>/<dataset>/<feature_set_id>/
        manifest.json      written last, atomically; lists only committed shards
        shard-00000.h5     immutable once listed in the manifest
        failures.jsonl     one JSON line per video that could not be processed
        .lock              flock'd while the manifest is read-modified-written
        .claims/00000      flock'd by the process computing shard 0

Why flock: the kernel drops the lock when its holder dies (kill -9, OOM, pre-emption),
so a crashed run never leaves a claim that blocks the next one, and no timeout guesses
are needed. Readers take no lock at all: they trust only what the manifest lists, and
a shard file is renamed into place (after fsync) before the manifest mentions it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .config import SCHEMA_VERSION, file_sha256

MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
TMP_MARK = ".tmp-"
STR = h5py.string_dtype(encoding="utf-8")
# Datasets every shard holds, in the order the README documents them.
SHARD_FIELDS = ("features", "lengths", "labels", "video_ids", "groups", "frame_indices", "timestamps")


class StoreError(RuntimeError):
    """The store is missing, inconsistent, or the disk refused a write."""


class IntegrityError(StoreError):
    """A shard's bytes do not match the sha256 its manifest recorded."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def shard_name(index: int, revision: int = 0) -> str:
    """shard-00005.h5; a shard rewritten by `--retry-failures` is shard-00005.r1.h5, .r2, ..."""
    return f"shard-{index:05d}.h5" if not revision else f"shard-{index:05d}.r{revision}.h5"


SHARD_NAME = re.compile(r"shard-(\d{5,})(?:\.r\d+)?\.h5")


def shard_index(name: str) -> int | None:
    """5 for 'shard-00005.h5', 'shard-00005.r1.h5' (or their temp names), None for any other file name."""
    m = SHARD_NAME.fullmatch(name.split(TMP_MARK)[0])
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- atomic writes
def fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the directory that holds the entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path_for(path: Path) -> Path:
    """A temp name unique to this process, so concurrent writers never share one."""
    return path.with_name(f"{path.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a mix."""
    tmp = tmp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, path) from e


def disk_error(e: OSError, path: Path) -> StoreError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(
            f"disk full while writing {path}: nothing committed was touched; "
            f"free some space (or point FEATURES_ROOT elsewhere) and rerun to resume"
        )
    return StoreError(f"could not write {path}: {e}")


# ---------------------------------------------------------------- shards
def write_shard(path: Path, arrays: dict[str, np.ndarray], attrs: dict) -> dict:
    """Write one shard to a temp name, fsync, and rename it to `path`.

    arrays: features (n, T, D) float16; lengths (n,) int32; labels (n,) int32;
    video_ids (n,) str; groups (n,) str; frame_indices (n, T) int32 (-1 = padding);
    timestamps (n, T) float32 seconds (NaN = padding).
    Returns the manifest entry: {"file", "videos", "bytes", "sha256"}.
    """
    tmp = tmp_path_for(path)
    try:
        # Built in memory first: the sha256 is then taken over exactly the bytes written.
        buf = io.BytesIO()
        with h5py.File(buf, "w", libver="latest") as f:
            for name in SHARD_FIELDS:
                data = arrays[name]
                if name in ("video_ids", "groups"):
                    f.create_dataset(name, data=np.asarray(data, dtype=object), dtype=STR)
                else:
                    f.create_dataset(name, data=data)
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in attrs.items():
                f.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v, sort_keys=True)
        data = buf.getvalue()
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, path) from e
    return {
        "file": path.name,
        "videos": int(len(arrays["lengths"])),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def read_shard(path: Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read a whole shard into memory, verifying its checksum over the bytes read.

    Reading the file once into memory and opening the HDF5 image from there means the
    checksum covers exactly the data returned (no window between verify and read).
    Returns the SHARD_FIELDS arrays (video_ids/groups as str arrays) plus "attrs" (dict).
    """
    data = Path(path).read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise IntegrityError(f"{path}: sha256 does not match the manifest; the shard is corrupt (run `store verify`)")
    out: dict = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        for name in SHARD_FIELDS:
            ds = f[name]
            out[name] = ds.asstr()[()] if name in ("video_ids", "groups") else ds[()]
        out["attrs"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    return out


# ---------------------------------------------------------------- manifest
def load_manifest(set_dir: Path) -> dict:
    """The committed state of a feature set; raises StoreError when there is none."""
    path = Path(set_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"no feature set at {set_dir} (no {MANIFEST}); run `make features` first") from None
    except json.JSONDecodeError as e:
        raise StoreError(f"{path} is not valid JSON ({e}); the manifest is written atomically, so this file was edited by hand or by another tool") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {manifest.get('schema_version')} is not {SCHEMA_VERSION}")
    return manifest


def all_failures(manifest: dict) -> list[dict]:
    """Every failure of a set: those of its committed shards, then the listing's own."""
    return [f for s in manifest["shards"] for f in s.get("failures", [])] + manifest.get("unlisted_failures", [])


def write_manifest(set_dir: Path, manifest: dict) -> None:
    """Atomically replace the manifest, then regenerate failures.jsonl from it."""
    manifest["updated_at"] = now_iso()
    failures = all_failures(manifest)
    manifest["num_stored"] = sum(s["videos"] for s in manifest["shards"])
    manifest["num_failed"] = len(failures)
    # failures.jsonl first: it is derived, and a crash between the two leaves the older,
    # still-consistent manifest in charge.
    lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures)
    atomic_write_bytes(Path(set_dir) / FAILURES, lines.encode())
    atomic_write_bytes(Path(set_dir) / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode())


@contextlib.contextmanager
def locked(set_dir: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of the manifest (blocks until free)."""
    fd = os.open(Path(set_dir) / ".lock", os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def commit_shard(set_dir: Path, index: int, entry: dict, failures: list[dict]) -> dict:
    """Record a written shard in the manifest (under the lock). Returns the new manifest.

    Committing the same index twice (a retried Dask task) keeps the first entry, so a
    video is never listed twice.
    """
    with locked(set_dir):
        manifest = load_manifest(set_dir)
        if any(s["index"] == index for s in manifest["shards"]):
            return manifest
        manifest["shards"].append({"index": index, **entry, "failures": failures})
        manifest["shards"].sort(key=lambda s: s["index"])
        write_manifest(set_dir, manifest)
        return manifest


def replace_shard(set_dir: Path, index: int, entry: dict, failures: list[dict]) -> dict:
    """Swap shard `index`'s manifest entry for a rewritten file (under the lock). Returns the new manifest.

    The new file has a new name (shard_name(index, revision)), so the committed file is
    never touched: a reader that listed the old entry still reads the old, consistent
    bytes, and the superseded file is ordinary garbage for `store gc` afterwards.
    """
    with locked(set_dir):
        manifest = load_manifest(set_dir)
        old = [s for s in manifest["shards"] if s["index"] == index]
        if not old:
            raise StoreError(f"{set_dir}: shard {index} is not committed; nothing to replace")
        manifest["shards"] = [s for s in manifest["shards"] if s["index"] != index]
        manifest["shards"].append({"index": index, **entry, "failures": failures,
                                   "revision": old[0].get("revision", 0) + 1, "replaces": old[0]["file"]})
        manifest["shards"].sort(key=lambda s: s["index"])
        write_manifest(set_dir, manifest)
        return manifest


def mark_complete(set_dir: Path) -> dict:
    with locked(set_dir):
        manifest = load_manifest(set_dir)
        done = {s["index"] for s in manifest["shards"]}
        manifest["complete"] = done >= set(range(manifest["num_shards"]))
        if manifest["complete"]:
            manifest.setdefault("completed_at", now_iso())
        write_manifest(set_dir, manifest)
        return manifest


# ---------------------------------------------------------------- claims
class Claim:
    """A non-blocking exclusive flock on `.claims/<index>`: who computes which shard."""

    def __init__(self, set_dir: Path, index: int):
        claims = Path(set_dir) / ".claims"
        claims.mkdir(exist_ok=True)
        self.path = claims / f"{index:05d}"
        self.index = index
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()} {now_iso()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        """True while another live process holds this claim."""
        return self.path.exists() and flock_held(self.path)


# ---------------------------------------------------------------- maintenance
def verify(set_dir: Path) -> list[str]:
    """Recompute every committed shard's sha256; return one line per problem (empty = ok)."""
    return [f"{file}: {problem}" for file, problem in bad_shards(set_dir).items()]


def bad_shards(set_dir: Path) -> dict[str, str]:
    """{shard file: what is wrong} for every committed shard whose bytes are not the recorded ones."""
    bad = {}
    for s in load_manifest(set_dir)["shards"]:
        path = Path(set_dir) / s["file"]
        if not path.exists():
            bad[s["file"]] = "listed in the manifest but missing"
        elif path.stat().st_size != s["bytes"]:
            bad[s["file"]] = f"size {path.stat().st_size} != manifest {s['bytes']} (truncated or replaced)"
        elif (digest := file_sha256(path)) != s["sha256"]:  # streamed: a shard may not fit in memory twice
            bad[s["file"]] = f"sha256 {digest[:12]}… != manifest {s['sha256'][:12]}… (corrupt)"
    return bad


def drop_shards(set_dir: Path, files: list[str]) -> dict:
    """Forget committed shards (corrupt ones) so that the next run recomputes only them.

    The manifest stops listing them first, atomically and under the lock, and the set
    becomes incomplete; only then are the files deleted. Returns the new manifest.
    """
    with locked(set_dir):
        manifest = load_manifest(set_dir)
        manifest["shards"] = [s for s in manifest["shards"] if s["file"] not in files]
        manifest["complete"] = False
        manifest.pop("completed_at", None)
        write_manifest(set_dir, manifest)
    for name in files:
        (Path(set_dir) / name).unlink(missing_ok=True)
    return manifest


def garbage(set_dir: Path) -> list[Path]:
    """Leftovers of crashed runs: temp files and shard files no manifest lists.

    A temp file whose shard is claimed by a live process is still being written and is
    not garbage; nothing listed in the manifest ever is.
    """
    set_dir = Path(set_dir)
    listed = listed_files(set_dir)
    out = []
    for p in sorted(set_dir.iterdir()):
        if not p.is_file():
            continue  # .claims/ is never garbage: deleting a held claim file would split the lock
        index = shard_index(p.name)
        if TMP_MARK in p.name:
            if index is not None and Claim(set_dir, index).held_elsewhere():
                continue
            if p.name.split(TMP_MARK)[0] in (MANIFEST, FAILURES) and lock_held(set_dir):
                continue  # a live writer holds .lock while it writes these
            out.append(p)
        elif index is not None and p.name not in listed:
            if not Claim(set_dir, index).held_elsewhere():
                out.append(p)
    return out


def remove_garbage(set_dir: Path, dry_run: bool = False) -> list[tuple[Path, int]]:
    """Delete what `garbage` finds, each file under the claim (or lock) that guards it.

    Between listing and unlinking, a live run could claim a shard and rename a fresh
    file into place under the very name found; taking the claim and looking at the
    manifest again closes that window. Returns [(path, bytes)] removed (or, dry_run,
    that would be).
    """
    set_dir, removed = Path(set_dir), []
    for path in garbage(set_dir):
        index = shard_index(path.name)
        claim = Claim(set_dir, index) if index is not None and not dry_run else None
        if claim is not None and not claim.acquire():
            continue  # a run claimed it since we looked: it is live work now
        try:
            with (locked(set_dir) if index is None and not dry_run else contextlib.nullcontext()):
                if path.name in listed_files(set_dir):
                    continue  # committed since we looked
                try:
                    size = path.stat().st_size
                    if not dry_run:
                        path.unlink()
                except FileNotFoundError:
                    continue
                removed.append((path, size))
        finally:
            if claim is not None:
                claim.release()
    return removed


def listed_files(set_dir: Path) -> set[str]:
    """Names of the shards the manifest lists (empty when there is no readable manifest)."""
    try:
        return {s["file"] for s in load_manifest(set_dir)["shards"]}
    except StoreError:
        return set()


def lock_held(set_dir: Path) -> bool:
    """True while a live process is rewriting the manifest."""
    return flock_held(Path(set_dir) / ".lock")


def flock_held(path: Path) -> bool:
    """Probe an flock without waiting: True if another open file description holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def feature_sets(features_root: Path) -> Iterator[Path]:
    """Every feature-set directory (one with a manifest) under the store root."""
    root = Path(features_root)
    if root.is_dir():
        yield from sorted(p.parent for p in root.glob(f"*/*/{MANIFEST}"))


def match_feature_sets(features_root: Path, ref: str) -> list[Path]:
    """Sets under the root whose id or dataset/id starts with `ref`; an exact id or
    dataset/id wins over longer ones (the same id under two dataset names stays ambiguous)."""
    matches = [d for d in feature_sets(features_root) if d.name.startswith(ref) or f"{d.parent.name}/{d.name}".startswith(ref)]
    return [d for d in matches if ref in (d.name, f"{d.parent.name}/{d.name}")] or matches


def wait_for(predicate, timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
