"""The store as a catalog: what feature sets exist under a (shared) FEATURES_ROOT."""
from __future__ import annotations

import json
from pathlib import Path

from . import store


def summarise(set_dir: Path) -> dict:
    """One catalog row: dataset, id, backbone/weights, T, videos, failures, size, state, created."""
    m = store.load_manifest(set_dir)
    ident = m["identity"]
    sampling = ident["sampling"]
    return {
        "dataset": m["dataset"],
        "id": m["feature_set_id"],
        "backbone": f"{ident['backbone']}/{ident['weights']}",
        "T": sampling.get("frames") or f"{sampling.get('max_frames')}@{sampling.get('fps')}fps",
        "videos": f"{m['num_stored']}/{m['num_videos']}",
        "failures": m["num_failed"],
        "size": f"{store.dir_bytes(set_dir) / 1e6:.1f} MB",
        "state": "complete" if m["complete"] else f"partial ({len(m['shards'])}/{m['num_shards']} shards)",
        "created": m["created_at"],
    }


def list_sets(features_root: Path) -> list[dict]:
    rows = []
    for d in store.feature_sets(features_root):
        try:
            rows.append(summarise(d))
        except store.StoreError as e:
            rows.append({"dataset": d.parent.name, "id": d.name, "backbone": "?", "T": "?", "videos": "?",
                         "failures": "?", "size": "?", "state": f"unreadable: {e}", "created": "?"})
    return rows


def describe(set_dir: Path) -> str:
    """Human-readable full record: identity, config, split sizes, failures."""
    m = store.load_manifest(set_dir)
    stored = set()
    for s in m["shards"]:
        stored.update(store.read_shard(set_dir / s["file"], s["sha256"])["video_ids"].tolist()) if len(m["shards"]) < 64 else None
    lines = [f"feature set {m['feature_set_id']}", f"  directory: {set_dir}", f"  dataset:   {m['dataset']} ({len(m['classes'])} classes)",
             f"  state:     {'complete' if m['complete'] else 'partial'}; {m['num_stored']} of {m['num_videos']} videos stored, "
             f"{m['num_failed']} failed, {len(m['shards'])}/{m['num_shards']} shards, {store.dir_bytes(set_dir) / 1e6:.1f} MB",
             f"  created:   {m['created_at']}  updated: {m.get('updated_at')}",
             "  identity (hashed into the id):"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in m["identity"].items()]
    lines.append("  extraction config:")
    lines += [f"    {k}: {json.dumps(v)}" for k, v in m["config"].items()]
    lines.append("  splits (videos listed / stored):")
    for name, parts in m["splits"].items():
        desc = ", ".join(f"{part} {len(ids)}" + (f"/{len(stored.intersection(ids))}" if stored else "") for part, ids in parts.items())
        lines.append(f"    {name}: {desc}")
    if m["num_failed"]:
        lines.append(f"  failures: {set_dir / store.FAILURES}")
    return "\n".join(lines)
