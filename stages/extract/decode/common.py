"""What every decoder shares: the job, the result types, the checks before a file is opened, the
AVI header, and which frames to keep.

    DecodeJob                what a run decodes from each video (T, FPS=, crop, resize, filter,
                             clip, timeout, decoder): one frozen value for every decoder
    preflight(path)          missing, empty, unreadable, a directory, not a regular file: a reason at once
    DeadlineReader           a file object for PyAV whose reads give up at a deadline (pictures and sound)
    read_avi_header(path)    an AVI's frame count, rate and size from its own header (no process, no decoder)
    sample_indices(info, T)  the frame indices to keep: T segment centres, or FPS= sampling
    FramePlan                which frames to decode for those steps: the steps themselves, or
                             each step's clip of K frames (a clip model's), and how they are laid out
    scaler(interpolation)    FFmpeg's scale flags for a model's interpolation (bilinear, bicubic, ...)
    scale_filters(S, resize, interpolation)  the scale and crop filters of both decoders' graphs:
                             ResNet-50's (YUV scaled) or the libraries' way (RGB first, torchvision's rounding)
    frame_buffer(out, n, S)  the caller's (pinned) buffer, checked, or a new one

Both decoders (ffmpeg_cli.py: an ffmpeg process per video; pyav.py: in-process with PyAV, also
in decoder processes, processes.py) take a `DecodeJob`, return a `Decoded`, and report a bad
video with a `DecodeError` whose text is the reason recorded in failures.jsonl.
"""

from __future__ import annotations

import io
import math
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import DECODERS

AVI_HEADER_BYTES = 1 << 16  # the AVI header lists sit at the start of the file (UCF101's: ~8 KB)


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # number of video frames (from the header, or counted packets)
    fps: float  # average frame rate, frames/s
    duration: float  # seconds
    width: int
    height: int


@dataclass
class Decoded:
    """frames (k, S, S, 3) uint8 with k <= T; indices (k,) int32; timestamps (k,) float32 s.

    Clips (a clip model's steps): frames (k, K, S, S, 3), indices (k, K) (every frame of
    every clip), timestamps (k,) (each clip's centre frame, the step's sampling time).
    """

    frames: np.ndarray | None = None
    indices: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    num_frames: int = 0  # frames in the video
    error: str | None = None
    seconds: float = 0.0  # wall time spent on this video (probe and decode)

    def picture(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frames, indices, timestamps) of a decoded video; a failed one (error set) has none."""
        if self.frames is None or self.indices is None or self.timestamps is None:
            raise ValueError(f"the video was not decoded: {self.error}")
        return self.frames, self.indices, self.timestamps


class DecodeError(Exception):
    """One video cannot be decoded; str(e) is the reason recorded in failures.jsonl."""


def stderr_text_tail(text: str, n: int = 200) -> str:
    """The last non-blank line of a tool's message, at most n characters."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no message")[-n:]


# ---------------------------------------------------------------- before opening
READ_BYTES = 1 << 20  # what read(-1) returns at most: PyAV asks for 32 KiB at a time anyway
FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_a_regular_file(mode: int) -> str | None:
    """The reason a file of this st_mode is refused (a directory, a FIFO, a device, a socket),
    or None for a regular file. A FIFO with no writer, or a tape, blocks whoever opens or reads
    it, and a video is never one: it fails at once instead of after the timeout."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "not a file: it is a directory"
    kind = next((name for test, name in FILE_KINDS if test(mode)), "a special file")
    return f"not a regular file: it is {kind}"


def preflight(path: Path) -> None:
    """Cheap checks that give clearer reasons than a decoder would; DecodeError with the reason.

    Never opens anything but a regular file. What still can block: a stat or a read on a
    dead network mount, which no check in this process can bound.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeError(f"missing: no file at {path}") from None
    except OSError as e:
        raise DecodeError(f"unreadable: {e.strerror}") from None
    reason = not_a_regular_file(st.st_mode)
    if reason:
        raise DecodeError(reason)
    if st.st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:  # open, not os.access: ACLs, root-squashed NFS and setuid only show on a real open
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except PermissionError:
        raise DecodeError("unreadable: permission denied") from None


# ---------------------------------------------------------------- reading with a deadline
class SourceTimeout(Exception):
    """The file gave no more data before the deadline (a slow or stalled source)."""


