"""Generated videos: every synthetic clip and dataset tree the project needs, made with ffmpeg.

The embedded sample dataset (`make features` with no DATASET), the test fixtures, the
bad-input corpus and the benchmark clips all come from here, so there is one place that
knows how to draw a scene and one place that knows each official layout.

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
import itertools
import json
import os
import random
import re
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import ffmpeg  # ffmpeg-python: builds the argument lists

INSTALL_HINT = (
    "install it with 'apt-get install ffmpeg' (Debian/Ubuntu), 'brew install ffmpeg' (macOS) "
    "or 'conda install -c conda-forge ffmpeg', or run 'make setup', which installs it"
)
CRLF = "\r\n"  # the official UCF101 list files end their lines with CRLF
# The official HMDB51 split files end each line with "<mark> " (a trailing space) and LF.
HMDB51_EOL = " \n"
MUXERS = {".avi": "avi", ".mkv": "matroska", ".mp4": "mp4", ".mov": "mov", ".webm": "webm"}
PARTIAL = ".partial"  # suffix of a clip being written; never a video extension, so no adapter lists it
SAMPLE_VERSION = 1  # bump when the sample dataset's content changes; a stale tree is regenerated


class SynthError(RuntimeError):
    """ffmpeg is missing, or could not make a clip; the message names the file and the cause."""


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
    """Path of ffmpeg (or ffprobe); FFMPEG_BINARY / FFPROBE_BINARY override the PATH lookup."""
    path = os.environ.get(f"{name.upper()}_BINARY") or shutil.which(name)
    if not path:
        raise SynthError(f"{name} not found on PATH, and the generated videos need it: {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=None)
def has_encoder(name: str) -> bool:
    """Whether this ffmpeg build has an encoder (libx264 is absent from some builds)."""
    out = subprocess.run([require_ffmpeg(), "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30).stdout
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
    return stream.output(str(partial_name(dest)), format=kw.pop("format", muxer), fflags="+bitexact", flags="+bitexact", **kw)


def lavfi(source: str, **params):
    """A lavfi source as an ffmpeg input, e.g. lavfi("testsrc2", size="160x120", rate=10)."""
    return ffmpeg.input(f"{source}=" + ":".join(f"{k}={v}" for k, v in params.items()), format="lavfi")


def encoder_options(codec: str, quality: int | None = None, bitrate: str | None = None) -> dict:
    """Encoder settings: one thread (deterministic output, and the pool already fills the cores)."""
    # MJPEG wants full-range ("j") YUV; every other encoder here takes plain 4:2:0.
    kw = {"vcodec": codec, "pix_fmt": "yuvj420p" if codec == "mjpeg" else "yuv420p", "threads": 1}
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
    src = lavfi("mandelbrot", size=f"{w}x{h}", rate=fps, maxiter=48, start_scale=round(rng.uniform(2.0, 3.5), 3), end_pts=100)
    return src, rng.randrange(0, 2 * round(fps))


def scene_life(w, h, fps, rng):
    """Conway's game of life: bright green cells and olive mould on dark green."""
    src = lavfi("life", size=f"{w}x{h}", rate=fps, seed=rng.randrange(2**31), ratio=round(rng.uniform(0.3, 0.6), 3),
                mold=10, life_color="0x40ff40", death_color="0x002000", mold_color="0x608000")
    return src, rng.randrange(0, round(fps))


def scene_automaton(w, h, fps, rng):
    """An elementary cellular automaton scrolling down, orange on black."""
    src = lavfi("cellauto", size=f"{w}x{h}", rate=fps, rule=rng.choice([30, 90, 110, 150]), seed=rng.randrange(2**31))
    src = src.filter("format", "rgb24").filter("lutrgb", r="val", g="val*0.5", b="val*0.1")
    return src, rng.randrange(0, round(fps))


