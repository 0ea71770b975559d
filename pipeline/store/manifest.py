"""The manifest: the only record of what a feature set has committed, and its only writer.

`manifest.json` is replaced atomically, always under the set's `.lock`, and lists only
shards that were renamed into place (after fsync) before it mentions them; readers take
no lock and trust nothing else. `failures.jsonl` is derived from it on every write.
Nothing outside this module builds or rewrites a manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import SCHEMA_VERSION
from ..errors import StoreError
from ..files import atomic_write_bytes, now_iso
from .claims import locked

MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"


def new_manifest(
    feature_set_id: str,
    dataset: str,
    identity: dict,
    config: dict,
    frames: int,
    feature_dim: int,
    classes: list[str],
    splits: dict,
    num_videos: int,
    shard_size: int,
    num_shards: int,
    *,
    video_root: str | None = None,
    unlisted_failures: list[dict] | None = None,
    modality: str = "rgb",
    default_settings: bool = False,
) -> dict:
    """A new, empty manifest (no shard committed yet).

    splits: {"1": {"train": [ids], "test": [ids]}, ...}; unlisted_failures: videos the
    listing named but that cannot be opened at all; default_settings: the set was made
    with stage one's default extraction settings (stage two prefers such a set).
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "feature_set_id": feature_set_id,
        "dataset": dataset,
        "modality": modality,
        "identity": identity,
        "config": config,
        "frames": frames,
        "feature_dim": feature_dim,
        "video_root": video_root,
        "classes": classes,
        "splits": splits,
        "num_videos": num_videos,
        "shard_size": shard_size,
        "num_shards": num_shards,
        "shards": [],
        "unlisted_failures": list(unlisted_failures or []),
        "default_settings": default_settings,
        "complete": False,
        "created_at": now_iso(),
    }


def create(set_dir: Path, manifest: dict) -> dict:
    """Write a new set's first manifest (under the lock), unless one appeared meanwhile.

    Returns the manifest now on disk: ours, or the one a concurrent run wrote first.
    """
    with locked(set_dir):
        try:
            return load_manifest(set_dir)
        except StoreError:
            if (Path(set_dir) / MANIFEST).exists():
                raise  # there, but unreadable: never overwrite it
        write_manifest(set_dir, manifest)
        return manifest


def load_manifest(set_dir: Path) -> dict:
    """The committed state of a feature set; raises StoreError when there is none."""
    path = Path(set_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"no feature set at {set_dir} (no {MANIFEST}); run `make features` first") from None
    except json.JSONDecodeError as e:
        raise StoreError(
            f"{path} is not valid JSON ({e}); the manifest is written atomically, so this file was edited by hand or by another tool"
        ) from None
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
        manifest["shards"].append(
            {
                "index": index,
                **entry,
                "failures": failures,
                "revision": old[0].get("revision", 0) + 1,
                "replaces": old[0]["file"],
            }
        )
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