class DeadlineReader(io.RawIOBase):
    """A read-only file object over a regular file that gives up at a deadline.

    The file is opened with O_NONBLOCK (an open that never blocks, even if the path became
    a FIFO since preflight() looked at it) and refused at once if it is not a regular file.
    read() raises SourceTimeout once `deadline` (time.monotonic()) has passed: PyAV calls it
    for every 32 KiB its demuxer wants, from av.open and from the demuxing loop, and
    re-raises the exception there. `name` is the path: libavformat uses its extension as a
    format hint.
    """

    def __init__(self, path: Path, deadline: float):
        super().__init__()
        self.name = str(path)
        self.deadline = deadline
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            reason = not_a_regular_file(os.fstat(self.fd).st_mode)
        except OSError:
            os.close(self.fd)
            raise
        if reason:
            os.close(self.fd)
            raise DecodeError(reason)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (b"" at the end of the file); SourceTimeout after the deadline."""
        if time.monotonic() > self.deadline:
            raise SourceTimeout("no data before the deadline")
        return os.read(self.fd, size if size >= 0 else READ_BYTES)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


# ---------------------------------------------------------------- the AVI header
def read_avi_header(path: Path) -> VideoInfo | None:
    """Frame count, rate, duration and size from an AVI's own header, or None when unsure.

    ffprobe's nb_frames for an AVI is the dwLength of the first video stream header
    (libavformat/avidec.c reads `strh` into st->nb_frames and never changes it), so this
    gives the frame count ffprobe (and PyAV's stream.frames) would, without starting a
    process. Anything unusual (not RIFF/AVI, no video stream, DV type 1, zero rate/scale/
    length, headers beyond the first 64 KiB, a subtitle stream disguised as video) returns
    None: the caller then probes. Never opens anything but a regular file.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            head = f.read(AVI_HEADER_BYTES)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return None
    u32 = lambda at: int.from_bytes(head[at : at + 4], "little")
    strh = None  # (scale, rate, start, length) of the first video stream
    for tag, body, end in riff_chunks(head, 12, len(head)):
        if tag == b"LIST" and head[body : body + 4] == b"movi":
            break
        if not (tag == b"LIST" and head[body : body + 4] == b"hdrl"):
            continue
        for tag2, body2, end2 in riff_chunks(head, body + 4, end):
            if tag2 != b"LIST" or head[body2 : body2 + 4] != b"strl":
                continue
            chunks = {t: b for t, b, _ in riff_chunks(head, body2 + 4, end2)}
            sh, sf = chunks.get(b"strh"), chunks.get(b"strf")
            if sh is None or sh + 36 > len(head):
                return None
            kind = head[sh : sh + 4]
            if kind in (b"iavs", b"ivas"):
                return None
            if kind != b"vids":
                continue
            if sf is None or sf + 20 > len(head) or head[sf + 16 : sf + 20] in (b"DXSB", b"DXSA"):
                return None
            width = int.from_bytes(head[sf + 4 : sf + 8], "little", signed=True)
            height = abs(int.from_bytes(head[sf + 8 : sf + 12], "little", signed=True))
            strh = (u32(sh + 20), u32(sh + 24), u32(sh + 28), u32(sh + 32), width, height)
            break
        break
    if strh is None:
        return None
    scale, rate, start, length, width, height = strh
    if not (scale and rate and length) or start * scale / rate > 3600:
        return None
    return VideoInfo(length, rate / scale, length * scale / rate, width, height)


def riff_chunks(buf: bytes, start: int, end: int):
    """(tag, body offset, body end) of each RIFF chunk in buf[start:end]; stops at a cut chunk."""
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(buf[pos + 4 : pos + 8], "little")
        if pos + 8 + size > end:
            if buf[pos : pos + 4] == b"LIST":  # a list cut by our read: its head may still hold what we need
                yield buf[pos : pos + 4], pos + 8, end
            return
        yield buf[pos : pos + 4], pos + 8, pos + 8 + size
        pos += 8 + size + (size & 1)


def counts_empty_chunks(info: VideoInfo, decoded: int, last_time: float | None) -> bool:
    """Whether a video that ran out after `decoded` of its declared info.frames frames is whole,
    its container's count including chunks that hold no frame: an AVI written from footage with
    dropped frames stores an empty chunk per missing frame, counted in its header (ffprobe's
    nb_frames) though nothing decodes from it. Such a file's last frame still sits at the declared
    end (its timestamp counts the gaps); a file cut short stops early in time as well as in count.

    last_time: the last decoded frame's timestamp (s, from the file's start); None when unknown,
    which counts as cut short.
    """
    if last_time is None or not 0 < decoded < info.frames:
        return False
    return round(last_time * info.fps) >= info.frames - 1


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


@dataclass(frozen=True)
class ClipSpec:
    """A clip model's step: K consecutive frames at the frame rate its weights were trained on."""

    length: int  # K
    frame_rate: float  # frames/s; a video's frames are taken every round(its fps / this), at least 1

    def stride(self, video_fps: float) -> int:
        """Frames between a clip's frames in a video of `video_fps` (halves round up, as floor(x + 0.5))."""
        return max(1, math.floor(video_fps / self.frame_rate + 0.5))


@dataclass(frozen=True)
class DecodeJob:
    """What a run decodes from each of its videos, the same for every video: built once from the
    family's preprocessing and the config (inputs.decode_job), handed to either decoder as it is,
    and to a decoder process as its fields in JSON (from_fields rebuilds it there).

    frames: T, the steps (the cap with fps). size: the square crop, px. resize: the shorter side
    before it, px, or the (H, W) the picture is scaled to. fps: sample at this rate instead of T
    uniform segment centres. clip: each step is the clip of K frames around it (a clip model's).
    interpolation: the resize's filter, the model's published one (a key of SCALER), after
    RGB_FIRST where the frame is scaled the libraries' way (scale_filters). timeout: seconds
    (pyav: for the whole video; ffmpeg-cli: for each process; a dense video: for each chunk).
    decoder: one of DECODERS. dense (FRAMES=all): every step of `fps` or `stride` (source frames)
    over the whole video, handed over `frames` steps at a time (DenseSteps).
    """

    frames: int
    size: int
    resize: int | tuple[int, int]
    fps: float | None = None
    clip: ClipSpec | None = None
    interpolation: str = "bilinear"
    timeout: float = 60.0
    decoder: str = DECODERS[0]
    dense: bool = False
    stride: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.resize, int):  # an (H, W) read back from JSON is a list
            object.__setattr__(self, "resize", tuple(self.resize))
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}")
        scaler(self.interpolation)  # ValueError for a filter FFmpeg lacks, before any video

    @classmethod
    def from_fields(cls, fields: dict) -> DecodeJob:
        """The job whose dataclasses.asdict() is `fields`, e.g. after a JSON round trip (a decoder
        process's request)."""
        clip = fields.get("clip")
        return cls(**(fields | {"clip": ClipSpec(**clip) if clip else None}))

    def shape(self) -> tuple[int, ...]:
        """The buffer one video's steps fill: (T, S, S, 3), or (T, K, S, S, 3) with a clip (uint8);
        a dense job's: one chunk's."""
        step = (self.clip.length,) if self.clip else ()
        return (self.frames, *step, self.size, self.size, 3)


