"""The local cache of a remote store's shards: immutable files keyed by their sha256.

A shard never changes once its manifest lists it (a rewrite gets a new name and a new sha256),
so a copy found under its sha256 is the shard, whichever set or bucket listed it: the second
epoch and the second run read local files. Only bytes whose sha256 is their name go in (the
caller checks them on arrival), every file is written atomically, and readers check the sha256
again over the bytes they use, so a cache damaged on disk is refused like a damaged object.

    VIDSTORE_CACHE        the directory (default $XDG_CACHE_HOME/vidstore, else ~/.cache/vidstore)
    VIDSTORE_CACHE_SIZE   its bound, bytes or with K/M/G/T (default 20G): past it, the least
                          recently used shards go first (a hit refreshes a file's mtime)

The reuse index of a remote store (reuse.py) is kept here too, under `index/<bucket>/<prefix>/`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError
from ..files import atomic_write_bytes

DEFAULT_SIZE = "20G"
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def cache_dir() -> Path:
    """$VIDSTORE_CACHE, else $XDG_CACHE_HOME/vidstore, else ~/.cache/vidstore."""
    if os.environ.get("VIDSTORE_CACHE"):
        return Path(os.environ["VIDSTORE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vidstore"


def cache_limit() -> int:
    """VIDSTORE_CACHE_SIZE in bytes; a ConfigError naming it when it is not a size."""
    text = os.environ.get("VIDSTORE_CACHE_SIZE") or DEFAULT_SIZE
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise ConfigError(f"VIDSTORE_CACHE_SIZE={text!r}: not a size; write bytes or e.g. 500M, 20G")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


class ShardCache:
    """Shards by sha256 under `directory/shards/`, at most `limit` bytes (least recently used out first)."""

    def __init__(self, directory: Path, limit: int):
        self.directory, self.limit = Path(directory) / "shards", limit

    def path(self, sha256: str) -> Path:
        return self.directory / sha256[:2] / f"{sha256}.h5"

    def get(self, sha256: str) -> Path | None:
        """The cached file (its use recorded), None on a miss."""
        path = self.path(sha256)
        try:
            os.utime(path)  # most recently used now
        except FileNotFoundError:
            return None
        return path

    def put(self, sha256: str, data: bytes) -> Path:
        """Cache `data` (whose sha256 the caller checked) and make room; returns its file."""
        path = self.path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        self.evict(keep=path)
        return path

    def files(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes, path) of every cached shard, least recently used first."""
        out = []
        for p in self.directory.glob("*/*.h5"):
            try:
                st = p.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            out.append((st.st_mtime, st.st_size, p))
        return sorted(out)

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used shards until the cache is within its bound; never `keep`."""
        files = self.files()
        total = sum(size for _, size, _ in files)
        removed = []
        for _, size, p in files:
            if total <= self.limit:
                break
            if p == keep:
                continue
            p.unlink(missing_ok=True)
            total -= size
            removed.append(p)
        return removed

    def size(self) -> int:
        return sum(size for _, size, _ in self.files())


def shard_cache() -> ShardCache:
    """The cache the environment names (read when a bucket is first used)."""
    return ShardCache(cache_dir(), cache_limit())
