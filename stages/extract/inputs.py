"""What the decoders hand a model family, per sampled step, written into a frame slot.

    FRAMES  decode_video: the T sampled frames, scaled and cropped as the family's
            preprocessing says, (k, S, S, 3) uint8
    CLIPS   the same decode, each step the clip of K frames centred on its frame (at the
            family's clip rate, clamped to the video), (k, K, S, S, 3) uint8
    SOUND   the sampled frames' times (the picture decode at a tiny size: its pixels are
            dropped, so step t is the same instant as in a visual set of the same sampling
            and decoder), the first audio stream (16 kHz mono), and the log-mel window
            centred on each time, (k, frames, 64) float32; a video without a sound track
            gets silence windows and has_audio 0, so an audio set lists the videos its
            visual set lists

What a run decodes from each video is one `DecodeJob`, built once by decode_job() from the
family's preprocessing and the config. Failures are values, as the decoders': a `Decoded`
whose `error` says why.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .decode import (
    Chunk,
    Decoded,
    DecodeError,
    DecodeJob,
    DecoderProcesses,
    decode_dense,
    decode_video,
    decoder_processes,
)
from .decode.sound import decode_audio
from .extractors import SOUND, Extractor
from .logmel import log_mel_examples

# The picture decode that only gives the frame times: its smallest crop (pixels are dropped).
TIMES_SIZE, TIMES_RESIZE = 32, 37


def input_processes(family: Extractor, workers: int) -> contextlib.AbstractContextManager[DecoderProcesses | None]:
    """The decoder processes a run's threads decode in: PyAV's for pictures; for sound always
    (the sound track is PyAV's in any case), None where each decode is an ffmpeg process."""
    if family.decodes != SOUND:
        return decoder_processes(family.cfg.decoder, workers)
    return DecoderProcesses(workers)


def decode_job(family: Extractor) -> DecodeJob:
    """What a run of `family` decodes from each video: its config's steps (T, FPS=), decoder and
    timeout; its preprocessing's crop, resize and filter, and its clip. A family that decodes
    sound gets the picture decode that only gives the frame times (TIMES_SIZE)."""
    cfg = family.cfg
    pre = family.preprocessing() if family.decodes != SOUND else None
    resize: int | tuple[int, int]
    if pre is None:
        assert family.decodes == SOUND, "a family that decodes pictures says how they are scaled and cropped"
        size, resize, interpolation = TIMES_SIZE, TIMES_RESIZE, "bilinear"
    else:
        size, resize, interpolation = pre.size, pre.resize, pre.scaling
    return DecodeJob(
        frames=cfg.steps, size=size, resize=resize, fps=cfg.fps, clip=family.clip(),
        interpolation=interpolation, timeout=cfg.timeout, decoder=cfg.decoder,
        dense=cfg.dense, stride=cfg.stride,
    )  # fmt: skip


def decode_items(
    family: Extractor, job: DecodeJob, path: Path, out: np.ndarray, workers: int, procs: DecoderProcesses | None
) -> tuple[Decoded, dict[str, int]]:
    """One video's items into `out` (T, *item_shape), decoded as `job` (decode_job(family))
    says: (Decoded with `frames` = out[:k], the video's flags, e.g. {"has_audio": 1}), or
    (Decoded with its error, {})."""
    if family.decodes != SOUND:  # frames or clips
        return decode_video(path, job, out=out, workers=workers, procs=procs), {}
    return decode_sound_windows(family, job, path, out, workers, procs)


def dense_items(
    family: Extractor,
    job: DecodeJob,
    path: Path,
    next_slot: Callable[[], np.ndarray],
    flags: dict[str, int],
    procs: DecoderProcesses | None,
) -> Iterator[Chunk]:
    """A dense video's items chunk by chunk (decode.decode_dense), each chunk's `frames` its items
    in a slot from next_slot() ((>= job.frames, *item_shape)). Sound: the picture times of each
    chunk (decoded into a buffer of this call's own), then the log-mel window at each; the video's
    flags (has_audio) go into `flags`. Raises DecodeError with the reason."""
    if family.decodes != SOUND:
        yield from decode_dense(path, job, next_slot, procs)
        return
    cfg = family.cfg
    # The sound track first: the picture decode holds its decoder process until the video's end.
    track = procs.decode_sound(path, cfg.timeout) if procs is not None else decode_audio(path, cfg.timeout)
    times = np.empty(job.shape(), np.uint8)  # the times decode's pixels, dropped
    for chunk in decode_dense(path, job, lambda: times, procs):
        if track.error:  # raised after the first chunk: a file that is no video fails as one, not as a sound track
            raise DecodeError(track.error)
        flags["has_audio"] = int(track.has_audio)
        k = len(chunk.timestamps)
        if k:
            items = next_slot()
            items[:k] = log_mel_examples(track.samples, chunk.timestamps, cfg.audio_window).numpy()
            chunk.frames = items[:k]
        yield chunk


def decode_sound_windows(
    family: Extractor, job: DecodeJob, path: Path, out: np.ndarray, workers: int, procs: DecoderProcesses | None
) -> tuple[Decoded, dict[str, int]]:
    """The picture times (`job`: their decode), the sound track, the log-mel window at each time (or why not)."""
    cfg = family.cfg
    t0 = time.perf_counter()
    times = decode_video(path, job, workers=workers, procs=procs)
    if times.error:
        return times, {}
    track = procs.decode_sound(path, cfg.timeout) if procs is not None else decode_audio(path, cfg.timeout)
    if track.error:
        return Decoded(error=track.error, seconds=time.perf_counter() - t0), {}
    _, indices, timestamps = times.picture()
    k = len(timestamps)
    out[:k] = log_mel_examples(track.samples, timestamps, cfg.audio_window).numpy()
    dec = Decoded(out[:k], indices, timestamps, times.num_frames, seconds=time.perf_counter() - t0)
    return dec, {"has_audio": int(track.has_audio)}
