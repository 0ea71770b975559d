"""Decoding a video's sound track with PyAV: 16 kHz mono float32, on the pictures' clock.

`decode_audio(path, timeout)` reads the first audio stream of any container PyAV's
FFmpeg opens (MP3 in AVI, AAC in MP4, Vorbis or Opus in Matroska/WebM, PCM, ...), at any
sample rate and channel count, and returns an `AudioTrack`. Failures are values, as in
stages/extract/decode/: `.error` says why, prefixed "audio: ", in words a user can act on.

- No audio stream (or one with no packets): `has_audio` False, no error, no samples.
  Such a video is stored with silence features and the flag, never failed.
- An audio stream that cannot be decoded (no decoder, garbled packets): an error.
  A few damaged packets are tolerated, as the ffmpeg command line tolerates them: each
  lost frame becomes silence at its own place in time, so later sound stays aligned.
- Not a regular file (a FIFO, a socket, a device): an error at once, nothing opened,
  because a read of such a file can block forever.
- A read or a decode that runs past `timeout`: an error at the timeout. Every read goes
  through common.DeadlineReader (the file opened by us, non-blocking, handed to av.open), and
  the decode loop checks the same deadline per packet; the whole decode runs on a
  thread of its own, so even a read the kernel never returns (a dead network mount)
  costs the caller no more than the timeout.

The clock: `samples[i]` is the sound at `i / 16000` s after the container's start
time. The ffmpeg command line subtracts the same start time from every input
timestamp, so these are the times stage one stores for the sampled frames, and step t
of the audio features can be centred on the timestamp of step t of the pictures.
Downmixing is the mean of the channels, as VGGish's reference front end does (the
resampler's own stereo-to-mono matrix would add 3 dB).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from . import common
from .common import DeadlineReader, DecodeError, SourceTimeout

SAMPLE_RATE = 16000  # Hz: VGGish's rate, and plenty for 64 mel bands up to 7.5 kHz
# A few lost frames are a glitch the ffmpeg command line would also skip; more than this
# share of damaged packets means the stream does not hold the sound it claims.
MAX_BAD_PACKET_SHARE = 0.1
# A timestamp this far past the sound decoded so far is not trusted (a corrupt pts would
# otherwise allocate hours of silence); such a frame is appended where the last one ended.
MAX_GAP_S = 10.0
# The decode thread reports its own timeout at the deadline; the caller waits this much
# longer for that report before it gives up on the thread (a read the kernel never returns).
ABANDON_GRACE_S = 0.5


@dataclass
class AudioTrack:
    """One video's sound: samples (n,) float32 mono at SAMPLE_RATE Hz, on the container's clock.

    has_audio: the file has an audio stream with packets. error: why the sound could not be
    had (then samples is empty and has_audio False: the video is a failure). duration_s:
    len(samples) / SAMPLE_RATE. codec, source_rate, source_channels: the stream as stored.
    seconds: wall time of the decode.
    """

    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    has_audio: bool = False
    error: str | None = None
    duration_s: float = 0.0
    codec: str | None = None
    source_rate: int = 0
    source_channels: int = 0
    seconds: float = 0.0


class AudioDecodeError(Exception):
    """Why a sound track cannot be had (the text after "audio: " in the failures log)."""


def preflight(path: Path) -> None:
    """The pictures' checks (common.preflight): missing, empty, unreadable, not a regular file."""
    try:
        common.preflight(path)
    except DecodeError as e:
        raise AudioDecodeError(str(e)) from None


# ---------------------------------------------------------------- decoding
# Full scale of each sample format (planar or packed), to bring every decoder's output to [-1, 1].
FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2.0**31, "s64": 2.0**63, "flt": 1.0, "dbl": 1.0}
RESAMPLE_CHUNK_S = 10.0  # seconds handed to the resampler at a time: bounded copies for long sound tracks


def frame_channels(frame: av.AudioFrame) -> np.ndarray:
    """(channels, n) array of the frame's samples in its own dtype (int16, float32, ...)."""
    x = frame.to_ndarray()
    # Planar frames come as (channels, n); packed ones as (1, n * channels), interleaved.
    channels = frame.layout.nb_channels
    return x.reshape(channels, -1) if frame.format.is_planar else x.reshape(-1, channels).T