def geq_scene(w, h, fps, r: str, g: str, b: str):
    """A pattern painted by geq from expressions of u = X/W, v = Y/H (0..1) and T (s).

    geq evaluates its expressions per pixel (~1 us each), so it paints at a quarter of the
    size and the segment's scale filter enlarges it: 16x cheaper, and these patterns are
    smooth or coarse enough to look the same.
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
    "bars": scene_bars, "testcard": scene_testcard, "fractal": scene_fractal, "life": scene_life,
    "automaton": scene_automaton, "plasma": scene_plasma, "rings": scene_rings, "checker": scene_checker,
    "sunset": scene_sunset, "stripes": scene_stripes, "static": scene_static, "box": scene_box,
}


# ---------------------------------------------------------------- clips
def draw_scene_frames(scenes: Sequence[str], fps: float, seconds_per_scene: float, jitter: float, rng: random.Random) -> list[int]:
    """Frames per scene: seconds_per_scene * fps, each scaled by a random factor in [1-jitter, 1+jitter]."""
    return [max(3, round(seconds_per_scene * fps * rng.uniform(1 - jitter, 1 + jitter))) for _ in scenes]


def build_clip(dest: Path, scenes: Sequence[str], scene_frames: Sequence[int], fps: float, size: tuple[int, int],
               rng: random.Random, look: random.Random, codec: str = "mpeg4", bitrate: str | None = None):
    """The ffmpeg-python output node of one clip (see make_clip); consumes rng and look."""
    unknown = [s for s in scenes if s not in SCENES]
    if unknown or not scenes:
        raise ValueError(f"unknown scene(s) {unknown or scenes!r}; choose from {', '.join(SCENES)}")
    w, h = size
    segments = []
    for name, n in zip(scenes, scene_frames):
        src, skip = SCENES[name](w, h, fps, rng)
        # Same size, pixel format and aspect on every segment, as concat requires.
        segments.append(src.trim(start_frame=skip, end_frame=skip + n).setpts("PTS-STARTPTS")
                        .filter("scale", w, h).filter("setsar", 1).filter("format", "yuv420p"))
    video = ffmpeg.concat(*segments, v=1, a=0) if len(segments) > 1 else segments[0]
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
    video = ffmpeg.overlay(video, square, x=bounce(w - side, rng.uniform(20, 60) * w / 160, rng),
                           y=bounce(h - side, rng.uniform(15, 45) * h / 120, rng), shortest=1)
    return output(video, dest, r=fps, **encoder_options(codec, bitrate=bitrate))


def make_clip(path: Path, scenes: Sequence[str], fps: float = 10, size: tuple[int, int] = (160, 120),
              seconds_per_scene: float = 1.0, seed: int | str = 0, codec: str = "mpeg4", *,
              jitter: float = 0.3, scene_frames: Sequence[int] | None = None, look_seed: int | str | None = None,
              bitrate: str | None = None, timeout: float = 120.0) -> Clip:
    """Write one clip made of `scenes` (names from SCENES), in that order, with one ffmpeg call.

    path: the video file; its extension picks the container (.avi, .mkv, .mp4, .mov, .webm).
    fps: frames/s (constant). size: (width, height) px, even numbers for yuv420p codecs.
    seconds_per_scene: mean scene length, s; each scene gets round(s * fps * U(1-jitter, 1+jitter))
    frames (at least 3); scene_frames, if given, fixes the frames of each scene instead.
    seed: picks scene lengths, start offsets and motion; look_seed (default: seed) picks hue,
    saturation and noise, so clips of one group can share a look.
    codec: an ffmpeg encoder name (mpeg4 as in UCF101, libx264, mjpeg, ffv1...); bitrate
    (e.g. "500k", bits/s) replaces the default constant quality.
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
    run_ffmpeg(build_clip(path, scenes, frames, fps, size, rng, look, codec, bitrate), path, timeout)
    return Clip(path, tuple(scenes), tuple(frames), float(fps), tuple(size))


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


# ---------------------------------------------------------------- UCF101 layout
def split_test_groups(groups: int) -> dict[int, list[int]]:
    """Test groups of the 3 splits, UCF101's rule scaled down: disjoint runs of round(groups*7/25).

    UCF101 has 25 groups: split 1 tests g01-g07, split 2 g08-g14, split 3 g15-g21, and
    g22-g25 are always trained on. groups=4 -> {1: [1], 2: [2], 3: [3]}; 6 -> {1: [1, 2], ...}.
    """
    if groups < 3:
        raise ValueError(f"groups must be >= 3 so that the 3 splits test disjoint groups, got {groups}")
    per = max(1, round(groups * 7 / 25))
    return {k: list(range(1 + (k - 1) * per, 1 + k * per)) for k in (1, 2, 3)}


