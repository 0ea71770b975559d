"""Reuse across sets: which stored row already holds a video's features under the same settings.

    fingerprint(path)        sha256 of the file's bytes, cached by (path, size, mtime_ns, inode)
    settings_key(identity)   the identity without the dataset and its listing, hashed
    ReuseIndex.lookup(key, fp) -> [StoredRow]        O(1): one indexed SQLite query

Both live in one SQLite file under the store root (`.index/reuse.sqlite`, WAL mode, so
concurrent runs read and write it safely); a bucket's index is kept on local disk, in the
shard cache's directory (`index/<bucket>/<prefix>/reuse.sqlite`): SQLite needs a filesystem. It is a cache and nothing else: the manifests
and the shards' `fingerprints` datasets are the truth, `sync` adds the committed shards it
has not seen, and the caller checks every hit against the source set's manifest and shard
before copying (a stale entry is dropped, never trusted). Deleting the file loses nothing.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import h5py

from ..errors import StoreError
from ..files import digest, file_sha256
from .cache import cache_dir
from .catalog import feature_sets
from .manifest import Manifest
from .roots import absolute, is_remote, root_of

INDEX_DIR = ".index"
INDEX_FILE = "reuse.sqlite"
# Identity fields that name the dataset and its listing, not how a video's numbers are made.
LISTING_FIELDS = ("dataset", "videos_sha256")

SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, sha256 TEXT);
CREATE TABLE IF NOT EXISTS rows_by_fp (
    settings_key TEXT, fingerprint TEXT, set_dir TEXT, shard_file TEXT, row INTEGER,
    PRIMARY KEY (settings_key, fingerprint, set_dir, shard_file));
CREATE TABLE IF NOT EXISTS indexed_shards (set_dir TEXT, shard_file TEXT, PRIMARY KEY (set_dir, shard_file));
"""


def settings_key(identity: dict) -> str:
    """The extraction settings of a set: its identity without the dataset name and listing.

    Two sets with equal keys compute a video's features the same way, bit for bit.
    """
    return digest({k: v for k, v in identity.items() if k not in LISTING_FIELDS})


@dataclass(frozen=True)
class StoredRow:
    """Where a video's row is stored: set_dir (relative to the store root), shard file, row."""

    set_dir: str
    shard_file: str
    row: int


class ReuseIndex:
    """The store's fingerprint cache and its (settings, fingerprint) -> row lookup."""

    def __init__(self, features_root: Path):
        self.root = Path(features_root)
        path = index_path(self.root)
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: each statement commits at once (a kill -9 loses at most one).
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last writes on power loss is fine
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------ fingerprints
    def fingerprint(self, path: Path) -> str:
        """sha256 of the file's bytes; hashed again only when its size, mtime or inode changed."""
        path = Path(path).resolve()
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        row = self.db.execute(
            "SELECT size, mtime_ns, inode, sha256 FROM fingerprints WHERE path=?", (str(path),)
        ).fetchone()
        if row is not None and tuple(row[:3]) == key:
            return row[3]
        fp = file_sha256(path)
        self.db.execute("INSERT OR REPLACE INTO fingerprints VALUES (?,?,?,?,?)", (str(path), *key, fp))
        return fp

    # ------------------------------------------------------------ rows
    def lookup(self, key: str, fp: str, exclude: str | None = None) -> list[StoredRow]:
        """Rows stored under these settings for this content (any set but `exclude`)."""
        rows = self.db.execute(
            "SELECT set_dir, shard_file, row FROM rows_by_fp WHERE settings_key=? AND fingerprint=? AND set_dir IS NOT ?",
            (key, fp, exclude),
        ).fetchall()
        return [StoredRow(*r) for r in rows]

    def drop(self, source: StoredRow) -> None:
        """Forget a shard found stale on use (no longer listed, gone, or corrupt)."""
        self.db.execute("DELETE FROM rows_by_fp WHERE set_dir=? AND shard_file=?", (source.set_dir, source.shard_file))

    def add_shard(self, set_dir: Path, key: str, shard_file: str, fingerprints) -> None:
        """Index a committed shard's rows (fingerprints (n,) str, "" for none)."""
        self.add_shards(set_dir, key, {shard_file: fingerprints})

    def add_shards(self, set_dir: Path, key: str, shards: dict[str, list[str]]) -> None:
        """Index committed shards of one set ({file: fingerprints}) in one transaction: each
        is indexed whole or not at all, and a store's rebuild costs one commit per set."""
        rel = self.rel(set_dir)
        with self.db:
            self.db.execute("BEGIN")
            for shard_file, fingerprints in shards.items():
                self.db.executemany(
                    "INSERT OR REPLACE INTO rows_by_fp VALUES (?,?,?,?,?)",
                    [(key, fp, rel, shard_file, k) for k, fp in enumerate(fingerprints) if fp],
                )
                self.db.execute("INSERT OR REPLACE INTO indexed_shards VALUES (?,?)", (rel, shard_file))

    def sync(self) -> int:
        """Index every committed shard of the store not indexed yet; returns how many.

        Reads each set's manifest, and only the `fingerprints` dataset of new shards
        (shards written before fingerprints existed have none: their rows are not reusable),
        before the transaction, so other runs are not kept waiting on this run's reads.
        """
        seen = set(self.db.execute("SELECT set_dir, shard_file FROM indexed_shards").fetchall())
        added = 0
        for set_dir in feature_sets(self.root):
            try:
                m = Manifest.read(set_dir)
            except (StoreError, OSError):  # a set made unreadable meanwhile: it has nothing to offer
                continue
            rel = self.rel(set_dir)
            new = {
                s.file: shard_fingerprints(set_dir / s.file, s.sha256) for s in m.shards if (rel, s.file) not in seen
            }
            if new:
                self.add_shards(set_dir, settings_key(m.identity), new)
                added += len(new)
        return added

    def rel(self, set_dir: Path) -> str:
        return absolute(Path(set_dir)).relative_to(absolute(self.root)).as_posix()


def shard_fingerprints(path: Path, sha256: str | None = None) -> list[str]:
    """A shard's `fingerprints` dataset, [] when it has none or cannot be read (not verified:
    the index only points; the copy reads the shard through its checksum). sha256: the
    manifest's, where known (a bucket's shard is then read from the cache)."""
    try:
        with h5py.File(root_of(path).local_file(Path(path), sha256), "r") as f:
            return list(f["fingerprints"].asstr()[()]) if "fingerprints" in f else []
    except (OSError, StoreError):
        return []


def open_index(features_root: Path) -> ReuseIndex:
    """The store's index; an unreadable file (not a database, truncated) is a lost cache:
    it is deleted and rebuilt."""
    try:
        index = ReuseIndex(features_root)
        index.db.execute("SELECT count(*) FROM indexed_shards").fetchone()
        return index
    except sqlite3.DatabaseError as e:
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            raise  # busy, not broken
        remove_index(features_root)
        return ReuseIndex(features_root)


def index_path(features_root: Path) -> Path:
    """The index file: under the root, or for a bucket under the local cache directory."""
    if is_remote(features_root):
        return cache_dir() / "index" / Path(*Path(features_root).parts[1:]) / INDEX_FILE
    return Path(features_root) / INDEX_DIR / INDEX_FILE


def remove_index(features_root: Path) -> None:
    """Delete the index (a cache): the next run rebuilds it from the manifests and shards."""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(index_path(features_root)) + suffix)
        if p.exists():
            os.unlink(p)