class Run:
    """Consecutive frames of one rate, channel count and sample format, each placed at its own time.

    A frame lost to a damaged packet leaves silence in its place instead of pulling later
    sound forward; a timestamp more than MAX_GAP_S past the end is not trusted (a corrupt
    pts would otherwise allocate hours of silence): that frame is appended at the end.
    Frames are kept as decoded and converted once, in `mono()`: per-frame numpy calls
    cost more than the MP3 decoder itself.
    """

    def __init__(self, key: tuple[int, int, str], start_s: float):
        self.key, self.start_s = key, start_s
        self.rate, self.channels, self.format = key
        self.chunks: list[tuple[int, np.ndarray]] = []
        self.end = 0  # samples at self.rate

    def add(self, time_s: float | None, samples: np.ndarray) -> None:
        at = self.end if time_s is None else round((time_s - self.start_s) * self.rate)
        if at - self.end > MAX_GAP_S * self.rate:
            at = self.end
        self.chunks.append((at, samples))
        self.end = max(self.end, at + samples.shape[1])

    def mono(self) -> np.ndarray:
        """(n,) float32 in [-1, 1] at self.rate from start_s: the mean of the channels, silence in the gaps."""
        out = np.zeros((self.channels, self.end), np.float32)
        offset = 128.0 if self.format == "u8" else 0.0  # unsigned 8-bit: silence is 128
        for stamped, chunk in self.chunks:
            at, x = (0, chunk[:, -stamped:]) if stamped < 0 else (stamped, chunk)  # < 0: before the run's first frame
            out[:, at : at + x.shape[1]] = x - offset if offset else x
        return out.mean(axis=0) / np.float32(FULL_SCALE[self.format])


def resample(mono: np.ndarray, rate: int) -> np.ndarray:
    """(n,) float32 at `rate` -> (m,) float32 at SAMPLE_RATE, with one av.AudioResampler (libswresample).

    Mono and in few large calls: the resampler's cost is per channel and per call, so
    downmixing first and resampling whole runs is ~4x cheaper than resampling each frame.
    """
    if rate == SAMPLE_RATE or len(mono) == 0:
        return mono
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=SAMPLE_RATE)
    out = []
    step = int(RESAMPLE_CHUNK_S * rate)
    for i in range(0, len(mono), step):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono[None, i : i + step]), format="fltp", layout="mono")
        frame.sample_rate = rate
        out += [o.to_ndarray()[0] for o in resampler.resample(frame)]
    out += [o.to_ndarray()[0] for o in resampler.resample(None)]  # the resampler's delay line
    return np.concatenate(out).astype(np.float32, copy=False)


class MonoAssembler:
    """Decoded frames -> one (n,) float32 array at SAMPLE_RATE on the container's clock.

    origin_s: the container's start time; sound at time t lands at (t - origin_s) * 16000,
    so a track that starts late gets leading silence and one stamped earlier loses the
    part before the start. A change of rate, channels or sample format midway (it happens
    with AAC) starts a new run instead of an error.
    """

    def __init__(self, origin_s: float):
        self.origin_s = origin_s
        self.runs: list[Run] = []

    def add(self, frame: av.AudioFrame) -> None:
        key = (frame.sample_rate, frame.layout.nb_channels, frame.format.name.removesuffix("p"))
        run, t = (self.runs[-1] if self.runs else None), frame.time
        if run is None or run.key != key:
            start = t if t is not None else (run.start_s + run.end / run.rate if run else self.origin_s)
            run = Run(key, start)
            self.runs.append(run)
        run.add(t, frame_channels(frame))

    def samples(self) -> np.ndarray:
        pieces = [
            (round((run.start_s - self.origin_s) * SAMPLE_RATE), resample(run.mono(), run.rate)) for run in self.runs
        ]
        out = np.zeros(max([0] + [at + len(y) for at, y in pieces]), np.float32)
        for stamped, piece in pieces:
            at, y = (0, piece[-stamped:]) if stamped < 0 else (stamped, piece)
            out[at : at + len(y)] = y
        return out


