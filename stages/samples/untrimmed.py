"""The untrimmed sample: videos of a minute or more with events at known times, and their annotations.

`make localize` with neither FEATURES= nor ANNOTATIONS= trains on it. Each video is background
(Conway's game of life, green) with events between stretches of it; three classes:

    Rise    a scrolling checkerboard, then a shimmering sunset (each half of the event)
    Fall    the same two scenes in the other order
    Rings   expanding rings, a look of its own

Every single frame of Rise looks like some frame of Fall: only the order of the two halves tells
them apart, so a head must read neighbouring steps (a per-step tagger cannot), as the classes of
the temporal-order check in stage two's tests. Files, under the sample's root:

    videos/video_NN.avi    mpeg4, 160x120 px, 10 fps, 60-90 s (clips.py's scenes, look and square)
    list.csv               a path-only listing of them (DATASET=csv, an unlabelled untrimmed set)
    annotations.json       ActivityNet's layout: video_NN in subset training or validation, the
                           events as segments in seconds
    .complete              written last: the version and the files; a stale or partial tree is finished
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import atomic_write_json

from .clips import make_clips, remove_stale_partials
from .ucf101 import write_text_atomic

UNTRIMMED_VERSION = 1  # bump when the sample's content changes; a stale tree is regenerated
UNTRIMMED_CLASSES = {"Rise": ("checker", "sunset"), "Fall": ("sunset", "checker"), "Rings": ("rings",)}
BACKGROUND = "life"  # a random seed per stretch: ffmpeg-python merges identical segments
FPS = 10  # frames/s
SIZE = (160, 120)  # (width, height), px
VIDEOS, VALIDATION = 12, 4  # videos in all; the last VALIDATION of them are scored
SECONDS = (60, 90)  # each video's length, s (drawn)
EVENT = (8, 14)  # each event's length, s (drawn)
GAP = (4, 10)  # background between events, s (drawn)
COMPLETE = ".complete"


@dataclass(frozen=True)
class UntrimmedSample:
    root: Path
    listing: Path  # list.csv
    annotations: Path  # annotations.json


def plan_video(name: str, subset: str, rng: random.Random, counts: dict[str, int]) -> dict:
    """One video's scenes, frames per scene and events (seconds), drawn from `rng`; each event's class
    is the one with the fewest events so far (`counts`, updated), so the classes stay balanced."""
    fps = FPS
    duration = rng.randint(*SECONDS)
    scenes, frames, events = [], [], []
    t = rng.randint(3, 8)  # s of background first
    scenes.append(BACKGROUND)
    frames.append(t * fps)
    while True:
        length = rng.randint(*EVENT)
        gap = rng.randint(*GAP)
        if t + length + 3 > duration:
            break
        label = min(sorted(UNTRIMMED_CLASSES), key=lambda c: (counts[c], rng.random()))
        counts[label] += 1
        parts = UNTRIMMED_CLASSES[label]
        cut = [length // len(parts)] * len(parts)
        cut[-1] += length - sum(cut)
        scenes += list(parts)
        frames += [c * fps for c in cut]
        events.append({"segment": [float(t), float(t + length)], "label": label})
        t += length
        rest = min(gap, duration - t)
        scenes.append(BACKGROUND)
        frames.append(rest * fps)
        t += rest
    if t < duration:
        frames[-1] += (duration - t) * fps
    return {
        "name": name,
        "subset": subset,
        "duration": float(duration),
        "scenes": scenes,
        "frames": frames,
        "events": events,
    }


def plan(seed: int = 0) -> list[dict]:
    """Every video of the sample: the last VALIDATION are scored, the rest trained on."""
    rng = random.Random(f"untrimmed:{seed}")
    n, held = VIDEOS, VALIDATION
    counts = dict.fromkeys(UNTRIMMED_CLASSES, 0)
    return [plan_video(f"video_{k:02d}", "validation" if k >= n - held else "training", rng, counts) for k in range(n)]


def make_untrimmed_sample(root: Path, workers: int | None = None) -> UntrimmedSample:
    """Generate the untrimmed sample at `root` (module docstring); idempotent, deterministic."""
    root = Path(root)
    sample = UntrimmedSample(root, root / "list.csv", root / "annotations.json")
    marker = root / COMPLETE
    if marker.is_file() and json.loads(marker.read_text()).get("version") == UNTRIMMED_VERSION:
        if all((root / "videos" / f"{v['name']}.avi").is_file() for v in plan()):
            return sample
    elif marker.is_file():  # an older version: none of its videos may be reused
        for old in (root / "videos").glob("*.avi"):
            old.unlink()
        marker.unlink()
    remove_stale_partials(root)
    videos = plan()
    jobs = [
        {
            "path": root / "videos" / f"{v['name']}.avi",
            "scenes": v["scenes"],
            "scene_frames": v["frames"],
            "fps": FPS,
            "size": SIZE,
            "seed": f"untrimmed:{v['name']}",
            "bitrate": "400k",  # the game of life is all detail: at constant quality a video takes 6 MB
            "timeout": 900.0,  # a minute and a half of geq scenes on a busy machine
        }
        for v in videos
    ]
    make_clips(jobs, workers)
    write_text_atomic(sample.listing, ["path", *(f"videos/{v['name']}.avi" for v in videos)], "\n")
    database = {
        v["name"]: {"subset": v["subset"], "duration": v["duration"], "annotations": v["events"]} for v in videos
    }
    atomic_write_json(sample.annotations, {"version": "vidstore untrimmed sample", "database": database})
    atomic_write_json(marker, {"version": UNTRIMMED_VERSION, "videos": [v["name"] for v in videos]})
    return sample
