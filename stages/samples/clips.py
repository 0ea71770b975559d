"""Drawing clips: ffmpeg scenes, one ffmpeg call per clip, written atomically.

A clip is a sequence of *scenes* from `SCENES`, each drawn by an ffmpeg lavfi source
(testsrc2, smptebars, mandelbrot, life, cellauto, geq patterns, ...). Scenes differ in
pattern *and* colour, so even a randomly initialised ResNet-50 at 64-112 px separates
them; each clip varies within its class (scene lengths, start offsets, hue, saturation,
noise and a moving square drawn over everything), so the task is not trivial.

Every clip is ONE ffmpeg call: the scene segments are trimmed and concatenated inside one
filter graph. ffmpeg gets an argument list built by ffmpeg-python, never a shell string;
clips are written to a temp name and renamed, so an interrupted run never leaves a
half-written clip under a video name. Everything is deterministic given a seed (single
encoder thread, seeded generators), so the same call gives the same bytes on one machine.

Sizes are (width, height) in pixels, rates in frames per second, durations in seconds.
"""

from __future__ import annotations

import functools
import os
import random
import re
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the argument lists

from pipeline.ffmpeg_tools import INSTALL_HINT, find_binary

MUXERS = {".avi": "avi", ".mkv": "matroska", ".mp4": "mp4", ".mov": "mov", ".webm": "webm"}
PARTIAL = ".partial"  # suffix of a clip being written; never a video extension, so no adapter lists it


class SynthError(RuntimeError):
    """A generated dataset could not be made (ffmpeg missing or failing)."""


@dataclass(frozen=True)
class Clip:
    """One generated video: where it is, and how many frames each scene got (in order)."""

    path: Path
    scenes: tuple[str, ...]
    scene_frames: tuple[int, ...]  # frames per scene; the clip has sum(scene_frames) frames
    fps: float  # frames/s
    size: tuple[int, int]  # (width, height), px

    @property
    def frames(self) -> int:
        return sum(self.scene_frames)


# ---------------------------------------------------------------- ffmpeg
def require_ffmpeg(name: str = "ffmpeg") -> str:
    """Path of ffmpeg (or ffprobe), found as stage one finds it; SynthError with the install hint if none."""
    path = find_binary(name)
    if not path:
        raise SynthError(f"{name} not found on PATH, and the generated videos need it: {INSTALL_HINT}")
    return path


@functools.cache
def has_encoder(name: str) -> bool:
    """Whether this ffmpeg build has an encoder (libx264 is absent from some builds)."""
    out = subprocess.run(
        [require_ffmpeg(), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30
    ).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.startswith(" "))