def ucf101_name(cls: str, group: int, clip: int) -> str:
    """Relative path of a clip in UCF-101/: 'Class/v_Class_g01_c02.avi' (1-based group and clip)."""
    return f"{cls}/v_{cls}_g{group:02d}_c{clip:02d}.avi"


def write_text_atomic(path: Path, lines: Iterable[str], eol: str) -> None:
    """Write lines, each ended by eol, as UTF-8 bytes through a temp name and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL}")
    tmp.write_bytes("".join(line + eol for line in lines).encode("utf-8"))
    os.replace(tmp, path)


def make_ucf101_tree(root: Path, classes: Mapping[str, Sequence[str]], groups: int = 4, clips_per_group: int = 2, *,
                     fps: float = 10, size: tuple[int, int] = (160, 120), seconds_per_scene: float = 1.0,
                     seed: int | str = 0, missing: Sequence[str] = (), workers: int | None = None) -> list[str]:
    """A tree in the exact official UCF101 layout, made of clips generated from scenes.

        root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
        root/ucfTrainTestlist/classInd.txt        '1 ClassName' (1-based, classes in the given order)
        root/ucfTrainTestlist/trainlist0k.txt     'Class/v_Class_gXX_cYY.avi <1-based label>'
        root/ucfTrainTestlist/testlist0k.txt      'Class/v_Class_gXX_cYY.avi' (no label)

    All list files use CRLF line endings like the originals. classes: class name -> scene
    names of its clips (classes that share scenes in another order differ only in time).
    Split k tests the groups split_test_groups(groups)[k]. Clips of one group share their
    look (hue, noise), as a real group shares its actor and background. `missing`: relative
    paths (as in the lists) that are listed but deliberately not generated.
    Reuses clips already there (generation is deterministic). Returns every listed video id.
    """
    root = Path(root)
    bad = [c for c in classes if not re.fullmatch(r"[A-Za-z0-9]+", c)]
    if bad:
        raise ValueError(f"UCF101 class names are letters and digits only (CamelCase), got {bad!r}")
    test_groups = split_test_groups(groups)
    remove_stale_partials(root)
    names = {cls: [ucf101_name(cls, g, c) for g in range(1, groups + 1) for c in range(1, clips_per_group + 1)] for cls in classes}
    jobs = [dict(path=root / "UCF-101" / rel, scenes=list(scenes), fps=fps, size=size, seconds_per_scene=seconds_per_scene,
                 seed=f"{seed}/{rel}", look_seed=f"{seed}/{rel.rsplit('_c', 1)[0]}")
            for cls, scenes in classes.items() for rel in names[cls] if rel not in missing]
    make_clips(jobs, workers)
    lists = root / "ucfTrainTestlist"
    write_text_atomic(lists / "classInd.txt", [f"{i} {cls}" for i, cls in enumerate(classes, start=1)], CRLF)
    group_of = lambda rel: int(rel.rsplit("_g", 1)[1][:2])
    for k, tested in test_groups.items():
        train = [f"{rel} {i}" for i, cls in enumerate(classes, start=1) for rel in names[cls] if group_of(rel) not in tested]
        test = [rel for cls in classes for rel in names[cls] if group_of(rel) in tested]
        write_text_atomic(lists / f"trainlist0{k}.txt", train, CRLF)
        write_text_atomic(lists / f"testlist0{k}.txt", test, CRLF)
    return sorted(rel for cls in classes for rel in names[cls])


# ---------------------------------------------------------------- the embedded sample dataset
# Four classes differ in content; the last two share their scenes and differ only in order,
# which mean pooling cannot tell apart and a recurrent head can.
SAMPLE_CLASSES = {
    "ColorBars": ("bars", "testcard"),
    "Fractal": ("fractal", "plasma"),
    "GameOfLife": ("life", "automaton"),
    "BouncingBox": ("box", "static"),
    "SunsetFirst": ("sunset", "checker", "rings"),
    "SunsetLast": ("rings", "checker", "sunset"),
}
# 1.2 s per scene at 10 fps, jittered by +-30%, gives every clip >= 16 frames (the default T).
SAMPLE_SETTINGS = dict(groups=4, clips_per_group=2, fps=10, size=(160, 120), seconds_per_scene=1.2, seed=0)
COMPLETE = ".complete"


def make_sample_dataset(root: Path, workers: int | None = None) -> Path:
    """Generate the embedded default dataset at root (UCF101 layout, see make_ucf101_tree).

    6 classes x 4 groups x 2 clips = 48 clips of 160x120 px at 10 fps, 16-47 frames each
    (mpeg4 in AVI); 3 splits, split k tests group k (g04 is always trained on): 36 train /
    12 test. Classes: SAMPLE_CLASSES. Idempotent: a complete tree (marker `.complete`) is
    left alone, an interrupted one is finished (clips already there are kept, being
    deterministic), one of an older SAMPLE_VERSION is replaced. About 3 s on 2 cores.
    """
    root = Path(root)
    if sample_dataset_ready(root):
        return root
    if (root / COMPLETE).exists():  # an older version: its clips must not be reused
        for d in ("UCF-101", "ucfTrainTestlist"):
            shutil.rmtree(root / d, ignore_errors=True)
        (root / COMPLETE).unlink()
    videos = make_ucf101_tree(root, SAMPLE_CLASSES, workers=workers, **SAMPLE_SETTINGS)
    marker = {"version": SAMPLE_VERSION, "classes": {c: list(s) for c, s in SAMPLE_CLASSES.items()},
              "settings": SAMPLE_SETTINGS, "videos": videos}
    # Written last: its presence means every clip and list file above is in place.
    write_text_atomic(root / COMPLETE, [json.dumps(marker, indent=1)], "\n")
    return root


def sample_dataset_ready(root: Path) -> bool:
    """True when root holds a complete sample dataset of the current version (every clip present)."""
    try:
        marker = json.loads((Path(root) / COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("version") != SAMPLE_VERSION:
        return False
    return all((Path(root) / "UCF-101" / rel).is_file() for rel in marker.get("videos", []))


# ---------------------------------------------------------------- temporal order
TEMPORAL_SCENES = ("sunset", "checker", "plasma")


def order_classes(classes: int, scenes: Sequence[str] = TEMPORAL_SCENES) -> dict[str, tuple[str, ...]]:
    """The first `classes` orders of `scenes` (itertools.permutations order), named OrderABC, OrderACB, ...

    >>> order_classes(2, ("sunset", "checker", "plasma"))
    {'OrderABC': ('sunset', 'checker', 'plasma'), 'OrderACB': ('sunset', 'plasma', 'checker')}
    """
    orders = list(itertools.permutations(scenes))
    if len(set(scenes)) != len(scenes) or not 2 <= classes <= len(orders):
        raise ValueError(f"classes must be 2..{len(orders)} (orders of {len(scenes)} distinct scenes), got {classes}")
    return {"Order" + "".join("ABCDEFGH"[scenes.index(s)] for s in order): order for order in orders[:classes]}


def make_temporal_order_dataset(root: Path, classes: int = 4, clips_per_class: int = 12, layout: str = "ucf101", *,
                                scenes: Sequence[str] = TEMPORAL_SCENES, fps: float = 10, size: tuple[int, int] = (128, 96),
                                seconds_per_scene: float = 1.0, seed: int | str = 0, workers: int | None = None) -> dict[str, tuple[str, ...]]:
    """Classes that contain the SAME scenes and differ only in their order.

    Class i plays the i-th permutation of `scenes` (itertools order); it is named after the
    order, scenes[0] = A: OrderABC, OrderACB, OrderBAC, ... (classes <= len(scenes)!).
    Scene lengths are drawn per clip from the same distribution in every class, so the
    average frame of a clip says nothing about its class (mean pooling stays at chance).
    layout "ucf101": make_ucf101_tree with 6 groups (clips_per_class must be a multiple of 6);
    layout "folder": root/<Class>/<Class>_NN.avi. Returns class -> scene order.
    """
    table = order_classes(classes, scenes)
    if layout == "ucf101":
        if clips_per_class % 6:
            raise ValueError(f"clips_per_class must be a multiple of 6 (6 groups) for the ucf101 layout, got {clips_per_class}")
        make_ucf101_tree(root, table, groups=6, clips_per_group=clips_per_class // 6, fps=fps, size=size,
                         seconds_per_scene=seconds_per_scene, seed=f"order{seed}", workers=workers)
    elif layout == "folder":
        make_clips([dict(path=Path(root) / cls / f"{cls}_{i:02d}.avi", scenes=list(order), fps=fps, size=size,
                         seconds_per_scene=seconds_per_scene, seed=f"order{seed}/{cls}/{i}")
                    for cls, order in table.items() for i in range(clips_per_class)], workers)
    else:
        raise ValueError(f"layout must be 'ucf101' or 'folder', got {layout!r}")
    return table


# ---------------------------------------------------------------- HMDB51, folder, CSV
HMDB51_CLASSES = {"brush_hair": ("plasma", "rings"), "cartwheel": ("life", "stripes"), "golf": ("sunset", "box")}
# Film names in the style of the real ones, awkward characters included ("(Rad)Schlag_die_Bank!").
HMDB51_FILMS = ("April_09", "(Rad)Schlag_die_Bank!", "Aussie_Brunette", "My_Routine", "20060723sfjff")


def make_hmdb51_tree(root: Path, classes: Mapping[str, Sequence[str]] = HMDB51_CLASSES, films: int = 3, clips_per_film: int = 2, *,
                     fps: float = 10, size: tuple[int, int] = (128, 96), seconds_per_scene: float = 1.0,
                     seed: int | str = 0, workers: int | None = None) -> dict[str, dict[int, dict[str, int]]]:
    """A tree in the official HMDB51 layout.

        root/<class>/<film>_<class>_<tags>_<n>.avi        e.g. (Rad)Schlag_die_Bank!_golf_u_cm_np1_fr_med_1.avi
        root/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt
                                                          '<clip>.avi <mark> ' (1 train, 2 test, 0 unused)

    films (<= 5) per class, named from HMDB51_FILMS. Clips of one film stay on one side of
    every split, as in the original. Split k tests film k (1-based, modulo films) and
    leaves the last clip of the next film unused (0).
    Split lines end with a trailing space and LF, like the real files. Returns
    class -> split -> clip name -> mark.
    """
    root = Path(root)
    if not 1 <= films <= len(HMDB51_FILMS):
        raise ValueError(f"films must be 1..{len(HMDB51_FILMS)}, got {films}")
    names = {cls: [f"{film}_{cls}_{'fu'[n % 2]}_cm_np1_fr_med_{n}.avi" for film in HMDB51_FILMS[:films] for n in range(clips_per_film)]
             for cls in classes}
    make_clips([dict(path=root / cls / name, scenes=list(scenes), fps=fps, size=size, seconds_per_scene=seconds_per_scene,
                     seed=f"hmdb{seed}/{cls}/{name}") for cls, scenes in classes.items() for name in names[cls]], workers)
    marks: dict[str, dict[int, dict[str, int]]] = {}
    for cls in classes:
        for k in (1, 2, 3):
            test_film, unused_film = (k - 1) % films + 1, k % films + 1
            row = {}
            for i, name in enumerate(names[cls]):
                film, n = i // clips_per_film + 1, i % clips_per_film
                row[name] = 2 if film == test_film else 0 if (film == unused_film and n == clips_per_film - 1) else 1
            marks.setdefault(cls, {})[k] = row
            write_text_atomic(root / "testTrainMulti_7030_splits" / f"{cls}_test_split{k}.txt",
                              [f"{name} {mark}" for name, mark in row.items()], HMDB51_EOL)
    return marks


FOLDER_CLASSES = {"juggle": ("testcard", "rings"), "swim": ("plasma", "checker")}


def make_folder_tree(root: Path, classes: Mapping[str, Sequence[str]] = FOLDER_CLASSES, clips_per_class: int = 3, *,
                     fps: float = 10, size: tuple[int, int] = (128, 96), seed: int | str = 0, workers: int | None = None) -> list[str]:
    """root/<class>/<video>, with mixed containers as real collections have: clip_00.avi
    (mpeg4), clip_01.mp4 (mpeg4 in MP4), clip_02.mkv (mpeg4 in Matroska), then .avi again.
    Returns the relative paths, sorted."""
    exts = [".avi", ".mp4", ".mkv"]
    rels = [f"{cls}/clip_{i:02d}{exts[i] if i < 3 else '.avi'}" for cls in classes for i in range(clips_per_class)]
    make_clips([dict(path=Path(root) / rel, scenes=list(classes[rel.split('/')[0]]), fps=fps, size=size,
                     seed=f"folder{seed}/{rel}") for rel in rels], workers)
    return sorted(rels)


CSV_CLASSES = {"wave": ("bars", "static"), "clap": ("fractal", "life"), "run": ("box", "sunset")}


def make_csv_dataset(root: Path, classes: Mapping[str, Sequence[str]] = CSV_CLASSES, clips_per_class: int = 3, *,
                     with_split: bool = True, fps: float = 10, size: tuple[int, int] = (128, 96), seed: int | str = 0,
                     workers: int | None = None) -> Path:
    """root/videos/<class>_NN.avi plus root/list.csv with the header 'path,label[,split]'.

    Paths are relative to the CSV's folder; labels are class names; with_split: the last
    clip of each class is 'test', the others 'train'. Returns the path of list.csv.
    """
    root = Path(root)
    rows = [(f"videos/{cls}_{i:02d}.avi", cls, "test" if i == clips_per_class - 1 else "train")
            for cls in classes for i in range(clips_per_class)]
    make_clips([dict(path=root / rel, scenes=list(classes[cls]), fps=fps, size=size, seed=f"csv{seed}/{rel}")
                for rel, cls, _ in rows], workers)
    header, body = ("path,label,split", [",".join(r) for r in rows]) if with_split else ("path,label", [f"{r[0]},{r[1]}" for r in rows])
    write_text_atomic(root / "list.csv", [header, *body], "\n")
    return root / "list.csv"


# ---------------------------------------------------------------- bad input (issue 5)
MUST_FAIL, MUST_SUCCEED = "must fail", "must succeed"


def vfr_output_options() -> dict:
    """Keep every frame's own timestamp: -fps_mode vfr since ffmpeg 5.1, -vsync vfr before."""
    out = subprocess.run([require_ffmpeg(), "-hide_banner", "-h", "full"], capture_output=True, text=True, timeout=30).stdout
    return {"fps_mode": "vfr"} if "-fps_mode" in out else {"vsync": "vfr"}


