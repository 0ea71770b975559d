"""Keeping a feature set sound: checksums (`store verify`) and leftovers (`store gc`).

Both are safe on a shared store while others extract: verify only reads, and gc never
touches a committed shard, the manifest, or a file whose shard a live run has claimed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..console import plural
from ..errors import StoreError
from ..files import TMP_MARK, file_sha256
from .claims import Claim, lock_held, locked
from .manifest import FAILURES, MANIFEST, Manifest, drop_shards
from .shards import ragged_problems, shard_index


def verify(set_dir: Path) -> list[str]:
    """Recompute every committed shard's sha256; return one line per problem (empty = ok)."""
    return [f"{file}: {problem}" for file, problem in bad_shards(set_dir).items()]


def bad_shards(set_dir: Path, manifest: Manifest | None = None) -> dict[str, str]:
    """{shard file: what is wrong} for every committed shard whose bytes are not the recorded ones,
    or, in a ragged set, whose datasets do not fit together (shards.ragged_problems: a shard
    written wrongly has the right checksum all the same); manifest: the set's, if read already."""
    bad = {}
    manifest = manifest or Manifest.read(set_dir)
    for s in manifest.shards:
        path = Path(set_dir) / s.file
        if not path.exists():
            bad[s.file] = "listed in the manifest but missing"
        elif path.stat().st_size != s.bytes:
            bad[s.file] = f"size {path.stat().st_size} != manifest {s.bytes} (truncated or replaced)"
        elif (digest := file_sha256(path)) != s.sha256:  # streamed: a shard may not fit in memory twice
            bad[s.file] = f"sha256 {digest[:12]}… != manifest {s.sha256[:12]}… (corrupt)"
        elif manifest.ragged and (problems := ragged_layout_problems(path, s.videos)):
            bad[s.file] = f"inconsistent ragged shard: {'; '.join(problems)}"
    return bad


def ragged_layout_problems(path: Path, videos: int) -> list[str]:
    """shards.ragged_problems of the shard at `path` (reading shapes and lengths only)."""
    try:
        with h5py.File(path, "r") as f:
            return ragged_problems(f, videos)
    except (OSError, KeyError) as e:
        return [f"unreadable as HDF5 ({type(e).__name__}: {e})"]


@dataclass
class SetCheck:
    """What `store verify` found in one feature set, and what --repair did about it."""

    set_dir: Path
    shards: int = 0  # committed shards checked
    problems: dict[str, str] = field(default_factory=dict)  # shard file -> what is wrong
    unreadable: str | None = None  # why the manifest could not be read (nothing else was checked)
    repaired: list[str] = field(default_factory=list)  # shard files dropped by --repair

    @property
    def bad(self) -> bool:
        """Still inconsistent: an unreadable manifest, or a bad shard not repaired."""
        return self.unreadable is not None or len(self.problems) > len(self.repaired)

    def lines(self) -> list[str]:
        """`store verify`'s report of this set: a state line, one line per problem, the repair."""
        name = f"{self.set_dir.parent.name}/{self.set_dir.name}"
        state = "OK" if not (self.problems or self.unreadable) else "CORRUPT"
        out = [f"{name}: {state} ({plural(self.shards, 'shard')} checked)"]
        out += [f"  manifest: {self.unreadable}"] if self.unreadable else []
        out += [f"  {file}: {problem}" for file, problem in self.problems.items()]
        if self.repaired:
            out.append(
                f"  repaired: dropped {len(self.repaired)} shard(s); `make features` with the same settings "
                f"recomputes just those"
            )
        return out


def check_set(set_dir: Path, repair: bool = False) -> SetCheck:
    """Recompute a set's checksums; with `repair`, drop its bad shards from the manifest (and the
    disk) so that the set is consistent again, only smaller until a rerun recomputes them. An
    unreadable manifest is reported, never repaired: nothing says what the set held."""
    check = SetCheck(Path(set_dir))
    try:
        manifest = Manifest.read(set_dir)
        check.shards, check.problems = len(manifest.shards), bad_shards(set_dir, manifest)
    except StoreError as e:  # one unreadable manifest must not hide the state of the other sets
        check.unreadable = str(e)
        return check
    if repair and check.problems:
        drop_shards(set_dir, list(check.problems))
        check.repaired = list(check.problems)
    return check


def verify_advice(checks: list[SetCheck], repair: bool) -> str | None:
    """`store verify`'s closing line when some set is still bad (None when all are sound)."""
    bad = sum(c.bad for c in checks)
    if not bad:
        return None
    advice = (
        "an unreadable manifest cannot be repaired; remove the set's directory and extract it again"
        if repair
        else "`store verify --repair` drops the bad shards so that a rerun recomputes only them"
    )
    return f"{bad} of {len(checks)} feature set(s) have problems: {advice}"


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
        return {s.file for s in Manifest.read(set_dir).shards}
    except StoreError:
        return set()
