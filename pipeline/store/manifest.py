"""The manifest: the only record of what a feature set has committed, and its only writer.

`manifest.json` is replaced atomically, always under the set's `.lock`, and lists only
shards that were renamed into place (after fsync) before it mentions them; readers take
no lock and trust nothing else. `failures.jsonl` is derived from it on every write.
Nothing outside this module builds or rewrites a manifest.

In memory a manifest is a `Manifest` (its shards `ShardEntry`s), checked key by key when it
is read: a missing or wrongly typed key is a StoreError naming the file and the key. Its JSON
is written back with the keys in the order they were read (a key it gains goes after them, in
field order), so the bytes of a rewritten manifest change only where its content does.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..config import SCHEMA_VERSION
from ..errors import StoreError
from ..files import atomic_write_bytes, now_iso
from .claims import locked

MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"

# Field metadata. OPTIONAL: older manifests may lack the key; read without it, the field takes
# its default and is written without it while it keeps that default. OMIT_NONE: the key is
# written only while the value is not None.
OPTIONAL = {"optional": True}
OMIT_NONE = {"optional": True, "omit_none": True}

R = TypeVar("R", bound="Record")


class Record:
    """A JSON object as a dataclass: read with every key checked against its field's type, and
    written back in the key order it was read with. Keys no field names are kept as they were."""

    _keys: tuple[str, ...] | None = None  # the keys as read, in order; None: a new record, none read
    _extra: dict[str, Any] = {}  # values of keys no field names, as read

    @classmethod
    def from_json(cls: type[R], data: Any, file: str, key: str = "") -> R:
        """The record the JSON value `data` holds; `file` and `key` (its place, e.g. "shards[2]") name it in errors."""
        if not isinstance(data, dict):
            what = f"the key {key!r}" if key else "the file"
            raise StoreError(f"{file}: {what} must be an object, got {json_type(data)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            where = f"{key}.{f.name}" if key else f.name
            if f.name in data:
                values[f.name] = checked(data[f.name], hints[f.name], file, where)
            elif not f.metadata.get("optional"):
                raise StoreError(f"{file}: the key {where!r} is missing")
        record = cls(**values)
        record._keys = tuple(data)
        record._extra = {k: v for k, v in data.items() if k not in values}
        return record

    def to_json(self) -> dict[str, Any]:
        """The JSON object: the keys as read, in that order, then the keys gained, in field order."""
        fields = {f.name: f for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        keys = list(self._keys or ())
        out = {}
        for name in keys + [name for name in fields if name not in keys]:
            if name not in fields:
                out[name] = self._extra[name]
                continue
            f, value = fields[name], getattr(self, name)
            if f.metadata.get("omit_none") and value is None:
                continue
            if f.metadata.get("optional") and name not in keys and value == default_of(f):
                continue  # read (or made) without the key and still the default: written without it
            out[name] = (
                [v.to_json() if isinstance(v, Record) else v for v in value] if isinstance(value, list) else value
            )
        return out


def default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


TYPE_WORDS: dict[Any, str] = {
    int: "a whole number",
    float: "a number",
    str: "a string",
    bool: "true or false",
    dict: "an object",
    list: "a list",
}


def checked(value: Any, tp: Any, file: str, key: str) -> Any:
    """`value` if it has the JSON type `tp` (records built from their objects); else a StoreError
    naming `file` and `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return checked(value, tp, file, key)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(value, file, key)
    expected = origin or tp
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise StoreError(
            f"{file}: the key {key!r} must be {TYPE_WORDS[expected]}, got {json_type(value)} ({value!r:.60})"
        )
    if origin is list and args:
        return [checked(v, args[0], file, f"{key}[{k}]") for k, v in enumerate(value)]
    if origin is dict and args:
        return {k: checked(v, args[1], file, f"{key}.{k}") for k, v in value.items()}
    return value


@dataclass(kw_only=True)
class ShardEntry(Record):
    """One committed shard, as the manifest lists it."""

    index: int
    file: str  # its name in the set's directory (revision K of shard N: shard-NNNNN.rK.h5)
    videos: int  # rows stored in it
    bytes: int
    sha256: str  # of the whole file; checked before any of its numbers is read
    copied: dict[str, int] = field(default_factory=dict, metadata=OPTIONAL)  # set id -> rows copied from it
    failures: list[dict[str, Any]] = field(default_factory=list, metadata=OPTIONAL)  # {"video_id", "reason"}
    revision: int = field(default=0, metadata=OPTIONAL)  # rewrites by --retry-failures
    replaces: str | None = field(default=None, metadata=OMIT_NONE)  # the file a revision superseded


@dataclass(kw_only=True)
class Manifest(Record):
    """A feature set's manifest (docs/store.md): what it is, and which shards are committed."""

    schema_version: int
    feature_set_id: str
    dataset: str  # the dataset's name in the store
    modality: str = field(default="rgb", metadata=OPTIONAL)  # rgb | audio
    identity: dict[str, Any] = field(default_factory=dict, metadata=OPTIONAL)  # hashed into the id
    config: dict[str, Any] = field(default_factory=dict, metadata=OPTIONAL)  # the full extraction config
    frames: int | None  # T; None in a ragged set (each video's rows: its shard's `lengths`)
    # "fixed": (n, T, D) shards; "ragged": every video its own row count (docs/store.md). Written
    # only when not "fixed", so a fixed-T manifest's bytes are what they were before the key existed.
    layout: str = field(default="fixed", metadata=OPTIONAL)
    feature_dim: int  # D
    video_root: str | None = field(default=None, metadata=OPTIONAL)  # where the videos were read
    classes: list[str]  # index = label
    splits: dict[str, dict[str, list[str]]]  # {"1": {"train": [video ids], "test": [...]}, ...}
    num_videos: int  # videos the listing named
    shard_size: int  # videos per shard
    num_shards: int  # shards when complete
    shards: list[ShardEntry]  # the committed ones, by index
    unlisted_failures: list[dict[str, Any]] = field(default_factory=list, metadata=OPTIONAL)  # videos never opened
    default_settings: bool = field(default=False, metadata=OPTIONAL)  # made with stage one's default settings
    complete: bool
    created_at: str
    updated_at: str = ""  # written by write_manifest, as are num_stored and num_failed
    num_stored: int = 0
    num_failed: int = 0
    completed_at: str | None = field(default=None, metadata=OMIT_NONE)

    @classmethod
    def read(cls, set_dir: Path) -> Manifest:
        """The committed state of the feature set in `set_dir`; a StoreError when there is none
        or it is not a manifest (naming the file and the key)."""
        path = Path(set_dir) / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StoreError(f"no feature set at {set_dir} (no {MANIFEST}); run `make features` first") from None
        except json.JSONDecodeError as e:
            raise StoreError(
                f"{path} is not valid JSON ({e}); the manifest is written atomically, so this file was edited by hand or by another tool"
            ) from None
        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{path}: schema version {data.get('schema_version')} is not {SCHEMA_VERSION}")
        return cls.from_json(data, str(path))

    @property
    def ragged(self) -> bool:
        """Each video keeps its own number of rows (a dense set), not T."""
        return self.layout == "ragged"

    def shard(self, file: str) -> ShardEntry | None:
        """The entry of the committed shard named `file`, None when the manifest does not list it."""
        return next((s for s in self.shards if s.file == file), None)

    def failures(self) -> list[dict[str, Any]]:
        """Every failure of the set: those of its committed shards, then the listing's own."""
        return [f for s in self.shards for f in s.failures] + self.unlisted_failures


# The keys a new manifest is written with, in order; write_manifest adds updated_at, num_stored
# and num_failed, mark_complete completed_at.
NEW_KEYS = tuple(
    f.name
    for f in dataclasses.fields(Manifest)
    if f.name not in ("updated_at", "num_stored", "num_failed", "completed_at", "layout")
)


def new_manifest(
    feature_set_id: str,
    dataset: str,
    identity: dict,
    config: dict,
    frames: int | None,
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
    layout: str = "fixed",
) -> Manifest:
    """A new, empty manifest (no shard committed yet).

    splits: {"1": {"train": [ids], "test": [ids]}, ...}; unlisted_failures: videos the
    listing named but that cannot be opened at all; default_settings: the set was made
    with stage one's default extraction settings (stage two prefers such a set); layout:
    "ragged" for a dense set (frames None), whose manifest says so after its other keys.
    """
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        feature_set_id=feature_set_id,
        dataset=dataset,
        modality=modality,
        identity=identity,
        config=config,
        frames=frames,
        layout=layout,
        feature_dim=feature_dim,
        video_root=video_root,
        classes=classes,
        splits=splits,
        num_videos=num_videos,
        shard_size=shard_size,
        num_shards=num_shards,
        shards=[],
        unlisted_failures=list(unlisted_failures or []),
        default_settings=default_settings,
        complete=False,
        created_at=now_iso(),
    )
    # every key, defaults included (a new manifest says its modality), but a fixed-T set's layout:
    # its bytes stay those of every set made before ragged ones
    manifest._keys = tuple(k for k in NEW_KEYS if k != "layout" or layout != "fixed")
    return manifest


def create(set_dir: Path, manifest: Manifest) -> Manifest:
    """Write a new set's first manifest (under the lock), unless one appeared meanwhile.

    Returns the manifest now on disk: ours, or the one a concurrent run wrote first.
    """
    with locked(set_dir):
        try:
            return Manifest.read(set_dir)
        except StoreError:
            if (Path(set_dir) / MANIFEST).exists():
                raise  # there, but unreadable: never overwrite it
        write_manifest(set_dir, manifest)
        return manifest


def read_manifest(set_dir: Path) -> Manifest:
    """The committed state of a feature set (Manifest.read); raises StoreError when there is none."""
    return Manifest.read(set_dir)


def load_manifest(set_dir: Path) -> dict:
    """The manifest's JSON object as on disk, checked as read_manifest checks it: for scripts and
    tests that look at or edit the JSON itself (the code reads the typed Manifest)."""
    return Manifest.read(set_dir).to_json()


def write_manifest(set_dir: Path, manifest: Manifest | dict) -> None:
    """Atomically replace the manifest, then regenerate failures.jsonl from it.

    A JSON object (a manifest edited by hand or by a script) is checked as a read one is first.
    """
    if isinstance(manifest, dict):
        manifest = Manifest.from_json(manifest, str(Path(set_dir) / MANIFEST))
    manifest.updated_at = now_iso()
    failures = manifest.failures()
    manifest.num_stored = sum(s.videos for s in manifest.shards)
    manifest.num_failed = len(failures)
    # failures.jsonl first: it is derived, and a crash between the two leaves the older,
    # still-consistent manifest in charge.
    lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures)
    atomic_write_bytes(Path(set_dir) / FAILURES, lines.encode())
    text = json.dumps(manifest.to_json(), indent=1, ensure_ascii=False)
    atomic_write_bytes(Path(set_dir) / MANIFEST, text.encode())


def shard_entry(set_dir: Path, index: int, entry: dict, failures: list[dict], **more: Any) -> ShardEntry:
    """A manifest entry for shard `index` from write_shard's `entry` ({"file", "videos", "bytes",
    "sha256"}, and "copied" where rows were copied), its failures and `more` (revision, replaces)."""
    return ShardEntry.from_json({"index": index, **entry, "failures": failures, **more}, str(Path(set_dir) / MANIFEST))


def commit_shard(set_dir: Path, index: int, entry: dict, failures: list[dict]) -> Manifest:
    """Record a written shard in the manifest (under the lock). Returns the new manifest.

    Committing the same index twice (a retried Dask task) keeps the first entry, so a
    video is never listed twice.
    """
    new = shard_entry(set_dir, index, entry, failures)
    with locked(set_dir):
        manifest = Manifest.read(set_dir)
        if any(s.index == index for s in manifest.shards):
            return manifest
        manifest.shards.append(new)
        manifest.shards.sort(key=lambda s: s.index)
        write_manifest(set_dir, manifest)
        return manifest


def replace_shard(set_dir: Path, index: int, entry: dict, failures: list[dict]) -> Manifest:
    """Swap shard `index`'s manifest entry for a rewritten file (under the lock). Returns the new manifest.

    The new file has a new name (shard_name(index, revision)), so the committed file is
    never touched: a reader that listed the old entry still reads the old, consistent
    bytes, and the superseded file is ordinary garbage for `store gc` afterwards.
    """
    with locked(set_dir):
        manifest = Manifest.read(set_dir)
        old = [s for s in manifest.shards if s.index == index]
        if not old:
            raise StoreError(f"{set_dir}: shard {index} is not committed; nothing to replace")
        manifest.shards = [s for s in manifest.shards if s.index != index]
        manifest.shards.append(
            shard_entry(set_dir, index, entry, failures, revision=old[0].revision + 1, replaces=old[0].file)
        )
        manifest.shards.sort(key=lambda s: s.index)
        write_manifest(set_dir, manifest)
        return manifest


def mark_complete(set_dir: Path) -> Manifest:
    with locked(set_dir):
        manifest = Manifest.read(set_dir)
        done = {s.index for s in manifest.shards}
        manifest.complete = done >= set(range(manifest.num_shards))
        if manifest.complete and manifest.completed_at is None:
            manifest.completed_at = now_iso()
        write_manifest(set_dir, manifest)
        return manifest


def drop_shards(set_dir: Path, files: list[str]) -> Manifest:
    """Forget committed shards (corrupt ones) so that the next run recomputes only them.

    The manifest stops listing them first, atomically and under the lock, and the set
    becomes incomplete; only then are the files deleted. Returns the new manifest.
    """
    with locked(set_dir):
        manifest = Manifest.read(set_dir)
        manifest.shards = [s for s in manifest.shards if s.file not in files]
        manifest.complete = False
        manifest.completed_at = None
        write_manifest(set_dir, manifest)
    for name in files:
        (Path(set_dir) / name).unlink(missing_ok=True)
    return manifest
