"""Moving a feature set between two roots (`store push`, `store pull`): any directory, any bucket.

Shards first, the manifest last: until the manifest arrives the destination lists nothing new,
so an interrupted copy leaves only unlisted files (`store gc` removes them) and a rerun copies
what is still missing. Each shard is read through its manifest sha256 at the source and checked
again where it lands (the file re-hashed; in a bucket, the server checks the PUT's sha256);
a shard already at the destination with the recorded size and sha256 is not sent again.

Where the destination holds the set already (another team extracted part of it there), the
manifests merge as concurrent runs merge theirs: every committed shard of either side is kept,
and the destination's own entry wins for an index both hold.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, StoreError
from .claims import locked
from .manifest import MANIFEST, Manifest, update, write_manifest
from .roots import display, root_of


@dataclass
class Copied:
    """What a copy did: the destination set, shards sent, shards already there, bytes sent."""

    set_dir: Path
    sent: int = 0
    present: int = 0
    bytes: int = 0


def copy_set(src_dir: Path, dest_root: Path, progress=None) -> Copied:
    """Copy the set in `src_dir` to `dest_root/<dataset>/<id>`, verified; safe to rerun.

    progress: called with each shard file name as it is done (None: silent).
    """
    manifest = Manifest.read(src_dir)
    dest_dir = Path(dest_root) / manifest.dataset / manifest.feature_set_id
    if str(dest_dir) == str(src_dir):
        raise StoreError(f"{display(src_dir)} is already under {display(dest_root)}: nothing to copy")
    src, dest = root_of(src_dir), root_of(dest_dir)
    dest.prepare(dest_dir)
    done = Copied(dest_dir)
    for s in manifest.shards:
        target = dest_dir / s.file
        if dest.size(target) == s.bytes and dest.sha256(target) == s.sha256:
            done.present += 1
        else:
            data = src.shard_bytes(Path(src_dir) / s.file, s.sha256)
            if hashlib.sha256(data).hexdigest() != s.sha256:
                raise IntegrityError(
                    f"{display(Path(src_dir) / s.file)}: sha256 does not match its manifest; nothing of it was "
                    f"copied (run `store verify` on the source)"
                )
            dest.write(target, data)
            if dest.size(target) != s.bytes or dest.sha256(target) != s.sha256:
                raise IntegrityError(
                    f"{display(target)}: the copy that arrived is not the shard sent; rerun to copy it again"
                )
            done.sent, done.bytes = done.sent + 1, done.bytes + s.bytes
        if progress is not None:
            progress(s.file)
    commit_copy(dest_dir, manifest)
    return done


def commit_copy(dest_dir: Path, source: Manifest) -> Manifest:
    """Write the destination's manifest last: the source's, or merged into the one already there."""
    with locked(dest_dir):  # a directory: no run commits between the look and the write
        if not root_of(dest_dir).exists(dest_dir / MANIFEST) and write_manifest(dest_dir, source, expect=None):
            return source
    # there already (or, in a bucket, created meanwhile): merged on the condition it is unchanged

    def merge(mine: Manifest) -> bool:
        if mine.feature_set_id != source.feature_set_id:
            raise StoreError(
                f"{display(dest_dir / MANIFEST)} belongs to {mine.feature_set_id!r}, not {source.feature_set_id!r}"
            )
        held = {s.index for s in mine.shards}
        new = [s for s in source.shards if s.index not in held]
        mine.shards = sorted(mine.shards + new, key=lambda s: s.index)
        complete = {s.index for s in mine.shards} >= set(range(mine.num_shards))
        changed = bool(new) or complete != mine.complete
        mine.complete = complete
        if complete and mine.completed_at is None:
            mine.completed_at = source.completed_at
        return changed

    return update(dest_dir, merge)