def decode_stream(container: av.container.InputContainer, deadline: float, timeout: float) -> AudioTrack:
    """Decode the first audio stream of an open container (see the module docstring)."""
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    if ctx is None:
        raise AudioDecodeError("not decodable: FFmpeg has no decoder for this audio stream's codec")
    sink = MonoAssembler((container.start_time or 0) / 1e6)  # microseconds (AV_TIME_BASE)
    packets = bad = 0
    first_error = None
    for packet in container.demux(stream):
        if time.monotonic() > deadline:
            raise AudioDecodeError(f"timeout after {timeout:g} s (decoding did not finish)")
        packets += packet.size > 0  # the last packet is an empty one that flushes the decoder
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:  # a damaged packet: counted, its time left silent
            bad += 1
            first_error = first_error or e
            continue
        for frame in frames:
            sink.add(frame)
    if packets == 0:
        return AudioTrack(
            has_audio=False, codec=ctx.name, source_rate=ctx.sample_rate, source_channels=ctx.layout.nb_channels
        )
    if bad and (bad > MAX_BAD_PACKET_SHARE * packets or not sink.runs):
        raise AudioDecodeError(
            f"not decodable: the {ctx.name} decoder failed on {bad} of {packets} packets ({error_text(first_error)})"
        )
    samples = sink.samples()
    return AudioTrack(
        samples, True, None, len(samples) / SAMPLE_RATE, ctx.name, ctx.sample_rate, ctx.layout.nb_channels
    )


def error_text(e: BaseException | None) -> str:
    """FFmpeg's words for an error, without PyAV's errno and function-name decoration."""
    if e is None:
        return "no error recorded"
    strerror = getattr(e, "strerror", None)
    return strerror or str(e) or type(e).__name__


def decode_file(path: Path, deadline: float, timeout: float) -> AudioTrack:
    """Open path ourselves (non-blocking, deadline-checked reads) and decode its sound."""
    try:
        with DeadlineReader(path, deadline) as raw, av.open(raw, "r") as container:
            if not container.streams.audio:
                return AudioTrack(has_audio=False)
            return decode_stream(container, deadline, timeout)
    except AudioDecodeError:
        raise
    except DecodeError as e:  # the path became something other than a regular file since preflight
        raise AudioDecodeError(str(e)) from None
    except SourceTimeout:
        raise AudioDecodeError(f"timeout after {timeout:g} s (reading the file did not finish)") from None
    except PermissionError:
        raise AudioDecodeError("unreadable: permission denied") from None
    except av.error.FFmpegError as e:  # av.open could not make sense of the file
        raise AudioDecodeError(f"not a readable file: FFmpeg says {error_text(e)!r}") from None
    except OSError as e:
        raise AudioDecodeError(f"unreadable: {e.strerror or e}") from None


def decode_audio(path: str | Path, timeout: float = 60.0) -> AudioTrack:
    """The first audio stream of `path` as 16 kHz mono float32. Never raises for a bad file: see `.error`.

    timeout: seconds for the whole decode; past it the result is an error that says so.
    """
    t0 = time.perf_counter()
    path = Path(path)
    try:
        preflight(path)
    except AudioDecodeError as e:
        return failed(str(e), t0)
    deadline = time.monotonic() + timeout
    box: dict[str, AudioTrack] = {}
    # A daemon thread of its own: if a read blocks inside the kernel, the caller still
    # gets its answer at the timeout, and the thread ends whenever that read returns.
    worker = threading.Thread(
        target=lambda: box.setdefault("track", guarded(path, deadline, timeout)), name="audio-decode", daemon=True
    )
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()) + ABANDON_GRACE_S)
    if "track" not in box:
        return failed(f"timeout after {timeout:g} s (a read of the file did not return; abandoned)", t0)
    track = box["track"]
    track.seconds = time.perf_counter() - t0
    return track


def guarded(path: Path, deadline: float, timeout: float) -> AudioTrack:
    """decode_file with every failure turned into an AudioTrack whose error says why."""
    try:
        return decode_file(path, deadline, timeout)
    except AudioDecodeError as e:
        return AudioTrack(error=f"audio: {e}")
    except Exception as e:  # an unexpected PyAV error must fail one video, not the run
        return AudioTrack(error=f"audio: not decodable: {type(e).__name__}: {e}")


def failed(reason: str, t0: float) -> AudioTrack:
    return AudioTrack(error=f"audio: {reason}", seconds=time.perf_counter() - t0)
