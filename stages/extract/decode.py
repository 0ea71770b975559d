"""Stage one's decoders behind one call: probe a video, choose frame indices, decode only those frames.

    decode_video(path, T, S, resize, decoder="pyav", out=slot)  -> Decoded (frames in `out`, or a reason)
    decode_video(..., clip=ClipSpec(K, rate))                    -> each step's clip of K frames

| name | module | what |
| --- | --- | --- |
| `pyav` (default) | decode_pyav.py | PyAV (its wheel bundles FFmpeg), one decoding thread; stage one runs it in a long-lived process per decoder (decode_procs.py) |
| `ffmpeg-cli` | decode_ffmpeg_cli.py | one ffmpeg process per video; the reference the benchmark compares with |

Both give the same frame indices and timestamps, and reasons of the same kind for a bad
video; the pixels can differ by the FFmpeg build, so the decoder's name is part of the
feature-set identity. What they share (preflight checks, the AVI header, sampling, the
result types) is in decode_common.py. Failures are values, not exceptions: `decode_video` returns
a `Decoded` whose `error` says why, in words a user can act on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from pathlib import Path

import numpy as np

from pipeline.ffmpeg_tools import ffmpeg_binary, find_binary

from .config import DECODERS
from .decode_common import ClipSpec, Decoded, VideoInfo, read_avi_header
from .decode_ffmpeg_cli import decode_threads, decode_video_cli, probe
from .decode_procs import DecoderProcesses
from .decode_pyav import decode_video_pyav
from .decode_pyav import versions as pyav_versions

DEFAULT_DECODER = DECODERS[0]


def decode_video(
    path: Path,
    frames: int,
    size: int,
    resize: int | tuple[int, int],
    fps: float | None = None,
    timeout: float = 60.0,
    out: np.ndarray | None = None,
    decoder: str = DEFAULT_DECODER,
    workers: int = 0,
    procs: DecoderProcesses | None = None,
    clip: ClipSpec | None = None,
    interpolation: str = "bilinear",
) -> Decoded:
    """Probe, sample and decode one video with `decoder`. Never raises for a bad video: see `.error`.

    frames: T (the cap with fps); size: the square crop, px; resize: the shorter side before
    it, px, or the (H, W) it is scaled to; fps: sample at this rate instead of T uniform
    segment centres; clip: each step is the clip of K frames around it (a clip model's:
    Decoded's clip shapes, `out` (>= T, K, size, size, 3)); interpolation: the resize's filter,
    the model's published one (decode_common.SCALER); timeout: seconds
    (pyav: for the whole video; ffmpeg-cli: for each process). out: optional (>= T, size,
    size, 3) uint8 C-contiguous buffer the frames land in (Decoded.frames is then a view of
    it). workers: how many decoders run at once (0: one per core): ffmpeg-cli gives each
    process the cores left over; pyav always decodes on one thread, and more decoders fill
    the cores instead. procs: where pyav decodes (a pool of decoder processes, as stage one
    runs it); None decodes in this thread.
    """
    if decoder == "pyav":
        run = procs.decode if procs is not None else decode_video_pyav
        return run(path, frames, size, resize, fps, timeout, out, clip, interpolation)
    if decoder == "ffmpeg-cli":
        return decode_video_cli(
            path, frames, size, resize, fps, timeout, out, decode_threads(workers or os.cpu_count() or 1), clip,
            interpolation,
        )  # fmt: skip
    raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")


def video_info(path: Path) -> VideoInfo:
    """Frame count, rate, duration and size of the first video stream: the AVI header where
    there is one (no process), else ffprobe's answer. Raises DecodeError for a bad file."""
    return read_avi_header(path) or probe(path)


def decoder_processes(decoder: str, workers: int) -> contextlib.AbstractContextManager[DecoderProcesses | None]:
    """The pool of decoder processes stage one's `workers` decode threads share (pyav), or
    nothing to manage (ffmpeg-cli starts a process per video itself)."""
    return DecoderProcesses(workers) if decoder == "pyav" else contextlib.nullcontext()


def require_decoder(decoder: str) -> None:
    """Fail before any work, with the install hint, where `decoder` needs an ffmpeg binary and
    there is none (FFmpegMissing); PyAV brings its own FFmpeg."""
    if decoder == "ffmpeg-cli":
        ffmpeg_binary()


def decoder_versions(decoder: str) -> dict[str, str]:
    """The libraries behind `decoder`, for a feature set's provenance (its manifest's config)
    and the benchmark: PyAV and its bundled FFmpeg, or the ffmpeg binary's version line."""
    if decoder == "pyav":
        return pyav_versions()
    return {"ffmpeg": ffmpeg_version(find_binary("ffmpeg") or "")}


@functools.cache
def ffmpeg_version(binary: str) -> str:
    """'ffmpeg version 5.1.9-0+deb12u1' (the first three words of `ffmpeg -version`), or 'unknown'."""
    try:
        line = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return " ".join(line.split()[:3]) or "unknown"
