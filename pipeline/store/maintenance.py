"""Keeping a feature set sound: checksums (`store verify`) and leftovers (`store gc`).

Both are safe on a shared store while others extract: verify only reads, and gc never
touches a committed shard, the manifest, or a file whose shard a live run has claimed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import StoreError
from ..files import TMP_MARK, file_sha256
from .claims import Claim, lock_held, locked
from .manifest import FAILURES, MANIFEST, load_manifest
from .shards import shard_index


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
            with locked(set_dir) if index is None and not dry_run else contextlib.nullcontext():
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
