"""Decoding with ffmpeg: probe a video, choose frame indices, decode only those frames.

One video costs two short-lived processes: ffprobe (reads the header, or counts packets
when the container has no frame count) and ffmpeg, whose filter graph is
`select(the T indices) -> scale shorter side -> centre crop -> showinfo`, so every frame
is decoded but only the kept ones are scaled and copied out. Each ffmpeg runs with one
decoding thread: with one process per core that gives the most videos per second
(DESIGN.md: 237 vs 155 videos/s on 16 cores).

Failures are values, not exceptions: `decode_video` returns a `Decoded` whose `error`
says why, in words a user can act on, and the caller records it and moves on.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the argument lists
import numpy as np

INSTALL_HINT = (
    "install it with 'apt-get install ffmpeg' (Debian/Ubuntu), 'brew install ffmpeg' (macOS) "
    "or 'conda install -c conda-forge ffmpeg', or run 'make setup', which installs it"
)


class FFmpegMissing(RuntimeError):
    pass


def ffmpeg_binary(name: str = "ffmpeg") -> str:
    """Path of ffmpeg/ffprobe; FFMPEG_BINARY / FFPROBE_BINARY override the PATH lookup."""
    override = os.environ.get(f"{name.upper()}_BINARY")
    path = override or shutil.which(name)
    if not path:
        raise FFmpegMissing(f"{name} not found on PATH: {INSTALL_HINT}")
    return path


def check_ffmpeg() -> None:
    """Fail early, before any work, when ffmpeg or ffprobe is missing."""
    ffmpeg_binary("ffmpeg")
    ffmpeg_binary("ffprobe")


@functools.lru_cache(maxsize=None)
def fps_mode_args() -> tuple[str, ...]:
    """Output option that keeps exactly the selected frames (-fps_mode since ffmpeg 5.1)."""
    out = subprocess.run([ffmpeg_binary(), "-hide_banner", "-h", "full"], capture_output=True, text=True, timeout=30).stdout
    return ("-fps_mode", "passthrough") if "-fps_mode" in out else ("-vsync", "0")


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # number of video frames (from the header, or counted packets)
    fps: float  # average frame rate, frames/s
    duration: float  # seconds
    width: int
    height: int


@dataclass
class Decoded:
    """frames (k, S, S, 3) uint8 with k <= T; indices (k,) int32; timestamps (k,) float32 s."""

    frames: np.ndarray | None = None
    indices: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    num_frames: int = 0  # frames in the video
    error: str | None = None
    seconds: float = 0.0  # wall time spent in ffprobe+ffmpeg


class DecodeError(Exception):
    """One video cannot be decoded; str(e) is the reason recorded in failures.jsonl."""


def run_tool(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run ffmpeg/ffprobe with an argument list; both pipes drained; killed at timeout."""
    try:
        # capture_output reads stdout and stderr concurrently, so a chatty stderr can
        # never fill its pipe and deadlock the process.
        return subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DecodeError(f"timeout after {timeout:g} s ({what} did not finish; killed)") from None


def stderr_tail(proc: subprocess.CompletedProcess, n: int = 200) -> str:
    text = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return (text[-1] if text else "no message")[-n:]


