"""The store as a catalog: which feature sets exist under a (shared) FEATURES_ROOT.

Everything here reads manifests (and, for `describe`, the `video_ids` of each shard);
nothing is written, so any number of people can list a team's store while runs write to
it. The maintenance that does write (`store gc`) is in maintenance.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from ..errors import StoreError
from .claims import Claim
from .manifest import FAILURES, MANIFEST, Manifest

COLUMNS = ("dataset", "id", "modality", "model/weights", "T", "videos", "failures", "size", "state", "created")


def feature_sets(features_root: Path) -> Iterator[Path]:
    """Every feature-set directory (one with a manifest) under the store root."""
    root = Path(features_root)
    if root.is_dir():
        yield from sorted(p.parent for p in root.glob(f"*/*/{MANIFEST}"))


def match_feature_sets(features_root: Path, ref: str) -> list[Path]:
    """Sets under the root whose id or dataset/id starts with `ref`; an exact id or
    dataset/id wins over longer ones (the same id under two dataset names stays ambiguous)."""
    matches = [
        d for d in feature_sets(features_root) if d.name.startswith(ref) or f"{d.parent.name}/{d.name}".startswith(ref)
    ]
    return [d for d in matches if ref in (d.name, f"{d.parent.name}/{d.name}")] or matches


def record(set_dir: Path, m: Manifest | None = None) -> dict:
    """Machine-readable facts of one feature set (what `store list --json` prints); m: its manifest, if read already."""
    m = m or Manifest.read(set_dir)
    ident = m.identity
    if "weights" not in ident or "sampling" not in ident:
        raise StoreError(f"{Path(set_dir) / MANIFEST}: its identity records no weights or sampling")
    return {
        "dataset": m.dataset,
        "id": m.feature_set_id,
        "path": str(set_dir),
        "modality": m.modality,
        # the visual sets' backbone, or the audio sets' feature kind (logmel, vggish)
        "backbone": ident.get("backbone") or ident.get("features"),
        "weights": ident["weights"],
        "sampling": ident["sampling"],
        "image_size": ident.get("image_size"),
        "precision": ident.get("precision"),
        "feature_dim": m.feature_dim,
        "layout": m.layout,
        "videos": m.num_videos,
        "stored": m.num_stored,
        "failed": m.num_failed,
        "bytes": sum(s.bytes for s in m.shards),  # committed shards only, as readers see them
        "shards": len(m.shards),
        "num_shards": m.num_shards,
        "complete": m.complete,
        "running": run_in_progress(set_dir),
        "created_at": m.created_at,
        "completed_at": m.completed_at,
    }


def run_in_progress(set_dir: Path) -> bool:
    """True while some live process (anywhere that shares the store) holds a shard claim."""
    claims = Path(set_dir) / ".claims"
    if not claims.is_dir():
        return False
    return any(Claim(set_dir, int(c.name)).held_elsewhere() for c in claims.iterdir() if c.name.isdigit())


def row(r: dict) -> dict:
    """One line of `store list`: the COLUMNS, formatted for people."""
    if r.get("unreadable"):
        return {c: r.get(c, "?") for c in COLUMNS} | {"state": f"unreadable: {r['unreadable']}"}
    frames = sampling_words(r["sampling"])
    progress = f"{r['shards']}/{r['num_shards']} shards"
    state = "complete" if r["complete"] else f"running ({progress})" if r["running"] else f"partial ({progress})"
    return {
        "dataset": r["dataset"],
        "id": r["id"],
        "modality": r["modality"],
        "model/weights": f"{r['backbone']}/{r['weights']}" if r["weights"] else r["backbone"],
        "T": frames,
        "videos": f"{r['stored']}/{r['videos']}",
        "failures": str(r["failed"]),
        "size": human_bytes(r["bytes"]),
        "state": state,
        "created": r["created_at"][:16].replace("T", " "),
    }


def sampling_words(s: dict) -> str:
    """The T column: `16` (uniform), `16@2fps` (at most 16 at 2 fps), `all@1fps`, `all/s4` (a dense
    set's rows over the whole video, at 1 fps or every 4th frame)."""
    if s["mode"] == "uniform":
        return str(s["frames"])
    if s["mode"] == "dense":
        return f"all@{s['fps']:g}fps" if "fps" in s else f"all/s{s['stride']}"
    return f"{s['max_frames']}@{s['fps']:g}fps"


def list_sets(features_root: Path) -> list[dict]:
    """record() of every feature set under the root, by dataset then creation time.

    A set whose manifest cannot be read is still listed (with `unreadable`): on a
    shared store, hiding it would only make someone recompute it.
    """
    out = []
    for d in feature_sets(features_root):
        try:
            out.append(record(d))
        except StoreError as e:
            out.append({"dataset": d.parent.name, "id": d.name, "path": str(d), "created_at": "", "unreadable": str(e)})
    return sorted(out, key=lambda r: (r["dataset"], r["created_at"], r["id"]))


def table(records: list[dict]) -> str:
    """`store list`'s table: a header, a rule, and one row() per record, in aligned columns."""
    rows = [row(r) for r in records]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    line = lambda r: "  ".join(r[c].ljust(widths[c]) for c in COLUMNS)
    return "\n".join([line({c: c for c in COLUMNS}), "  ".join("-" * widths[c] for c in COLUMNS), *map(line, rows)])


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (SI units, as `ls --si` and `du --si` print them)."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} TB"


def stored_ids(set_dir: Path, manifest: Manifest) -> tuple[set[str], np.ndarray, list[str]]:
    """Video ids and rows per video (lengths (n,) int64) in the committed shards (reading only
    `video_ids` and `lengths`), and unreadable shards."""
    ids, lengths, bad = set(), [np.zeros(0, np.int64)], []
    for s in manifest.shards:
        try:
            with h5py.File(Path(set_dir) / s.file, "r") as f:
                ids.update(f["video_ids"].asstr()[()].tolist())
                lengths.append(f["lengths"][()].astype(np.int64))
        except (OSError, KeyError) as e:
            bad.append(f"{s.file} ({type(e).__name__})")
    return ids, np.concatenate(lengths), bad


def shard_lines(m: Manifest, lengths: np.ndarray) -> list[str]:
    """`store info`'s account of the shards' datasets; a ragged set's with its rows per video."""
    clip = clip_shape(m.identity)
    if not m.ragged:
        return [
            f"  per shard:  features (n, {m.frames}, {m.feature_dim}) float16 with n <= {m.shard_size}, "
            f"lengths, labels, video_ids, groups, frame_indices{clip and f' (n, T, {clip})'}, timestamps"
            + (", has_audio" if m.modality == "audio" else "")
        ]
    rows = (
        f"{int(lengths.sum()):,} in all, per video min {int(lengths.min())} / median {float(np.median(lengths)):g} / "
        f"max {int(lengths.max())}"
        if len(lengths)
        else "none stored yet"
    )
    return [
        f"  layout:     ragged, {sampling_words(m.identity.get('sampling') or {'mode': 'dense', 'stride': '?'})} "
        f"({json.dumps(m.identity.get('sampling'))}): each video its own rows, nothing padded",
        f"  rows:       {rows}",
        f"  per shard:  features (R, {m.feature_dim}) float16, every video's rows one after another; lengths (n,) "
        f"rows per video; frame_indices (R{clip and f', {clip}'}), timestamps (R,), spans (R, 2); labels, video_ids, "
        f"groups, durations, video_fps (n,)" + (", has_audio" if m.modality == "audio" else ""),
    ]


def describe(set_dir: Path, max_failures: int = 5) -> str:
    """`store info`: identity, full extraction config, split sizes, failures."""
    m = Manifest.read(set_dir)
    r = record(set_dir, m)
    stored, lengths, bad = stored_ids(set_dir, m)
    state = (
        "complete"
        if m.complete
        else "running"
        if r["running"]
        else "partial (rerun `make features` with the same settings to resume)"
    )
    lines = [
        f"feature set {m.feature_set_id}",
        f"  directory:  {set_dir}",
        f"  dataset:    {m.dataset}, {f'{len(m.classes)} classes' if m.classes else 'unlabelled (labels -1)'}, "
        f"videos under {m.video_root}",
        f"  modality:   {m.modality}",
        f"  state:      {state}",
        f"  videos:     {m.num_stored} of {m.num_videos} stored, {m.num_failed} failed; "
        f"{len(m.shards)}/{m.num_shards} shards, {human_bytes(r['bytes'])}",
        *shard_lines(m, lengths),
        f"  created:    {m.created_at}   completed: {m.completed_at or '-'}   updated: {m.updated_at}",
        "  identity (hashed into the id: the same identity is the same feature set):",
        *(f"    {k}: {json.dumps(v)}" for k, v in m.identity.items()),
        "  extraction config (workers, batch, devices, scheduler only change the speed):",
        *(f"    {k}: {json.dumps(v)}" for k, v in m.config.items()),
        "  splits (videos listed / stored):",
    ]
    for name, parts in m.splits.items():
        lines.append(
            f"    {name}: "
            + ", ".join(f"{part} {len(ids)}/{len(stored.intersection(ids))}" for part, ids in parts.items())
        )
    if not m.splits:
        lines.append("    none: the dataset has no official splits")
    lines += copied_lines(m)
    if bad:
        lines.append(f"  UNREADABLE shards: {', '.join(bad)}; run `store verify`")
    failures = m.failures()
    if failures:
        lines.append(f"  failures ({len(failures)}, all in {Path(set_dir) / FAILURES}):")
        lines += [f"    {f['video_id']}: {f['reason']}" for f in failures[:max_failures]]
        if len(failures) > max_failures:
            lines.append(f"    ... and {len(failures) - max_failures} more")
    return "\n".join(lines)


def clip_shape(identity: dict) -> str:
    """'K' where each step is a clip of K frames (a video model's set), else ''."""
    clip = (identity.get("sampling") or {}).get("clip")
    return str(clip["frames"]) if clip else ""


def copied_lines(m: Manifest) -> list[str]:
    """`store info`'s account of the rows copied from other sets instead of computed."""
    copied: dict[str, int] = {}
    for s in m.shards:
        for set_id, n in s.copied.items():
            copied[set_id] = copied.get(set_id, 0) + n
    if not copied:
        return []
    return [f"  copied:     {sum(copied.values())} of {m.num_stored} stored rows (the same video and settings)"] + [
        f"    copied from {set_id}: {n}" for set_id, n in sorted(copied.items())
    ]