def make_vfr_clip(path: Path, fast_after: int = 10, frames: int = 20, size: tuple[int, int] = (160, 120)) -> Path:
    """A variable-frame-rate clip (use .mkv): frames 0.1 s apart (10 fps), then 0.04 s apart (25 fps)
    from frame `fast_after` on. Matroska keeps 1 ms timestamps, so the gaps survive muxing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = fast_after * 0.1
    video = (lavfi("testsrc2", size=f"{size[0]}x{size[1]}", rate=10).trim(end_frame=frames)
             .filter("settb", "1/1000").setpts(f"if(lt(N,{fast_after}),N*0.1,{t0}+(N-{fast_after})*0.04)/TB"))
    # Without a 1 ms encoder time base the encoder would round every frame back onto the 0.1 s grid.
    run_ffmpeg(output(video, path, vcodec="mpeg4", threads=1, enc_time_base="1/1000", **vfr_output_options()), path)
    return path


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """A file with one audio stream (a 440 Hz sine, PCM) and no video stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = ffmpeg.input(f"sine=frequency=440:duration={seconds}", format="lavfi")
    run_ffmpeg(output(audio, path, acodec="pcm_s16le"), path)
    return path


def make_bad_corpus(root: Path) -> dict[str, str]:
    """The real-world bad-input corpus of issue 5, as a folder-per-class tree root/<class>/<file>.

    Classes: must_fail/, must_succeed/, and twin/ (a second same_name.avi). Returns relative
    path -> "must fail: <what it is>" or "must succeed: <what it is>"; a stage-one run over
    the tree must record each "must fail" file in failures.jsonl with its reason and store
    every "must succeed" one (short ones padded, with their true length).

    must_fail/hang.avi is a FIFO with no writer: anything that opens it blocks forever, so
    only the decode timeout ends it. Never copy this tree with shutil.copytree (the copy
    would block on the FIFO); list it, or run on it in place. Idempotent. About 2 s.
    Not here, because they need another layout or another user: make_missing_listed_tree
    (a listed file that is missing) and make_unreadable_tree (a chmod 000 file).
    """
    root = Path(root)
    fail, ok = root / "must_fail", root / "must_succeed"
    corpus: dict[str, str] = {}

    def note(rel: str, outcome: str, what: str) -> Path:
        corpus[rel] = f"{outcome}: {what}"
        return root / rel

    clips = [  # (relative path, outcome, description, make_clip arguments)
        ("must_succeed/normal.avi", MUST_SUCCEED, "an ordinary clip, 160x120, 10 fps, 30 frames",
         dict(scenes=["testcard", "plasma"], scene_frames=[15, 15])),
        ("must_succeed/one_frame.avi", MUST_SUCCEED, "a single frame (padded; length 1)", dict(scenes=["bars"], scene_frames=[1])),
        ("must_succeed/short_5_frames.avi", MUST_SUCCEED, "5 frames, shorter than T (padded; length 5)",
         dict(scenes=["fractal"], scene_frames=[5])),
        ("must_succeed/uhd_3840x2160.avi", MUST_SUCCEED, "4K, 3840x2160, 3 frames",
         dict(scenes=["testcard"], scene_frames=[3], size=(3840, 2160))),
        ("must_succeed/portrait_120x200.avi", MUST_SUCCEED, "portrait, 120x200, 20 frames",
         dict(scenes=["life"], scene_frames=[20], size=(120, 200))),
        ("must_succeed/odd_161x97.avi", MUST_SUCCEED, "odd dimensions, 161x97, 20 frames",
         dict(scenes=["rings"], scene_frames=[20], size=(161, 97))),
        ("must_succeed/it's a \"clip\" ü ñ.avi", MUST_SUCCEED, "spaces, quotes and non-ASCII in the name, 20 frames",
         dict(scenes=["checker"], scene_frames=[20])),
        ("must_succeed/same_name.avi", MUST_SUCCEED, "same file name as twin/same_name.avi (a distinct video id)",
         dict(scenes=["sunset"], scene_frames=[20])),
        ("twin/same_name.avi", MUST_SUCCEED, "same file name as must_succeed/same_name.avi (a distinct video id)",
         dict(scenes=["stripes"], scene_frames=[20])),
    ]
    jobs = [dict(path=note(rel, outcome, what), seed=f"bad/{rel}", **kw) for rel, outcome, what, kw in clips]
    # The derived files start from clips made in a scratch folder inside root (same file
    # system, so the final rename is atomic), removed at the end.
    scratch = root / ".scratch"
    derived = {"truncated": scratch / "truncated.avi", "mp4": scratch / "really.mp4"}
    mp4_codec = "libx264" if has_encoder("libx264") else "mpeg4"
    if not (fail / "truncated.avi").exists():
        jobs.append(dict(path=derived["truncated"], scenes=["testcard", "life"], scene_frames=[20, 20], seed="bad/truncated"))
    if not (ok / "really_mp4.avi").exists():
        jobs.append(dict(path=derived["mp4"], scenes=["box"], scene_frames=[20], seed="bad/mp4", codec=mp4_codec))
    make_clips(jobs)

    target = note("must_fail/truncated.avi", MUST_FAIL, "an AVI of 40 frames cut to 20% of its bytes (its header still says 40)")
    if not target.exists():
        data = derived["truncated"].read_bytes()
        write_bytes_atomic(target, data[: len(data) // 5])
    target = note("must_succeed/really_mp4.avi", MUST_SUCCEED, f"an MP4 ({'H.264' if mp4_codec == 'libx264' else 'MPEG-4'}) file named .avi")
    if not target.exists():
        os.replace(derived["mp4"], target)
    shutil.rmtree(scratch, ignore_errors=True)

    target = note("must_fail/empty.avi", MUST_FAIL, "empty file (0 bytes)")
    if not target.exists():
        write_bytes_atomic(target, b"")
    target = note("must_fail/not_a_video.avi", MUST_FAIL, "a text file renamed .avi")
    if not target.exists():
        write_bytes_atomic(target, b"This is a plain text file that someone renamed to .avi.\n" * 20)
    target = note("must_fail/audio_only.avi", MUST_FAIL, "audio only (1 s sine, PCM in AVI): no video stream")
    if not target.exists():
        make_audio_only(target)
    target = note("must_succeed/vfr.mkv", MUST_SUCCEED, "variable frame rate (Matroska; 10 frames 0.1 s apart, then 10 frames 0.04 s apart)")
    if not target.exists():
        make_vfr_clip(target)
    target = note("must_fail/hang.avi", MUST_FAIL, "a FIFO with no writer: a decoder that opens it blocks forever (only the timeout ends it)")
    if not os.path.lexists(target):
        os.mkfifo(target)
    return dict(sorted(corpus.items()))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def make_missing_listed_tree(root: Path, workers: int | None = None) -> str:
    """A small UCF101-layout tree (2 classes x 3 groups x 1 clip) whose lists name a clip that is not there.

    The missing clip is in group 2, so trainlist01.txt, testlist02.txt and trainlist03.txt
    name it. Returns its relative path, as listed: 'Beta/v_Beta_g02_c01.avi'.
    """
    missing = ucf101_name("Beta", 2, 1)
    make_ucf101_tree(root, {"Alpha": ("bars", "plasma"), "Beta": ("life", "sunset")}, groups=3, clips_per_group=1,
                     seed="missing", missing=[missing], workers=workers)
    return missing


def make_unreadable_tree(root: Path) -> Path:
    """A folder tree root/readable/ok.avi + root/unreadable/locked.avi, the latter chmod 000.

    Returns the path of locked.avi. root bypasses file permissions (CAP_DAC_OVERRIDE), and
    CI runs as root, so there the file reads fine: to exercise the failure, run stage one as
    an unprivileged user, e.g. subprocess.run(args, user=65534, group=65534) as root. For
    that, every directory from / down to root must be traversable by that user (pytest's
    own tmp dirs are mode 0700: use a tempfile.mkdtemp() chmodded 0755), and the store it
    writes to must be writable by it. This function makes root and its folders 0755.
    """
    root = Path(root)
    ok, locked = root / "readable" / "ok.avi", root / "unreadable" / "locked.avi"
    make_clips([dict(path=ok, scenes=["bars", "life"], seed="unreadable/ok"),
                dict(path=locked, scenes=["plasma", "box"], seed="unreadable/locked")])
    for d in (root, ok.parent, locked.parent):
        d.chmod(0o755)
    ok.chmod(0o644)
    locked.chmod(0o000)
    return locked


# ---------------------------------------------------------------- benchmark clips
# Not life, automaton or static: pixel-level randomness needs 2-3x UCF101's bitrate, so
# those clips would cost more to decode than real ones do.
BENCH_SCENES = ("testcard", "fractal", "plasma", "rings", "checker", "sunset", "stripes", "box", "bars")


def make_bench_clips(dir: Path, count: int, seconds: float = 7.0, *, size: tuple[int, int] = (320, 240), fps: float = 25,
                     bitrate: str = "540k", workers: int | None = None) -> list[Path]:
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
    jobs = []
    for i in range(count):
        rng = random.Random(f"bench:{i}")
        cuts = sorted(rng.sample(range(1, total), 2))
        jobs.append(dict(path=dir / f"bench_{i:04d}.avi", scenes=rng.sample(BENCH_SCENES, 3), fps=fps, size=size,
                         scene_frames=[cuts[0], cuts[1] - cuts[0], total - cuts[1]], seed=f"bench/{i}", bitrate=bitrate))
    make_clips(jobs, workers)
    return [j["path"] for j in jobs]
