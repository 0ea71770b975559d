"""Export a feature set for code that reads one array per video.

Every video becomes OUT/<video id, extension replaced by .npy>: float32 (T_i, D), the rows
`fs.video(...)` gives (a fixed-T set's up to each video's length). Then one JSON index:

    npy            videos.json: the set, its sampling (stride, fps, clip length), and per video its
                   file, rows, fps, duration, label, subset and time spans (compact where regular)
    actionformer   annotations.json as ActionFormer's THUMOS14 / ActivityNet loaders read it
                   ({"database": {id: {"subset", "duration", "fps", "annotations"}}}, the id without
                   its extension, so `feat_folder` + id + `.npy` is the array) and actionformer.yaml,
                   the `dataset:` lines of its config (feat_stride, num_frames, input_dim, ...)

Each file is written whole under a temporary name and renamed into place, the index last: a
killed export leaves no half-written file under a final name and no index; rerunning it writes
everything again (it removes the temporary files a killed one left).
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline import FeatureSetView, console, store
from pipeline.config import store_root
from pipeline.errors import ConfigError
from pipeline.files import TMP_MARK, atomic_write_bytes, atomic_write_json

from .config import ExportConfig

INDEX = {"npy": "videos.json", "actionformer": "annotations.json"}
ACTIONFORMER_CONFIG = "actionformer.yaml"
# Spans this close (s) to a regular grid are written as one; stored float32 times round to about this.
SPAN_TOLERANCE = 1e-4


def export(cfg: ExportConfig) -> Path:
    """Write the export of cfg.features into cfg.out; returns the index file."""
    root = store_root(cfg.features_root)
    dirs = [store.find_feature_set(ref.strip(), root) for ref in str(cfg.features).split(",") if ref.strip()]
    view = FeatureSetView(dirs)
    out = Path(cfg.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temps(out)
    subsets = subset_of(view, cfg.split)
    sampling = sampling_of(view)
    console.say(
        f"export: {view.num_videos} videos of {', '.join(view.ids)} ({'ragged' if view.ragged else f'T={view.frames}'}, "
        f"D={view.feature_dim}) to {out} as {cfg.format}"
        + (f"; removed {stale} temporary file(s) a stopped export left" if stale else "")
    )
    if not view.complete:
        console.say(
            f"warning: {', '.join(view.ids)} is incomplete; exporting the {view.num_videos} videos committed so far "
            f"(finish it with `make features`, then export again)"
        )
    entries: dict[str, dict] = {}
    bar = console.progress(view.num_videos, "video", "export")
    for video in view.videos():
        file = npy_name(video["video_id"])
        write_array(out / file, video["features"])
        entries[video["video_id"]] = entry_of(video, file, view.classes, subsets.get(video["video_id"]))
        bar.update(1)
    bar.close()
    index = out / INDEX[cfg.format]
    if cfg.format == "actionformer":
        atomic_write_json(index, actionformer_database(entries))
        atomic_write_bytes(out / ACTIONFORMER_CONFIG, actionformer_yaml(view, out, entries, sampling).encode())
    else:
        atomic_write_json(index, npy_index(view, entries, sampling))
    console.result(f"exported {len(entries)} videos of {', '.join(view.ids)} -> {out} (index {index.name})")
    return index


def npy_name(video_id: str) -> str:
    """The array's path under OUT: the video id, folders kept, extension replaced ('A/v.avi' -> 'A/v.npy').
    An id that would leave OUT (absolute, or with '..': a CSV's absolute path) keeps its path inside it."""
    parts = [p for p in PurePosixPath(video_id).parts if p not in ("/", "..", ".")]
    if not parts:
        raise ConfigError(f"video id {video_id!r} names no file")
    return str(PurePosixPath(*parts).with_suffix(".npy"))


def write_array(path: Path, features: np.ndarray) -> None:
    """features (T, D) float32 as a .npy, written whole and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(features, dtype=np.float32))
    atomic_write_bytes(path, buf.getvalue())


def remove_stale_temps(out: Path) -> int:
    """Remove the temporary files of an export that was stopped (ours only: .npy, .json, .yaml)."""
    stale = [p for p in out.rglob(f"*{TMP_MARK}*") if p.name.split(TMP_MARK)[0].endswith((".npy", ".json", ".yaml"))]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def subset_of(view: FeatureSetView, split: str) -> dict[str, str]:
    """video id -> "train" or "test", the side of `split` that lists it."""
    name = view.split_names(split)[0]
    sides = view.manifest.splits.get(name, {})
    return {vid: side for side, ids in sides.items() for vid in ids}


def sampling_of(view: FeatureSetView) -> dict:
    """The set's sampling as an export states it: mode, stride (source frames per row) or fps (rows
    per second), frames (T of a fixed-T set), clip_frames (K frames per row; 1 for a picture model)."""
    s = dict((view.manifest.identity or {}).get("sampling") or {})
    clip = s.pop("clip", None)
    return {
        "mode": s.get("mode"),
        "stride": s.get("stride"),
        "fps": s.get("fps"),
        "frames": view.frames,
        "clip_frames": clip["frames"] if clip else 1,
    }


def entry_of(video: dict, file: str, classes: list[str], subset: str | None) -> dict:
    """What the index says of one video (module docstring); spans compact when on a regular grid."""
    label = video["label"]
    return {
        "file": file,
        "rows": int(len(video["features"])),
        "fps": video["fps"],
        "duration": video["duration"],
        "label": classes[label] if 0 <= label < len(classes) else None,
        "label_id": label,
        "subset": subset,
        "spans": compact_spans(video["spans"]),
    }


def compact_spans(spans: np.ndarray) -> dict | list:
    """spans (T, 2) s as {"start", "step", "width", "end"} when row k is [start + k*step, start + k*step
    + width) but for the last, cut at `end`; else the list of [start, end] pairs."""
    spans = np.asarray(spans, dtype=np.float64)
    if len(spans) == 0:
        return []
    start = spans[0, 0]
    step = spans[1, 0] - spans[0, 0] if len(spans) > 1 else spans[0, 1] - spans[0, 0]
    width = spans[0, 1] - spans[0, 0]
    k = np.arange(len(spans))
    grid = np.stack([start + k * step, start + k * step + width], 1)
    grid[-1, 1] = spans[-1, 1]
    if np.abs(grid - spans).max() <= SPAN_TOLERANCE and spans[-1, 1] <= grid[-1, 0] + width + SPAN_TOLERANCE:
        return {
            "start": round(float(start), 6),
            "step": round(float(step), 6),
            "width": round(float(width), 6),
            "end": round(float(spans[-1, 1]), 6),
        }
    return [[round(float(a), 6), round(float(b), 6)] for a, b in spans]


def expand_spans(spans: dict | list, rows: int) -> np.ndarray:
    """compact_spans' inverse: (rows, 2) float64 [start, end) s."""
    if isinstance(spans, list):
        return np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    k = np.arange(rows)
    out = np.stack([spans["start"] + k * spans["step"], spans["start"] + k * spans["step"] + spans["width"]], 1)
    if rows:
        out[-1, 1] = spans["end"]
    return out


