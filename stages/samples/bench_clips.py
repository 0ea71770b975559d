"""UCF101-like clips for `make bench`: mpeg4 in AVI at UCF101's size, rate and bitrate, with or
without a sound track."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .clips import make_clips
from .sound_clips import jittered_tones, run_all

# Not life, automaton or static: pixel-level randomness needs several times UCF101's bitrate
# (docs/bench.md, "Figures behind the code"), so those clips would cost more to decode than real ones do.
BENCH_SCENES = ("testcard", "fractal", "plasma", "rings", "checker", "sunset", "stripes", "box", "bars")


def make_bench_clips(
    dir: Path,
    count: int,
    seconds: float = 7.0,
    *,
    size: tuple[int, int] = (320, 240),
    fps: float = 25,
    bitrate: str = "540k",
    workers: int | None = None,
) -> list[Path]:
    """UCF101-like clips for the benchmark: dir/bench_NNNN.avi, mpeg4 in AVI at `bitrate` bits/s.

    Defaults match UCF101: 320x240 px, 25 fps, 7 s (175 frames), ~540 kbit/s (UCF101's
    6.5 GB over 13,320 clips of 7.2 s; mpeg4's rate control lands near 600 kbit/s, files of
    about 0.5 MB). Each clip is 3 textured, moving scenes of random length under noise and
    a moving square, so decoding costs about what a real clip costs. Existing clips are
    reused; missing ones are made `workers` at a time (default: all cores), ~0.5 s of CPU
    each. Returns the paths, sorted.
    """
    dir, total = Path(dir), round(seconds * fps)
    if total < 3:
        raise ValueError(f"seconds * fps must give at least 3 frames, got {seconds} s at {fps} fps")
    jobs: list[dict[str, Any]] = []  # make_clip / make_sound_clip keyword arguments
    for i in range(count):
        rng = random.Random(f"bench:{i}")
        cuts = sorted(rng.sample(range(1, total), 2))
        jobs.append(
            dict(
                path=dir / f"bench_{i:04d}.avi",
                scenes=rng.sample(BENCH_SCENES, 3),
                fps=fps,
                size=size,
                scene_frames=[cuts[0], cuts[1] - cuts[0], total - cuts[1]],
                seed=f"bench/{i}",
                bitrate=bitrate,
            )
        )
    make_clips(jobs, workers)
    return [j["path"] for j in jobs]


def make_sound_bench_clips(
    dir: Path,
    count: int,
    seconds: float = 7.0,
    *,
    size: tuple[int, int] = (320, 240),
    fps: float = 25,
    workers: int | None = None,
) -> list[Path]:
    """UCF101-like clips with sound for measuring: dir/sound_bench_NNNN.avi, 320x240 at 25 fps,
    `seconds` long, mpeg4 pictures and a 44.1 kHz stereo MP3 track of three tones (64 kbit/s).
    Existing clips are reused. Returns the paths, sorted."""
    jobs: list[dict[str, Any]] = []  # make_clip / make_sound_clip keyword arguments
    for i in range(count):
        rng = random.Random(f"sound-bench:{i}")
        freqs = [rng.choice([220.0, 330.0, 440.0, 660.0, 880.0, 1320.0]) for _ in range(3)]
        scenes = rng.sample(["testcard", "plasma", "rings", "box"], 3)
        tones = jittered_tones(freqs, seconds, rng)
        jobs.append(
            dict(
                path=Path(dir) / f"sound_bench_{i:04d}.avi",
                scenes=scenes,
                tones=tones,
                fps=fps,
                size=size,
                seed=f"sound-bench/{i}",
            )
        )
    run_all([j for j in jobs if not Path(j["path"]).is_file()], workers)
    return [j["path"] for j in jobs]


def make_dense_bench_video(dir: Path, seconds: float = 600.0, *, size: tuple[int, int] = (320, 240)) -> Path:
    """A long video for timing a dense set: dir/dense_bench_<seconds>s.mp4, H.264 at `size` and
    25 fps, a changing picture (BENCH_SCENES in turn, each once, a new one about every 30 s or
    more, each moving, under noise and a moving square). Made once, then reused. Returns its path."""
    path = Path(dir) / f"dense_bench_{seconds:g}s.mp4"
    total = max(3, round(seconds * 25))
    scenes = min(len(BENCH_SCENES), max(1, round(seconds / 30)))  # a scene appears once in a clip
    frames = [total // scenes + (i < total % scenes) for i in range(scenes)]
    names = list(BENCH_SCENES[:scenes])
    job = dict(path=path, scenes=names, fps=25, size=size, scene_frames=frames, seed="dense-bench", codec="libx264")
    job["timeout"] = max(120.0, 2 * seconds)  # the scenes' filters draw every pixel of every frame: minutes for 10 min
    make_clips([job], workers=1, reuse=True)
    return path
