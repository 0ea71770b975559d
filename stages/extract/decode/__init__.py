"""Stage one's picture decoders behind one call: probe a video, choose frame indices, decode only those frames.

    job = DecodeJob(T, S, resize, fps=..., clip=ClipSpec(K, rate), ..., decoder="pyav")
    decode_video(path, job, out=slot)   -> Decoded (frames in `out`, or a reason)

| module | what |
| --- | --- |
| common.py | what every decoder shares: the job, the result types, preflight checks, the AVI header, sampling, the frame plan |
| pyav.py | `pyav` (default): PyAV (its wheel bundles FFmpeg), one decoding thread, FFmpeg's filter graph as the CLI builds it |
| processes.py | how stage one runs `pyav` on every core: a long-lived decoder process per decoding thread |
| ffmpeg_cli.py | `ffmpeg-cli`: one ffmpeg process per video; the reference the benchmark compares with |
| sound.py | the first audio stream of a file as 16 kHz mono (audio sets) |

Both decoders give the same frame indices and timestamps, and reasons of the same kind for a
bad video; the pixels can differ by the FFmpeg build, so the decoder's name is part of the
feature-set identity. Failures are values, not exceptions: `decode_video` returns a `Decoded`
whose `error` says why, in words a user can act on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from pathlib import Path

import numpy as np

from pipeline.ffmpeg_tools import ffmpeg_binary, find_binary

from .common import ClipSpec, Decoded, DecodeError, DecodeJob, VideoInfo, read_avi_header
from .ffmpeg_cli import decode_threads, decode_video_cli, probe
from .processes import DecoderProcesses
from .pyav import decode_video_pyav
from .pyav import versions as pyav_versions

__all__ = [
    "ClipSpec",
    "DecodeError",
    "DecodeJob",
    "Decoded",
    "DecoderProcesses",
    "VideoInfo",
    "decode_threads",
    "decode_video",
    "decoder_processes",
    "decoder_versions",
    "ffmpeg_version",
    "require_decoder",
    "video_info",
]


def decode_video(
    path: Path, job: DecodeJob, out: np.ndarray | None = None, workers: int = 0, procs: DecoderProcesses | None = None
) -> Decoded:
    """Probe, sample and decode one video as `job` says, with its decoder. Never raises for a bad
    video: see `.error`.

    out: optional job.shape() (or longer) uint8 C-contiguous buffer the frames land in
    (Decoded.frames is then a view of it). workers: how many decoders run at once (0: one per
    core): ffmpeg-cli gives each process the cores left over; pyav always decodes on one
    thread, and more decoders fill the cores instead. procs: where pyav decodes (a pool of
    decoder processes, as stage one runs it); None decodes in this thread.
    """
    if job.decoder == "pyav":
        return procs.decode(path, job, out) if procs is not None else decode_video_pyav(path, job, out)
    return decode_video_cli(path, job, out, decode_threads(workers or os.cpu_count() or 1))


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
