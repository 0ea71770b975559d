"""Writing files so that readers never see half of one, temp names, and content hashes.

Every file the project writes for others to read (shards, manifests, run reports) goes
through `atomic_write_bytes` or the same temp-name-then-rename: written under a name
unique to this host and process, fsync'd, renamed over the final name, and the directory
fsync'd, so a crash leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from .errors import StoreError

TMP_MARK = ".tmp-"  # in every temp name: `store gc` knows a leftover by it


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def tmp_path_for(path: Path, tag: str = "") -> Path:
    """A temp name next to `path`, unique to this host and process (and `tag`)."""
    return path.with_name(f"{path.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}{tag}")


def fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the directory that holds the entry."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a mix."""
    path = Path(path)
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


def atomic_write_json(path: Path, obj) -> None:
    """JSON (indented, UTF-8) through atomic_write_bytes."""
    atomic_write_bytes(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str).encode())


def disk_error(e: OSError, path: Path) -> StoreError:
    """A StoreError that says what to do about a refused write."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(
            f"disk full while writing {path}: nothing committed was touched; "
            f"free some space (or point FEATURES_ROOT elsewhere) and rerun to resume"
        )
    return StoreError(f"could not write {path}: {e}")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed (a shard may not fit in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest(obj) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()