def run_ffmpeg(stream, dest: Path, timeout: float = 120.0) -> None:
    """Run one ffmpeg-python output node (argument list, no shell), writing dest atomically.

    The node must write to `partial_name(dest)`; on success it is renamed to dest. On any
    failure the partial file is removed and SynthError names dest and ffmpeg's last words.
    """
    args = ffmpeg.compile(stream, cmd=require_ffmpeg())
    # Global options go right after the binary (ffmpeg-python's global_args would put them
    # after the output file, where ffmpeg ignores them as trailing options).
    args = [args[0], "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args[1:]]
    tmp = partial_name(dest)
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise SynthError(f"ffmpeg took more than {timeout:g} s to make {dest}; command: {shlex.join(args)}") from None
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        why = proc.stderr.decode("utf-8", "replace").strip()[-800:] or f"exit status {proc.returncode}"
        raise SynthError(f"ffmpeg could not make {dest}: {why}\ncommand: {shlex.join(args)}")
    os.replace(tmp, dest)


def partial_name(dest: Path) -> Path:
    """Temp name next to dest, unique per process so two generators never share one."""
    return dest.with_name(f".{dest.name}.{os.getpid()}{PARTIAL}")


def remove_stale_partials(root: Path) -> None:
    """Delete temp clips left by generators that died (their pid is gone), so they do not pile up."""
    for p in Path(root).rglob(f"*{PARTIAL}") if Path(root).is_dir() else []:
        pid = p.name[: -len(PARTIAL)].rsplit(".", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def output(stream, dest: Path, **kw):
    """An output node writing the partial file of dest, muxer chosen from dest's extension."""
    muxer = MUXERS.get(dest.suffix.lower())
    if muxer is None:
        raise SynthError(f"{dest}: unknown video extension {dest.suffix!r}; use one of {', '.join(MUXERS)}")
    # bitexact: no random ids (Matroska's SegmentUID) or version strings, so a seed gives the same bytes.
    return stream.output(
        str(partial_name(dest)), format=kw.pop("format", muxer), fflags="+bitexact", flags="+bitexact", **kw
    )


def lavfi(source: str, **params):
    """A lavfi source as an ffmpeg input, e.g. lavfi("testsrc2", size="160x120", rate=10)."""
    return ffmpeg.input(f"{source}=" + ":".join(f"{k}={v}" for k, v in params.items()), format="lavfi")


def encoder_options(
    codec: str, quality: int | None = None, bitrate: str | None = None, bframes: int | None = None
) -> dict:
    """Encoder settings: one thread (deterministic output, and the pool already fills the cores);
    bframes: B-frames between reference frames (None: the encoder's default, none for mpeg4)."""
    # MJPEG wants full-range ("j") YUV; every other encoder here takes plain 4:2:0.
    kw = {"vcodec": codec, "pix_fmt": "yuvj420p" if codec == "mjpeg" else "yuv420p", "threads": 1}
    if bframes is not None:
        kw["bf"] = bframes
    if bitrate:
        kw["video_bitrate"] = bitrate
    elif codec in ("mpeg4", "mjpeg", "msmpeg4"):
        kw["q:v"] = quality or 4  # constant quality, 2 (best) .. 31
    elif codec in ("libx264", "libx265"):
        kw["crf"] = quality or 23
    return kw


# ---------------------------------------------------------------- scenes
# Each builder returns (endless stream of (w, h) frames at fps, frames to skip first).
# Skipping a random number of frames starts an evolving source (zoom, automaton, clock)
# at a different point in each clip; geq scenes take a random phase instead, which costs
# nothing.
def scene_bars(w, h, fps, rng):
    """SMPTE colour bars (grey, yellow, cyan, green, magenta, red, blue), static."""
    return lavfi("smptebars", size=f"{w}x{h}", rate=fps), 0


def scene_testcard(w, h, fps, rng):
    """ffmpeg's testsrc2 card: colour blocks, a moving gradient and a running clock."""
    return lavfi("testsrc2", size=f"{w}x{h}", rate=fps), rng.randrange(0, 5 * round(fps))


def scene_fractal(w, h, fps, rng):
    """A Mandelbrot zoom: a green and red fractal on pink that grows as it zooms."""
    src = lavfi(
        "mandelbrot", size=f"{w}x{h}", rate=fps, maxiter=48, start_scale=round(rng.uniform(2.0, 3.5), 3), end_pts=100
    )
    return src, rng.randrange(0, 2 * round(fps))


def scene_life(w, h, fps, rng):
    """Conway's game of life: bright green cells and olive mould on dark green."""
    src = lavfi(
        "life",
        size=f"{w}x{h}",
        rate=fps,
        seed=rng.randrange(2**31),
        ratio=round(rng.uniform(0.3, 0.6), 3),
        mold=10,
        life_color="0x40ff40",
        death_color="0x002000",
        mold_color="0x608000",
    )
    return src, rng.randrange(0, round(fps))


def scene_automaton(w, h, fps, rng):
    """An elementary cellular automaton scrolling down, orange on black."""
    src = lavfi("cellauto", size=f"{w}x{h}", rate=fps, rule=rng.choice([30, 90, 110, 150]), seed=rng.randrange(2**31))
    src = src.filter("format", "rgb24").filter("lutrgb", r="val", g="val*0.5", b="val*0.1")
    return src, rng.randrange(0, round(fps))


def geq_scene(w, h, fps, r: str, g: str, b: str):
    """A pattern painted by geq from expressions of u = X/W, v = Y/H (0..1) and T (s).

    geq evaluates its expressions per pixel, slowly, so it paints at a quarter of the width
    and height and the segment's scale filter enlarges it: 16 times fewer pixels to evaluate,
    and these patterns are smooth or coarse enough to look the same.
    """
    sw, sh = max(16, w // 4), max(12, h // 4)
    expr = lambda e: re.sub(r"\bv\b", "(Y/H)", re.sub(r"\bu\b", "(X/W)", e))
    return lavfi("color", c="black", size=f"{sw}x{sh}", rate=fps).filter("geq", r=expr(r), g=expr(g), b=expr(b))


def scene_plasma(w, h, fps, rng):
    """Drifting sine plasma in magenta and blue."""
    p, kx, ky = rng.uniform(0, 6.28), rng.uniform(16, 27), rng.uniform(12, 20)
    q = f"(sin(u*{kx:.2f}+T*2.5+{p:.2f})+sin(v*{ky:.2f}-T*1.7)+2)/4"
    return geq_scene(w, h, fps, r=f"40+200*{q}", g="40", b=f"230-150*{q}"), 0


def scene_rings(w, h, fps, rng):
    """Concentric rings expanding from a random centre, yellow on deep blue."""
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
    q = f"(1+sin(hypot((u-{cx:.2f})*53,(v-{cy:.2f})*40)-T*8))/2"
    return geq_scene(w, h, fps, r=f"250*{q}", g=f"220*{q}", b=f"120-100*{q}"), 0


def scene_checker(w, h, fps, rng):
    """A scrolling checkerboard (8 cells high), teal and white."""
    vx, vy = rng.uniform(1.5, 3), rng.uniform(-1, 1)  # cells/s
    q = f"mod(floor(u*8*W/H+T*{vx:.2f})+floor(v*8+T*{vy:.2f}),2)"
    return geq_scene(w, h, fps, r=f"20+230*{q}", g=f"140+110*{q}", b=f"140+110*{q}"), 0


def scene_sunset(w, h, fps, rng):
    """A red-to-yellow sky with a shimmering horizon."""
    p = rng.uniform(0, 6.28)
    q = f"clip(v+0.08*sin(u*23+T*3+{p:.2f}),0,1)"
    return geq_scene(w, h, fps, r="240", g=f"40+170*{q}", b=f"30*{q}"), 0


def scene_stripes(w, h, fps, rng):
    """Diagonal stripes marching sideways, red and near-black."""
    k, speed = rng.uniform(0.7, 1.2), rng.uniform(5, 10)  # stripe period/(2 pi) in tenths of the width; rad/s
    q = f"gt(sin((u*W/H*12+v*12)/{k:.2f}+T*{speed:.1f}),0)"
    return geq_scene(w, h, fps, r=f"30+200*{q}", g=f"10+20*{q}", b=f"20+20*{q}"), 0


def scene_static(w, h, fps, rng):
    """Purple TV static: a flat colour under heavy per-frame noise."""
    src = lavfi("color", c="0x602090", size=f"{w}x{h}", rate=fps)
    return src.filter("noise", alls=60, allf="t+u", all_seed=rng.randrange(2**31)), 0


def scene_box(w, h, fps, rng):
    """A large yellow box bouncing on navy blue."""
    bw, bh = w // 3, h // 3
    x, y = bounce(w - bw, rng.uniform(40, 80) * w / 160, rng), bounce(h - bh, rng.uniform(30, 60) * h / 120, rng)
    bg = lavfi("color", c="0x101850", size=f"{w}x{h}", rate=fps)
    return ffmpeg.overlay(bg, lavfi("color", c="0xf0d020", size=f"{bw}x{bh}", rate=fps), x=x, y=y, shortest=1), 0


def bounce(span: float, speed: float, rng: random.Random) -> str:
    """Overlay position expression (px) bouncing between 0 and span at speed px/s (triangle wave)."""
    span = max(span, 1)
    return f"abs(mod({rng.uniform(0, 2 * span):.1f}+t*{speed:.1f},{2 * span:.1f})-{span:.1f})"


SCENES = {
    "bars": scene_bars,
    "testcard": scene_testcard,
    "fractal": scene_fractal,
    "life": scene_life,
    "automaton": scene_automaton,
    "plasma": scene_plasma,
    "rings": scene_rings,
    "checker": scene_checker,
    "sunset": scene_sunset,
    "stripes": scene_stripes,
    "static": scene_static,
    "box": scene_box,
}


# ---------------------------------------------------------------- clips
def draw_scene_frames(
    scenes: Sequence[str], fps: float, seconds_per_scene: float, jitter: float, rng: random.Random
) -> list[int]:
    """Frames per scene: seconds_per_scene * fps, each scaled by a random factor in [1-jitter, 1+jitter]."""
    return [max(3, round(seconds_per_scene * fps * rng.uniform(1 - jitter, 1 + jitter))) for _ in scenes]


def scene_sequence(
    scenes: Sequence[str], scene_frames: Sequence[int], fps: float, size: tuple[int, int], rng: random.Random
):
    """The pictures of `scenes` in order, scene i `scene_frames[i]` frames long, one video stream
    (each drawn by its lavfi source from a random start, rng)."""
    w, h = size
    segments = []
    for name, n in zip(scenes, scene_frames):
        src, skip = SCENES[name](w, h, fps, rng)
        # Same size, pixel format and aspect on every segment, as concat requires.
        segments.append(
            src.trim(start_frame=skip, end_frame=skip + n)
            .setpts("PTS-STARTPTS")
            .filter("scale", w, h)
            .filter("setsar", 1)
            .filter("format", "yuv420p")
        )
    return ffmpeg.concat(*segments, v=1, a=0) if len(segments) > 1 else segments[0]


def build_clip(
    dest: Path,
    scenes: Sequence[str],
    scene_frames: Sequence[int],
    fps: float,
    size: tuple[int, int],
    rng: random.Random,
    look: random.Random,
    codec: str = "mpeg4",
    bitrate: str | None = None,
    bframes: int | None = None,
):
    """The ffmpeg-python output node of one clip (see make_clip); consumes rng and look."""
    unknown = [s for s in scenes if s not in SCENES]
    if unknown or not scenes:
        raise ValueError(f"unknown scene(s) {unknown or scenes!r}; choose from {', '.join(SCENES)}")
    w, h = size
    video = scene_sequence(scenes, scene_frames, fps, size, rng)
    # The clip's "look" (camera, lighting, sensor noise) is shared by all its scenes.
    # Small enough (+-8 degrees, noise <= 8) that a scene keeps its colour and texture class.
    video = video.filter("hue", h=round(look.uniform(-8, 8), 1), s=round(look.uniform(0.85, 1.15), 2))
    strength = look.randrange(0, 9)
    if strength:
        video = video.filter("noise", alls=strength, allf="t", all_seed=look.randrange(2**31))
    # A small grey square wandering over everything: motion that carries no class information.
    side = max(4, h // 8)
    shade = look.randrange(90, 200)
    square = lavfi("color", c=f"0x{shade:02x}{shade:02x}{shade:02x}", size=f"{side}x{side}", rate=fps)
    video = ffmpeg.overlay(
        video,
        square,
        x=bounce(w - side, rng.uniform(20, 60) * w / 160, rng),
        y=bounce(h - side, rng.uniform(15, 45) * h / 120, rng),
        shortest=1,
    )
    return output(video, dest, r=fps, **encoder_options(codec, bitrate=bitrate, bframes=bframes))


def make_clip(
    path: Path,
    scenes: Sequence[str],
    fps: float = 10,
    size: tuple[int, int] = (160, 120),
    seconds_per_scene: float = 1.0,
    seed: int | str = 0,
    codec: str = "mpeg4",
    *,
    jitter: float = 0.3,
    scene_frames: Sequence[int] | None = None,
    look_seed: int | str | None = None,
    bitrate: str | None = None,
    bframes: int | None = None,
    timeout: float = 120.0,
) -> Clip:
    """Write one clip made of `scenes` (names from SCENES), in that order, with one ffmpeg call.

    path: the video file; its extension picks the container (.avi, .mkv, .mp4, .mov, .webm).
    fps: frames/s (constant). size: (width, height) px, even numbers for yuv420p codecs.
    seconds_per_scene: mean scene length, s; each scene gets round(s * fps * U(1-jitter, 1+jitter))
    frames (at least 3); scene_frames, if given, fixes the frames of each scene instead.
    seed: picks scene lengths, start offsets and motion; look_seed (default: seed) picks hue,
    saturation and noise, so clips of one group can share a look.
    codec: an ffmpeg encoder name (mpeg4 as in UCF101, libx264, mjpeg, ffv1...); bitrate
    (e.g. "500k", bits/s) replaces the default constant quality; bframes, B-frames between
    reference frames (None: the encoder's default: none for mpeg4, up to 3 for libx264).
    Returns the Clip with its frames per scene; the file holds exactly sum(scene_frames) frames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"clip:{seed}")
    look = random.Random(f"look:{seed if look_seed is None else look_seed}")
    frames = draw_scene_frames(scenes, fps, seconds_per_scene, jitter, rng)
    if scene_frames is not None:
        if len(scene_frames) != len(scenes) or min(scene_frames) < 1:
            raise ValueError(f"scene_frames {list(scene_frames)} must give >= 1 frame to each of {len(scenes)} scenes")
        frames = list(scene_frames)
    run_ffmpeg(build_clip(path, scenes, frames, fps, size, rng, look, codec, bitrate, bframes), path, timeout)
    return Clip(path, tuple(scenes), tuple(frames), float(fps), (size[0], size[1]))


def make_clips(jobs: Iterable[dict], workers: int | None = None, reuse: bool = True) -> list[Clip | None]:
    """Run make_clip(**job) for every job, `workers` ffmpeg processes at a time (default: all cores).

    With reuse, a job whose file already exists is skipped (None in the result): files appear
    only by rename, so an existing file is a complete one. Raises the first SynthError.
    """
    jobs = list(jobs)
    todo = [j for j in jobs if not (reuse and Path(j["path"]).is_file())]
    require_ffmpeg()
    # Threads suffice: each job spends its time waiting on its own ffmpeg process.
    with ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1)) as pool:
        done = dict(zip((id(j) for j in todo), pool.map(lambda j: make_clip(**j), todo)))
    return [done.get(id(j)) for j in jobs]