def npy_index(view: FeatureSetView, entries: dict[str, dict], sampling: dict) -> dict:
    """videos.json: the set and its sampling, then every video's entry."""
    return {
        "feature_sets": view.ids,
        "feature_dim": view.feature_dim,
        "dtype": "float32",
        "layout": "ragged" if view.ragged else "fixed",
        "sampling": sampling,
        "classes": view.classes,
        "spans": "per video: {start, step, width, end} (row k: [start + k*step, start + k*step + width), the last "
        "cut at end) or a list of [start, end] seconds",
        "videos": entries,
    }


def actionformer_key(video_id: str) -> str:
    """ActionFormer's id of a video: the .npy's path under OUT without its extension."""
    return str(PurePosixPath(npy_name(video_id)).with_suffix(""))


def actionformer_database(entries: dict[str, dict]) -> dict:
    """annotations.json: {"database": {id: {"subset", "duration", "fps", "annotations", ...}}}.

    The store holds a label per video, not action segments: "annotations" is empty (add your
    segments, {"segment": [start, end], "label", "label_id"}, to train a localizer) and the video's
    class, where it has one, is in "label"/"label_id". A fixed-T set records no duration: the key
    is left out (its THUMOS14 loader then reads none; its ActivityNet loader needs one)."""
    database = {}
    for vid, e in entries.items():
        item = {"subset": e["subset"] or "unlisted", "fps": e["fps"], "annotations": [], "rows": e["rows"]}
        if e["duration"] is not None:
            item["duration"] = e["duration"]
        if e["label"] is not None:
            item |= {"label": e["label"], "label_id": e["label_id"]}
        database[actionformer_key(vid)] = item
    return {"version": "vidstore export", "database": database}


def feat_stride(sampling: dict, fps_values: set[float]) -> tuple[float | int, str]:
    """ActionFormer's feat_stride (source frames between rows) and why: STRIDE=S's S; FPS=R's
    fps / R when every video has one frame rate; else -1 (its ActivityNet loader then takes each
    video's duration * fps / rows)."""
    if sampling.get("stride"):
        return int(sampling["stride"]), "STRIDE="
    if sampling.get("fps") and len(fps_values) == 1:
        (fps,) = fps_values
        return round(fps / sampling["fps"], 6), f"{fps:g} fps / FPS={sampling['fps']:g}"
    return -1, "frame rates differ or rows are not evenly spaced: set per video from duration * fps / rows"


def actionformer_yaml(view: FeatureSetView, out: Path, entries: dict[str, dict], sampling: dict) -> str:
    """The lines of ActionFormer's config that point it at this export (its configs' brace style)."""
    fps_values = {round(e["fps"], 6) for e in entries.values() if e["fps"]}
    stride, why = feat_stride(sampling, fps_values)
    subsets = sorted({e["subset"] or "unlisted" for e in entries.values()})
    default_fps = f"{next(iter(fps_values)):g}" if len(fps_values) == 1 else "~"
    longest = max((e["rows"] for e in entries.values()), default=0)
    lines = [
        f"# ActionFormer's dataset lines for this export of {', '.join(view.ids)} (vidstore export FORMAT=actionformer).",
        "# annotations.json lists every video; add your action segments to its 'annotations' and set num_classes.",
        f"train_split: [{', '.join(repr(s) for s in subsets if s != 'test') or repr('train')}]",
        f"val_split: [{repr('test') if 'test' in subsets else repr(subsets[0])}]",
        "dataset: {",
        f"  json_file: {(out / INDEX['actionformer']).resolve()},",
        f"  feat_folder: {out.resolve()},",
        "  file_prefix: ~,",
        "  file_ext: .npy,",
        f"  input_dim: {view.feature_dim},",
        f"  feat_stride: {stride},  # {why}",
        f"  num_frames: {sampling['clip_frames']},  # frames each row sees",
        f"  default_fps: {default_fps},",
        # a power of two from 32 up: ActionFormer's feature pyramid divides it by 2^5
        f"  max_seq_len: {max(32, 1 << max(longest - 1, 0).bit_length())},  # the longest video has {longest} rows",
        "}",
    ]
    return "\n".join(lines) + "\n"
