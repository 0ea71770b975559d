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
import math
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from pipeline.ffmpeg_tools import ffmpeg_binary, find_binary

from .common import Chunk, ClipSpec, Decoded, DecodeError, DecodeJob, VideoInfo, read_avi_header
from .ffmpeg_cli import decode_threads, decode_video_cli, probe
from .processes import DecoderProcesses
from .pyav import decode_dense_pyav, decode_video_pyav, header_info
from .pyav import versions as pyav_versions

__all__ = [
    "Chunk",
    "ClipSpec",
    "DecodeError",
    "DecodeJob",
    "Decoded",
    "DecoderProcesses",
    "VideoInfo",
    "decode_dense",
    "decode_threads",
    "decode_video",
    "decoder_processes",
    "decoder_versions",
    "expected_steps",
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


def decode_dense(
    path: Path, job: DecodeJob, next_buffer: Callable[[], np.ndarray], procs: DecoderProcesses | None = None
) -> Iterator[Chunk]:
    """Every step of a dense job (FRAMES=all) over the whole video, job.frames steps at a time,
    each chunk decoded into a buffer from next_buffer() and yielded before the next is decoded
    (pyav.decode_dense_pyav); in a decoder process of `procs` where given. Raises DecodeError
    with the reason, possibly after some chunks."""
    if job.decoder != "pyav":
        raise DecodeError(f"dense decoding (FRAMES=all) is PyAV's: DECODER={job.decoder} decodes fixed-T sets only")
    return (
        procs.decode_dense(path, job, next_buffer) if procs is not None else decode_dense_pyav(path, job, next_buffer)
    )


@functools.cache
def header_length(path: str, mtime_ns: int, size: int) -> tuple[float, float]:
    """(duration s, frame rate) the file's header says; (0, 0) for a file that opens as no video."""
    try:
        info = read_avi_header(Path(path)) or header_info(Path(path), 60.0)
    except DecodeError:
        return 0.0, 0.0
    return info.duration or (info.frames / info.fps if info.fps else 0.0), info.fps


def expected_steps(path: Path, fps: float | None, stride: int | None) -> int:
    """About how many rows a dense job gives the video (FPS=: its duration x rate; STRIDE=: its
    frames / S), from its header, without decoding: for planning shards by rows. 0 when the file
    cannot be read (its decode says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return 0
    duration, rate = header_length(str(path), st.st_mtime_ns, st.st_size)
    if fps:
        return math.ceil(duration * fps)
    return math.ceil(duration * rate / stride) if stride else 0


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