@dataclass
class Chunk:
    """Consecutive rows of a dense video, decoded: frames (k, S, S, 3) or a clip model's
    (k, K, S, S, 3) uint8, a view of the buffer they were decoded into; indices (k,) or (k, K)
    int32; timestamps (k,) float32 s (a clip's centre frame); spans (k, 2) float32 s, [start,
    end) each row stands for, not yet cut at the video's end. The last chunk of a video (last)
    may hold no rows; it says how many frames decoded and the video's duration (their count
    over the frame rate), its rate and the time its decoding took.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    spans: np.ndarray
    last: bool = False
    num_frames: int = 0
    duration: float = 0.0
    fps: float = 0.0
    seconds: float = 0.0  # the last chunk: the video's decoding time, waits for buffers left out


class DenseSteps:
    """The steps of a dense video (FRAMES=all) as its frames are decoded, in order, without
    knowing its length: the container's count may be wrong, so the rows follow the frames.

    Step k (row k) anchors at frame floor(k * video_fps / R) with FPS=R (two rows may share a
    frame when R exceeds the video's rate), or k * S with STRIDE=S. Without a clip its frame
    is the anchor; a clip model's K frames, `ClipSpec.stride` apart, are centred on the anchor
    with FPS= (as in fixed-T sets) and start at it with STRIDE= (ActionFormer's clips), clamped
    to the video; a step exists while its anchor is a frame of the video.

    Feed every decoded frame's ordinal to `wants` (convert it only then), the converted ones
    to `add`, and call `end` at the end of the input; both return the steps completed, in
    order, as (frame indices (K,), picture per frame, time per frame, span).
    """

    def __init__(self, job: DecodeJob, video_fps: float):
        self.rate, self.stride, self.video_fps = job.fps, job.stride, video_fps
        clip = job.clip
        if clip is None:
            self.offsets = np.zeros(1, np.int64)
        elif self.stride:
            self.offsets = np.arange(clip.length) * clip.stride(video_fps)
        else:
            self.offsets = (np.arange(clip.length) - clip.length // 2) * clip.stride(video_fps)
        self.pending: list[tuple[int, np.ndarray]] = []  # (k, frames) of steps admitted, not complete
        self.next = 0  # the next step not yet admitted
        self.cache: dict[int, tuple[np.ndarray, float]] = {}  # frame -> (picture, time), while a step needs it

    def anchor(self, k: int) -> int:
        if self.rate:
            return math.floor(k * self.video_fps / self.rate + 1e-6)
        assert self.stride, "a dense job samples at a rate or a stride"
        return k * self.stride

    def span(self, k: int, frames: np.ndarray, times: list[float]) -> tuple[float, float]:
        """[start, end) s that step k stands for (not cut at the video's end)."""
        if len(self.offsets) > 1:
            return times[0], times[-1] + 1 / self.video_fps
        if self.rate:
            return k / self.rate, (k + 1) / self.rate
        assert self.stride
        start = int(frames[0])
        return start / self.video_fps, (start + self.stride) / self.video_fps

    def needs(self, m: int) -> bool:
        """Whether frame m is part of some step, changing nothing: frames may be asked in any
        order (a decoder choosing which packets it may leave undecoded)."""
        lo, hi = int(self.offsets.min()), int(self.offsets.max())
        if self.rate:
            k = max(0, math.floor((m - hi) * self.rate / self.video_fps) - 1)
        else:
            assert self.stride, "a dense job samples at a rate or a stride"
            k = max(0, (m - hi) // self.stride - 1)
        while self.anchor(k) + lo <= m:
            if bool((np.maximum(self.anchor(k) + self.offsets, 0) == m).any()):
                return True
            k += 1
        return False

    def wants(self, n: int) -> bool:
        """Whether frame n (the n-th decoded, from 0) is part of a step: admits the steps it starts."""
        while (frames := np.maximum(self.anchor(self.next) + self.offsets, 0))[0] <= n:
            self.pending.append((self.next, frames))
            self.next += 1
        return any(bool((frames == n).any()) for _, frames in self.pending)

    def add(self, n: int, picture: np.ndarray, time_s: float) -> list[tuple]:
        """Frame n, converted (its own array), at time_s: the steps it completes."""
        self.cache[n] = (picture, time_s)
        return self.complete(n)

    def complete(self, n: int) -> list[tuple]:
        done = []
        while self.pending and self.pending[0][1][-1] <= n:
            k, frames = self.pending.pop(0)
            pics = [self.cache[int(f)] for f in frames]
            times = [t for _, t in pics]
            done.append(
                (frames.astype(np.int32), [p for p, _ in pics], times[len(times) // 2], self.span(k, frames, times))
            )
        first_needed = min((int(f[0]) for _, f in self.pending), default=n + 1)
        for f in [f for f in self.cache if f < first_needed]:
            del self.cache[f]
        return done

    def end(self, last: int, last_picture: Callable[[], tuple[np.ndarray, float]] | None) -> list[tuple]:
        """The input ended after frame `last` (-1: none): the pending steps whose anchor is a
        frame, their frames past the end clamped to it (last_picture() converts it if needed)."""
        self.pending = [(k, np.minimum(f, last)) for k, f in self.pending if self.anchor(k) <= last]
        if any(int(f[-1]) == last for _, f in self.pending) and last not in self.cache:
            assert last_picture is not None, "a clip clamped to the last frame needs its picture"
            self.cache[last] = last_picture()
        return self.complete(last)


class ChunkWriter:
    """Lays completed steps out in chunk buffers of `job.frames` steps each, taken from
    next_buffer() ((>= job.frames, *step) uint8) when a chunk's first step completes."""

    def __init__(self, job: DecodeJob, next_buffer: Callable[[], np.ndarray]):
        self.size, self.next_buffer = job.frames, next_buffer
        self.step = (job.clip.length,) if job.clip else ()  # a row's frames: K for a clip, else one
        self.buffer: np.ndarray | None = None
        self.rows: list[tuple] = []

    def put(self, steps: list[tuple]) -> Iterator[Chunk]:
        """Write steps into the current chunk; yield each chunk that fills."""
        for frames, pictures, time_s, span in steps:
            if self.buffer is None:
                self.buffer = self.next_buffer()
            row = self.buffer[len(self.rows)]
            if row.ndim == 4:  # a clip: (K, S, S, 3)
                for j, picture in enumerate(pictures):
                    row[j] = picture
            else:
                row[...] = pictures[0]
            self.rows.append((frames, time_s, span))
            if len(self.rows) == self.size:
                yield self.chunk()

    def chunk(self, **end) -> Chunk:
        """The rows written so far as a Chunk; the writer starts a new one."""
        k, rows, buffer = len(self.rows), self.rows, self.buffer
        indices = np.array([f if self.step else f[0] for f, _, _ in rows], np.int32).reshape(k, *self.step)
        chunk = Chunk(
            buffer[:k] if buffer is not None else np.empty((0,), np.uint8),
            indices,
            np.array([t for _, t, _ in rows], np.float32),
            np.array([s for _, _, s in rows], np.float32).reshape(k, 2),
            **end,
        )
        self.buffer, self.rows = None, []
        return chunk


def clip_indices(steps: np.ndarray, num_frames: int, video_fps: float, clip: ClipSpec) -> np.ndarray:
    """Each step's clip: K frames `stride` apart, centred on the step (frame K // 2 is the step
    itself), clamped to the video: (T,) -> (T, K) int32.

    >>> clip_indices(np.array([1, 20]), 24, 30.0, ClipSpec(4, 15.0)).tolist()
    [[0, 0, 1, 3], [16, 18, 20, 22]]
    """
    offsets = (np.arange(clip.length) - clip.length // 2) * clip.stride(video_fps)
    return np.clip(steps[:, None] + offsets[None, :], 0, num_frames - 1).astype(np.int32)


class FramePlan:
    """The frames one video's steps need, decoded once each, and how they fill the caller's buffer.

    Without a clip, a step is its frame: `frames` are the steps, in the order decoded. With a
    clip, `frames` are the distinct frames of all the clips, increasing (what a decoder can
    select in one pass); `finish` then lays them out clip by clip, a frame that two clips
    share copied into both.
    """

    @classmethod
    def of(cls, job: DecodeJob, info: VideoInfo) -> FramePlan:
        """The plan of `job`'s steps (T uniform, or at FPS=; clips or not) in the video `info` describes."""
        return cls(sample_indices(info, job.frames, job.fps), info.frames, info.fps, job.clip)

    def __init__(self, steps: np.ndarray, num_frames: int, video_fps: float, clip: ClipSpec | None):
        self.steps, self.clip = steps, clip
        if clip is None:
            self.indices, self.frames = steps, steps
        else:
            self.indices = clip_indices(steps, num_frames, video_fps, clip)
            self.frames, self.gather = np.unique(self.indices, return_inverse=True)
            self.frames = self.frames.astype(np.int32)

    @property
    def slots(self) -> int:
        """Frames the buffer must hold: T (a frame per step) or T x K (every clip's, laid out)."""
        return self.indices.size

    def flat(self, out: np.ndarray | None) -> np.ndarray | None:
        """The caller's buffer, (>= T, S, S, 3) or (>= T, K, S, S, 3), as frames (n, S, S, 3)."""
        return out if out is None or self.clip is None else out.reshape(-1, *out.shape[2:])

    def finish(self, buffer: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """buffer[:len(frames)] holds `frames` decoded, times their timestamps (s): the steps'
        (frames, indices, timestamps) as Decoded has them (frames a view of buffer)."""
        k = len(self.steps)
        if self.clip is None:
            return buffer[:k], self.indices, times.astype(np.float32)
        length = self.clip.length
        # fancy indexing copies first, so distinct frames can be spread over the same buffer
        buffer[: self.slots] = buffer[: len(self.frames)][self.gather.reshape(-1)]
        frame_times = times[self.gather.reshape(k, length)]
        return (
            buffer[: self.slots].reshape(k, length, *buffer.shape[1:]),
            self.indices,
            frame_times[:, length // 2].astype(np.float32),
        )


# A model's published interpolation -> FFmpeg's scaler (swscale's `flags`), which the decoders
# resize with: the model's own resampling, not one filter for every model.
SCALER = {
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "nearest": "neighbor",
    "nearest-exact": "neighbor",
    "lanczos": "lanczos",
    "box": "area",
    "area": "area",
}
# The prefix of an interpolation scaled the libraries' way: the frame converted to RGB at its
# full size first, then scaled, as PIL and torchvision scale the RGB pictures a user decodes.
RGB_FIRST = "rgb24:"


def scaler(interpolation: str) -> str:
    """FFmpeg scale's `flags` for a model's interpolation, with the RGB_FIRST prefix kept where
    it has one (the scaler a set's id records); ValueError for one FFmpeg lacks."""
    prefix = RGB_FIRST if interpolation.startswith(RGB_FIRST) else ""
    try:
        return prefix + SCALER[interpolation.removeprefix(prefix)]
    except KeyError:
        raise ValueError(
            f"no FFmpeg scaler for the interpolation {interpolation!r}; one of {', '.join(SCALER)}"
        ) from None


def scale_size(resize: int | tuple[int, int]) -> tuple[str, str]:
    """FFmpeg scale's (w, h) for a resize: an int scales the shorter side to it, the other
    side keeping the aspect ratio (rounded to even); (H, W) scales to exactly that size
    (as torchvision's video transforms do, e.g. (128, 171))."""
    if isinstance(resize, int):
        return f"if(lte(iw,ih),{resize},-2)", f"if(lte(iw,ih),-2,{resize})"
    height, width = resize
    return str(width), str(height)


def library_scale_size(resize: int | tuple[int, int]) -> tuple[str, str]:
    """scale_size as torchvision's resize computes it: the longer side int(resize * long / short)
    (truncated, any parity: the picture is RGB by then), or exactly (H, W)."""
    if isinstance(resize, int):
        return f"if(lte(iw,ih),{resize},trunc({resize}*iw/ih))", f"if(lte(iw,ih),trunc({resize}*ih/iw),{resize})"
    return scale_size(resize)


# torchvision's centre crop offset, int(round((in - out) / 2)): Python's round, halves to even.
HALF_EVEN = "trunc(({i}-{o})/2)+mod(trunc(({i}-{o})/2),2)*mod({i}-{o},2)"


def scale_filters(size: int, resize: int | tuple[int, int], interpolation: str) -> list[tuple[str, dict[str, str]]]:
    """The (filter, options) that scale a decoded picture and crop its centre size x size, in
    order, for both decoders' graphs (the rgb24 output format follows them).

    ResNet-50's way (a plain interpolation): FFmpeg scales the decoded YUV picture and converts
    it to RGB in one call (scale_size's even rounding, crop offsets floored). The libraries' way
    (RGB_FIRST): the picture becomes RGB at full size, then is scaled and cropped with
    torchvision's rounding, as Resize and CenterCrop treat the PIL image a user decodes.
    """
    flags = scaler(interpolation)
    if not flags.startswith(RGB_FIRST):
        width, height = scale_size(resize)
        return [("scale", {"w": width, "h": height, "flags": flags}), ("crop", {"w": str(size), "h": str(size)})]
    width, height = library_scale_size(resize)
    return [
        ("format", {"pix_fmts": "rgb24"}),
        ("scale", {"w": width, "h": height, "flags": flags.removeprefix(RGB_FIRST)}),
        ("crop", {
            "w": str(size), "h": str(size),
            "x": HALF_EVEN.format(i="iw", o="ow"), "y": HALF_EVEN.format(i="ih", o="oh"),
        }),
    ]  # fmt: skip


def frame_buffer(out: np.ndarray | None, count: int, size: int) -> np.ndarray:
    """`out`, checked to hold `count` frames of (size, size, 3) uint8 C-contiguously, or a new
    (count, size, size, 3) uint8 array; ValueError if `out` cannot take them."""
    if out is None:
        return np.empty((count, size, size, 3), np.uint8)
    fits = out.dtype == np.uint8 and out.shape[1:] == (size, size, 3) and len(out) >= count
    if not (out.flags.c_contiguous and fits):
        raise ValueError(
            f"out must be a C-contiguous uint8 array of >= {count} x {size} x {size} x 3, got {out.dtype} {out.shape}"
        )
    return out