def preflight(path: Path) -> None:
    """Cheap checks that give clearer reasons than ffprobe would."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError(f"missing: no file at {path}") from None
    except OSError as e:
        raise DecodeError(f"unreadable: {e.strerror}") from None
    if stat.S_ISREG(st.st_mode):
        if st.st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        if not os.access(path, os.R_OK):
            raise DecodeError("unreadable: permission denied")
    elif stat.S_ISDIR(st.st_mode):
        raise DecodeError("not a file: it is a directory")


def parse_rate(rate: str | None) -> float:
    try:
        num, _, den = (rate or "0/0").partition("/")
        value = float(num) / float(den or 1)
        return value if math.isfinite(value) and value > 0 else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0


def probe(path: Path, timeout: float = 60.0) -> VideoInfo:
    """Frame count, rate, duration and size of the first video stream."""
    preflight(path)
    args = [ffmpeg_binary("ffprobe"), "-v", "error", "-select_streams", "v:0", "-show_entries",
            "stream=nb_frames,avg_frame_rate,r_frame_rate,duration,width,height:format=duration,format_name",
            "-of", "json", str(path)]
    proc = run_tool(args, timeout, "ffprobe")
    if proc.returncode != 0:
        raise DecodeError(f"not a readable video: ffprobe says {stderr_tail(proc)!r}")
    info = json.loads(proc.stdout or b"{}")
    streams = info.get("streams") or []
    if not streams:
        fmt = (info.get("format") or {}).get("format_name", "unknown")
        raise DecodeError(f"no video stream (container: {fmt})")
    s, fmt = streams[0], info.get("format") or {}
    fps = parse_rate(s.get("avg_frame_rate")) or parse_rate(s.get("r_frame_rate"))
    duration = float(s.get("duration") or fmt.get("duration") or 0.0)
    frames = int(s.get("nb_frames") or 0) if str(s.get("nb_frames", "")).isdigit() else 0
    if frames <= 0:
        # Containers like Matroska/WebM carry no frame count: count packets (demux only).
        frames = count_packets(path, timeout)
    if frames <= 0:
        raise DecodeError("no decodable frames: the video stream is empty")
    return VideoInfo(frames, fps or (frames / duration if duration else 25.0), duration, int(s.get("width") or 0), int(s.get("height") or 0))


def count_packets(path: Path, timeout: float) -> int:
    args = [ffmpeg_binary("ffprobe"), "-v", "error", "-select_streams", "v:0", "-count_packets",
            "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)]
    proc = run_tool(args, timeout, "ffprobe -count_packets")
    text = proc.stdout.decode().strip().split(",")[0]
    return int(text) if text.isdigit() else 0


def count_frames(path: Path, timeout: float) -> int:
    """Frames that really decode (a full decode; used only to explain a shortfall)."""
    args = [ffmpeg_binary("ffprobe"), "-v", "error", "-select_streams", "v:0", "-count_frames",
            "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)]
    try:
        proc = run_tool(args, timeout, "ffprobe -count_frames")
    except DecodeError:
        return -1
    text = proc.stdout.decode().strip().split(",")[0]
    return int(text) if text.isdigit() else -1


# ---------------------------------------------------------------- sampling
def uniform_indices(num_frames: int, frames: int) -> np.ndarray:
    """Centres of T equal segments: (T,) int32. A video shorter than T gives all its frames.

    >>> uniform_indices(175, 4).tolist()
    [21, 65, 109, 153]
    """
    if num_frames <= frames:
        return np.arange(num_frames, dtype=np.int32)
    return np.floor((np.arange(frames) + 0.5) * num_frames / frames).astype(np.int32)


def fps_indices(num_frames: int, src_fps: float, fps: float, cap: int) -> np.ndarray:
    """Frames nearest to times 0, 1/fps, 2/fps, ... (at most `cap`): (k,) int32."""
    step = src_fps / fps
    idx = np.floor(np.arange(0, num_frames, step) + 1e-6).astype(np.int64)
    idx = np.unique(idx[idx < num_frames])[:cap]
    return idx.astype(np.int32)


def sample_indices(info: VideoInfo, frames: int, fps: float | None) -> np.ndarray:
    return fps_indices(info.frames, info.fps, fps, frames) if fps else uniform_indices(info.frames, frames)


# ---------------------------------------------------------------- decoding
def build_decode_args(path: Path, indices: np.ndarray, size: int, resize: int) -> list[str]:
    """ffmpeg argument list that emits exactly `indices`, scaled and cropped, as RGB24."""
    expr = "+".join(f"eq(n,{int(i)})" for i in indices)
    stream = ffmpeg.input(str(path), threads=1)
    stream = stream.filter("select", expr)
    # Shorter side to `resize`, the other keeping the aspect ratio (even-rounded).
    stream = stream.filter("scale", w=f"if(lte(iw,ih),{resize},-2)", h=f"if(lte(iw,ih),-2,{resize})", flags="bilinear")
    stream = stream.filter("crop", size, size).filter("showinfo")
    out = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", **{"filter_threads": 1})
    args = ffmpeg.compile(out, cmd=ffmpeg_binary())
    # -nostats/-hide_banner keep stderr to the showinfo lines we parse; the fps mode
    # stops ffmpeg from duplicating frames to fill the gaps the select leaves.
    return [args[0], "-nostdin", "-hide_banner", "-nostats", *args[1:-1], *fps_mode_args(), args[-1]]


PTS_TIME = re.compile(rb"pts_time:\s*([-0-9.e]+)")


def decode_frames(path: Path, indices: np.ndarray, size: int, resize: int, timeout: float) -> tuple[np.ndarray, np.ndarray]:
    """frames (k, size, size, 3) uint8 and timestamps (k,) float32 s, k <= len(indices)."""
    proc = run_tool(build_decode_args(path, indices, size, resize), timeout, "ffmpeg")
    if proc.returncode != 0:
        raise DecodeError(f"ffmpeg failed: {stderr_tail(proc)!r}")
    frame_bytes = size * size * 3
    k = len(proc.stdout) // frame_bytes
    frames = np.frombuffer(proc.stdout, np.uint8, count=k * frame_bytes).reshape(k, size, size, 3)
    times = np.array([float(t) for t in PTS_TIME.findall(proc.stderr)[:k]], np.float32)
    return frames, times


def decode_video(path: Path, frames: int, size: int, resize: int, fps: float | None = None, timeout: float = 60.0) -> Decoded:
    """Probe, sample and decode one video. Never raises for a bad video: see `.error`."""
    import time

    t0 = time.perf_counter()
    try:
        info = probe(Path(path), timeout)
        indices = sample_indices(info, frames, fps)
        pixels, times = decode_frames(Path(path), indices, size, resize, timeout)
        if len(pixels) < len(indices):
            real = count_frames(Path(path), timeout)
            got = f"{real}" if real >= 0 else "fewer"
            raise DecodeError(f"truncated: decoded {got} of ~{info.frames} frames (needed frame {int(indices[len(pixels)])})")
        if len(times) != len(pixels):  # no showinfo output (should not happen): use the nominal rate
            times = (indices / info.fps).astype(np.float32)
        return Decoded(pixels, indices, times, info.frames, None, time.perf_counter() - t0)
    except DecodeError as e:
        return Decoded(error=str(e), seconds=time.perf_counter() - t0)
