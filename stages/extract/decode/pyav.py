"""The `pyav` decoder, stage one's default: in-process decoding with PyAV (its wheel bundles FFmpeg).

`decode_video_pyav` keeps the ffmpeg-cli decoder's contract (ffmpeg_cli.py): the same frame
count (an AVI's own header, else what ffprobe reports), the same indices, the frames that
the CLI's `select(eq(n,i)) -> scale -> crop -> rgb24` graph gives, the same timestamps, and
a failure reason of the same kind for every bad input. The same libavfilter chain runs here,
so the pixels are the CLI's byte for byte, up to the FFmpeg version: PyAV 18.1 bundles
FFmpeg 8.1, and Debian's ffmpeg 5.1 decodes a few mpeg4 blocks (and concealed damage)
slightly differently; that is why the decoder is part of the feature-set id. The CLI's
work is redone where it changes the result:

- frame n is the n-th frame that comes out of the decoder, counted over every frame, kept
  or not (select's `n`); decoding stops after the last frame kept (`-frames:v T`);
- a frame's timestamp is libavcodec's best-effort one (`guess_correct_pts`) minus the
  file's start time, in seconds: the CLI's `pts_time`, computed exactly where the CLI
  prints 6 digits. PyAV turns on AVFMT_FLAG_GENPTS, which the CLI does not, so it is
  turned off again before the first packet is read;
- decoding errors skip the packet and go on, a read error ends the input, and more than
  2/3 errors fails the video (the CLI's `-max_error_rate`), as in the CLI;
- a display matrix (phone videos) turns the frame first, as the CLI's autorotation does;
- a file whose container counts empty chunks (an AVI's dropped frames) is sampled again
  from the frames that decode, as the CLI does (common.counts_empty_chunks).

Why it is faster: no process per video (starting Debian's dynamically linked ffmpeg alone
costs more CPU than decoding a UCF101 clip), and only the T kept frames are converted.
PyAV releases the GIL inside libav's calls but takes it back several times per frame, so
threads of one process do not fill many cores (docs/bench.md): stage one runs
this function in one long-lived process per decoding thread (processes.py), and in a
thread only where no process can be started.

Time limits: only regular files are opened (preflight() refuses FIFOs, devices and sockets
at once, and the reader checks the descriptor it opened again). Every read goes through a
file object (`DeadlineReader`) that gives up once the video's deadline has passed, and the
deadline is checked again for every packet, so a slow source or a decode that outlasts the
timeout ends there. What no in-process decoder can bound is one read that hangs in the
kernel (a dead network mount): there is no process to kill.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from .common import (
    Chunk,
    ChunkWriter,
    DeadlineReader,
    Decoded,
    DecodeError,
    DecodeJob,
    DenseSteps,
    FramePlan,
    SourceTimeout,
    VideoInfo,
    counts_empty_chunks,
    frame_buffer,
    preflight,
    read_avi_header,
    scale_filters,
    stderr_text_tail,
)

MAX_ERROR_RATE = 2 / 3  # ffmpeg's -max_error_rate default: more decoding errors than this fail the run
AV_TIME_BASE = 1_000_000  # libavformat's unit for the container's start time (microseconds)


def versions() -> dict[str, str]:
    """PyAV's version and the FFmpeg libraries it bundles, for a feature set's provenance."""
    libs = {name: ".".join(map(str, v)) for name, v in av.library_versions.items()}
    return {"pyav": av.__version__, "ffmpeg": av.ffmpeg_version_info, **libs}


# ---------------------------------------------------------------- opening and probing
class Input:
    """One opened video: the container, its first video stream and the reader under it.

    Raises DecodeError with the ffmpeg-cli decoder's reasons: those of preflight() when the file
    cannot be opened, "not a readable video: ..." when libavformat rejects it (where
    ffprobe would), "no video stream (container: ...)" when it has none.
    """

    def __init__(self, path: Path, deadline: float, timeout: float):
        self.path, self.timeout = path, timeout
        try:
            self.reader = DeadlineReader(path, deadline)
        except OSError as e:
            preflight(path)  # changed since it was checked: give its reason for what it is now
            raise DecodeError(f"unreadable: {e.strerror}") from None
        try:
            self.container = self.open_container()
        except BaseException:
            self.reader.close()
            raise
        # PyAV sets AVFMT_FLAG_GENPTS on every input: av_read_frame then makes up missing
        # pts by parsing ahead. The CLI does not, and its timestamps are best-effort ones
        # from the packets as stored; without the flag, PyAV's packets are the same.
        # PyAV's stubs type `flags` as the Flags enum; at run time it is the int bit mask
        self.container.flags &= ~av.container.Flags.gen_pts.value  # type: ignore[operator]
        if not self.container.streams.video:
            fmt = self.container.format.name if self.container.format else "unknown"
            self.close()
            raise DecodeError(f"no video stream (container: {fmt})")
        self.stream = self.container.streams.video[0]  # ffprobe's v:0, and the CLI's "[0]" input of the graph

    def open_container(self) -> av.container.InputContainer:
        try:
            # scan_all_pmts: set by ffmpeg and ffprobe for every input (MPEG-TS finds all programs).
            return av.open(self.reader, "r", container_options={"scan_all_pmts": "1"})
        except SourceTimeout:
            raise DecodeError(read_timeout(self.timeout)) from None
        except av.error.PermissionError as e:
            raise DecodeError(f"unreadable: permission denied (PyAV says {libav_says(self.path, e)!r})") from None
        except (av.FFmpegError, OSError) as e:
            raise DecodeError(f"not a readable video: PyAV says {libav_says(self.path, e)!r}") from None

    def close(self) -> None:
        self.container.close()
        self.reader.close()

    def __enter__(self) -> Input:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def libav_says(path: Path, e: Exception) -> str:
    """'path: message', as ffprobe prints a file it cannot open; at most 200 characters."""
    return stderr_text_tail(f"{path}: {getattr(e, 'strerror', None) or e}")


def read_timeout(timeout: float) -> str:
    return f"timeout after {timeout:g} s (PyAV did not finish reading; stopped)"


def decode_timeout(timeout: float) -> str:
    return f"timeout after {timeout:g} s (PyAV did not finish decoding; stopped)"


def rate_of(rate: Fraction | None) -> float:
    """A stream rate as frames/s; 0.0 when unknown (0/0) or not finite, as ffmpeg_cli.parse_rate."""
    return float(rate) if rate and rate.denominator and rate > 0 else 0.0


def stream_info(src: Input, frames: int | None = None) -> VideoInfo:
    """What ffmpeg_cli.probe() gets from ffprobe, from the opened container.

    frames: the count to use instead of the container's (packets counted by the caller);
    the fallback rate, frames / duration (else 25 frames/s), is computed from it, as in probe().
    """
    s, c = src.stream, src.container
    fps = rate_of(s.average_rate) or rate_of(s.base_rate)
    stream_duration = float(s.duration * s.time_base) if s.duration is not None and s.time_base else 0.0
    duration = stream_duration or (c.duration / AV_TIME_BASE if c.duration is not None else 0.0)
    frames = max(0, s.frames or 0) if frames is None else frames
    width, height = (s.codec_context.width, s.codec_context.height) if s.codec_context else (0, 0)
    return VideoInfo(frames, fps or (frames / duration if duration else 25.0), duration, width, height)


def is_flush(packet: av.Packet) -> bool:
    """PyAV's demux() ends with an empty packet per stream that tells the decoder to drain."""
    return packet.size == 0 and packet.pts is None and packet.dts is None


def packets(src: Input, deadline: float) -> Iterator[av.Packet | None]:
    """The first video stream's packets, then None (drain the decoder).

    A read error ends the input, as in the CLI (it prints the error and treats it as the
    end of the file); a stalled read or the deadline raises DecodeError with the timeout.
    """
    demux = src.container.demux(src.stream)
    while True:
        if time.monotonic() > deadline:
            raise DecodeError(decode_timeout(src.timeout))
        try:
            packet = next(demux)
        except StopIteration:
            return
        except SourceTimeout:
            raise DecodeError(read_timeout(src.timeout)) from None
        except av.FFmpegError:
            yield None
            return
        yield None if is_flush(packet) else packet


def count_packets(src: Input, deadline: float) -> int:
    """Packets of the first video stream (demux only): ffprobe -count_packets."""
    return sum(1 for packet in packets(src, deadline) if packet is not None)


def probe_input(path: Path, deadline: float, timeout: float) -> tuple[Input, VideoInfo]:
    """The opened input and ffmpeg_cli.probe()'s VideoInfo for it.

    Where the container has no frame count (Matroska, WebM), its packets are counted in a
    first pass and the file is opened again for decoding, as probe() counts them with a
    second ffprobe.
    """
    src = Input(path, deadline, timeout)
    try:
        info = stream_info(src)
        if info.frames <= 0:
            frames = count_packets(src, deadline)
            if frames <= 0:
                raise DecodeError("no decodable frames: the video stream is empty")
            src.close()
            src = Input(path, deadline, timeout)
            info = stream_info(src, frames)
        return src, info
    except BaseException:
        src.close()
        raise


def header_info(path: Path, timeout: float) -> VideoInfo:
    """What the container says of its first video stream (count, rate, duration, size), without
    counting packets: cheap, for planning; the decode itself follows the frames. DecodeError for a
    bad file."""
    preflight(path)
    with Input(path, time.monotonic() + timeout, timeout) as src:
        return stream_info(src)


# ---------------------------------------------------------------- timestamps
class PtsGuess:
    """libavcodec's guess_correct_pts(): a decoded frame's best-effort timestamp.

    The CLI stamps every decoded frame with it (frame->best_effort_timestamp), which PyAV
    does not expose; it is the pts unless pts have gone backwards more often than dts (or
    there is no pts), then the dts. Call it once per decoded frame, kept or not, in order.
    """

    def __init__(self):
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts = self.last_dts = -(1 << 63)  # INT64_MIN, as libavcodec starts

    def __call__(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self.faulty_dts += dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


def rescale_near(a: int, b: int, c: int) -> int:
    """a * b / c rounded to the nearest integer, halves away from zero (av_rescale's AV_ROUND_NEAR_INF)."""
    q, r = divmod(abs(a) * b, c)
    q += 2 * r >= c
    return q if a >= 0 else -q


def start_offset(src: Input) -> int:
    """The container's start time in stream time-base units: the CLI subtracts it from
    every timestamp (its input ts_offset without -copyts), so a file's first frame is at ~0."""
    start, tb = src.container.start_time, src.stream.time_base
    if start is None or not tb:
        return 0
    return rescale_near(start, tb.denominator, tb.numerator * AV_TIME_BASE)


# ---------------------------------------------------------------- scale, crop, RGB
def display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The frame's 3x3 display matrix (9 int32, 16.16 fixed point), or None."""
    # PyAV's stubs type frame.side_data as a str-keyed mapping and lack av.sidedata; iterating it
    # yields SideData objects, whose bytes are the matrix (tests/extract/test_decode_pyav.py rotates clips)
    for side in frame.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:  # type: ignore[attr-defined]
            return tuple(np.frombuffer(bytes(side), dtype=np.int32)[:9].tolist())  # type: ignore[arg-type]
    return None


def c_round(x: float) -> float:
    """C's round(): halves away from zero (Python's round() goes to even)."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def rotation_of(matrix: tuple[int, ...]) -> float:
    """fftools' get_rotation(): the clockwise angle in [0, 360) degrees; NaN for a degenerate matrix."""
    a, b, c, d = (v / 65536 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale0, scale1 = math.hypot(a, c), math.hypot(b, d)
    if scale0 == 0 or scale1 == 0:
        return math.nan
    theta = -c_round(-math.degrees(math.atan2(b / scale1, a / scale0)))  # av_display_rotation_get, then -round()
    return theta - 360 * math.floor(theta / 360 + 0.9 / 360)


def autorotate_filters(matrix: tuple[int, ...] | None) -> list[tuple[str, str | None]]:
    """The filters the CLI's autorotation puts before the user's graph: (name, args) pairs."""
    if matrix is None:
        return []
    theta = rotation_of(matrix)
    if abs(theta - 90) < 1:
        return [("transpose", "cclock_flip" if matrix[3] > 0 else "clock")]
    if abs(theta - 180) < 1:
        flips: list[tuple[str, str | None]] = []
        if matrix[0] < 0:
            flips.append(("hflip", None))
        if matrix[4] < 0:
            flips.append(("vflip", None))
        return flips
    if abs(theta - 270) < 1:
        return [("transpose", "clock_flip" if matrix[3] < 0 else "cclock")]
    if abs(theta) > 1:
        return [("rotate", f"{theta:f}*PI/180")]
    if abs(theta) < 1 and matrix[4] < 0:
        return [("vflip", None)]
    return []  # NaN: a matrix that says nothing usable


class FrameConverter:
    """Decoded frame -> (size, size, 3) uint8 RGB, through the CLI's filter chain, as `job` says.

    The graph is `buffer -> [autorotation] -> scale_filters (scale: shorter side to `resize`,
    or exactly (H, W); flags: the model's scaler; crop size x size, centre) -> format=rgb24 ->
    buffersink`, with scale's own expressions, so libavfilter does the rounding and picks
    the same swscale path (YUV -> RGB and resize in one call, or RGB first) as the CLI:
    `frame.reformat()` would not give the same bytes. One graph thread. The graph is built
    for the first frame and again whenever a frame's size, pixel format, colours or
    orientation change, as the CLI reconfigures its graph.
    """

    def __init__(self, job: DecodeJob, time_base: Fraction | None):
        self.size, self.resize, self.interpolation = job.size, job.resize, job.interpolation
        self.time_base = time_base or Fraction(1, AV_TIME_BASE)
        self.key: tuple | None = None
        self.graph: av.filter.Graph | None = None

    def into(self, frame: av.VideoFrame, dst: np.ndarray) -> None:
        """Convert `frame` and copy the result into dst, a (size, size, 3) uint8 view."""
        matrix = display_matrix(frame) if frame.side_data else None
        key = (frame.width, frame.height, frame.format.name, frame.colorspace, frame.color_range, matrix)
        if key != self.key or self.graph is None:
            self.graph, self.key = self.build(frame, matrix), key
        self.graph.vpush(frame)
        # rgb24 has one plane, so to_ndarray() is a view of the graph's frame: one copy, into dst.
        np.copyto(dst, self.graph.vpull().to_ndarray())

    def build(self, frame: av.VideoFrame, matrix: tuple[int, ...] | None) -> av.filter.Graph:
        graph = av.filter.Graph()
        graph.threads = 1
        # The colour range and matrix go to the source, as the CLI passes them, so that
        # scale converts full-range (JPEG) and BT.709 input as the CLI does.
        source = graph.add(
            "buffer",
            video_size=f"{frame.width}x{frame.height}",
            pix_fmt=frame.format.name,
            time_base=str(self.time_base),
            pixel_aspect="1/1",
            colorspace=str(frame.colorspace),
            range=str(frame.color_range),
        )
        chain = [source, *(graph.add(name, args) for name, args in autorotate_filters(matrix))]
        scaled = [graph.add(name, **opts) for name, opts in scale_filters(self.size, self.resize, self.interpolation)]
        chain += [
            *scaled,
            graph.add("format", pix_fmts="rgb24"),
            graph.add("buffersink"),
        ]
        graph.link_nodes(*chain).configure()
        return graph


# ---------------------------------------------------------------- decoding
class Selection:
    """What one pass keeps: kept frames in out[:kept], their timestamps (s), and counts."""

    def __init__(self, count: int):
        self.kept = 0
        self.decoded = 0  # frames out of the decoder so far (select's n)
        self.errors = 0  # decode calls that failed (the CLI's decode_error_stat[1])
        self.last_error = ""
        self.times = np.empty(count, np.float64)
        self.timed = True  # every kept frame had a timestamp
        self.last_time: float | None = None  # the last decoded frame's timestamp (s), kept or not


def decoded_frames(
    src: Input, deadline: float, sel: Selection, before: Callable[[av.Packet | None], None] | None = None
) -> Iterator[av.VideoFrame]:
    """Every frame the decoder gives, in output order, until the input ends (drained).

    A packet the decoder rejects is counted in sel.errors and skipped, as the CLI logs it
    and goes on; EOF from a decoder already drained (an empty packet in the file) is not an error.
    before(packet): called before each packet goes to the decoder (None: the drain).
    """
    codec = src.stream.codec_context
    for packet in packets(src, deadline):
        if before is not None:
            before(packet)
        try:
            frames = codec.decode(packet)
        except av.error.EOFError:
            continue
        except av.FFmpegError as e:
            sel.errors += 1
            sel.last_error = f"{src.path}: {getattr(e, 'strerror', None) or e}"
            continue
        yield from frames
        if packet is None:
            return


def decode_selected(src: Input, indices: np.ndarray, job: DecodeJob, out: np.ndarray, deadline: float) -> Selection:
    """Decode in order, converting the frames whose ordinal is in `indices` into out[k],
    scaled and cropped as `job` says.

    indices: (n,) int32, increasing. out: (>= n, S, S, 3) uint8. Stops after the last index;
    sel.decoded is then the file's full count when the file ran out first.
    """
    codec = src.stream.codec_context
    if codec is None:
        raise DecodeError(f"ffmpeg failed: 'no decoder for this video codec ({src.stream.codec_tag or 'unknown'})'")
    codec.thread_type = "NONE"  # one thread per decoder: decoders in parallel threads fill the cores
    codec.thread_count = 1
    tb, offset = src.stream.time_base, start_offset(src)
    convert, guess = FrameConverter(job, tb), PtsGuess()
    want, sel = indices.tolist(), Selection(len(indices))
    if not want:
        return sel
    for frame in decoded_frames(src, deadline, sel):
        pts = guess(frame.pts, frame.dts)  # for every frame: its state follows the whole stream
        sel.last_time = None if pts is None or not tb else (pts - offset) * tb.numerator / tb.denominator
        if sel.decoded == want[sel.kept]:
            convert.into(frame, out[sel.kept])
            if sel.last_time is None:
                sel.timed = False
            else:
                sel.times[sel.kept] = sel.last_time
            sel.kept += 1
        sel.decoded += 1
        if sel.kept == len(want):
            break
    if sel.errors > (sel.decoded + sel.errors) * MAX_ERROR_RATE:
        raise DecodeError(f"ffmpeg failed: {stderr_text_tail(sel.last_error)!r}")
    return sel


def decode_plan(
    src: Input, job: DecodeJob, info: VideoInfo, out: np.ndarray | None, deadline: float
) -> tuple[FramePlan, np.ndarray, Selection]:
    """One pass over `src`: the plan of `job`'s steps in the video `info` describes, the frame
    buffer (a view of `out` when given) and what the pass kept into it."""
    plan = FramePlan.of(job, info)
    buffer = frame_buffer(plan.flat(out), plan.slots, job.size)
    return plan, buffer, decode_selected(src, plan.frames, job, buffer, deadline)


def decode_video_pyav(path: Path, job: DecodeJob, out: np.ndarray | None = None) -> Decoded:
    """Probe, sample and decode one video in this process as `job` says. Never raises for a bad
    video: see `.error`.

    The same contract as ffmpeg_cli.decode_video_cli: Decoded.frames (k, S, S, 3) uint8, or
    with a clip (k, K, S, S, 3), every frame decoded once (a view of `out` when given: job.shape()
    or longer, uint8, C-contiguous), indices (k,) or (k, K) int32, timestamps (k,) float32 s,
    num_frames, and an error reason of the same kind for a bad video. job.timeout: seconds for
    the whole video (open, probe and decode), after which it fails with "timeout after N s
    (...)". Uses one decoding thread.
    """
    t0 = time.perf_counter()
    timeout = job.timeout
    deadline = time.monotonic() + timeout
    path = Path(path)
    try:
        # The same checks and the same count as the CLI path: for uniform sampling, an
        # AVI's own header; otherwise the container's count, or its packets counted.
        preflight(path)
        info = read_avi_header(path) if job.fps is None else None
        if info is None:
            src, info = probe_input(path, deadline, timeout)
        else:
            src = Input(path, deadline, timeout)
        with src:
            plan, buffer, sel = decode_plan(src, job, info, out, deadline)
        if sel.kept < len(plan.frames) and counts_empty_chunks(info, sel.decoded, sel.last_time):
            # The container counts empty chunks (dropped frames): sample the frames that decode.
            info = replace(info, frames=sel.decoded)
            with Input(path, deadline, timeout) as src:
                plan, buffer, sel = decode_plan(src, job, info, out, deadline)
        if sel.kept < len(plan.frames):
            raise DecodeError(
                f"truncated: decoded {sel.decoded} of ~{info.frames} frames (needed frame {int(plan.frames[sel.kept])})"
            )
        # As the CLI path when a kept frame has no timestamp (showinfo prints NOPTS): the nominal rate.
        times = sel.times[: sel.kept] if sel.timed else plan.frames / info.fps
        pixels, indices, stamps = plan.finish(buffer, times)
        return Decoded(pixels, indices, stamps, info.frames, None, time.perf_counter() - t0)
    except DecodeError as e:
        return Decoded(error=str(e), seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------- dense videos
def frame_number(pts: int, offset: int, time_base: Fraction, fps: float) -> float:
    """The frame a timestamp (stream time-base units) falls on at `fps`, counted from the file's
    start (not rounded)."""
    return (pts - offset) * time_base.numerator / time_base.denominator * fps


def timestamp_frames(path: Path, fps: float, deadline: float, timeout: float) -> int | None:
    """The frame count N where the timestamps number the frames as a full decode counts them:
    every packet of the first video stream has a pts, and frame_number(pts), rounded (within
    0.1 of a frame), gives each of 0..N-1 once. None otherwise: a missing pts, a variable
    rate, an empty packet, or an AVI, whose pts count its chunks (dropped frames included,
    and stamped a frame late behind B-frames). A demux-only pass: nothing is decoded.
    """
    with Input(path, deadline, timeout) as src:
        fmt = src.container.format.name if src.container.format else ""
        tb, offset = src.stream.time_base, start_offset(src)
        if "avi" in fmt.split(",") or not tb or fps <= 0:
            return None
        seen = bytearray()  # seen[m]: frame m has a packet (a byte per frame: flat enough for hours)
        for packet in packets(src, deadline):
            if packet is None:  # the end (or a read error, where a full decode ends too)
                break
            if packet.pts is None or packet.size == 0:
                return None
            x = frame_number(packet.pts, offset, tb, fps)
            m = round(x)
            if m < 0 or abs(x - m) > 0.1 or (m < len(seen) and seen[m]):
                return None
            seen.extend(bytes(max(0, m + 1 - len(seen))))
            seen[m] = 1
    return len(seen) if seen and seen.count(0) == 0 else None


class NonRefSkipper:
    """Leaves the non-reference frames no step needs undecoded (libavcodec's skip_frame NONREF)
    where the timestamps number the frames (timestamp_frames), and numbers the frames that do
    come out by their timestamps, so that the skipped ones do not shift the count.

    Per packet, before it is decoded (`before`): the frame its pts names is needed by a step,
    or is the video's last frame (a clip clamped at the end, the video's count) -> DEFAULT,
    else NONREF: a reference frame is decoded all the same, a non-reference one is not. With
    `total` None (timestamps not to be trusted) every frame is decoded and counted.
    """

    def __init__(
        self,
        codec: av.codec.context.CodecContext,
        steps: DenseSteps,
        total: int | None,
        time_base: Fraction,
        offset: int,
        fps: float,
    ):
        self.codec, self.steps, self.total = codec, steps, total
        self.time_base, self.offset, self.fps = time_base, offset, fps
        self.mode: Literal["DEFAULT", "NONREF"] = "DEFAULT"
        self.last = -1  # the last frame number given

    def before(self, packet: av.Packet | None) -> None:
        mode: Literal["DEFAULT", "NONREF"] = "DEFAULT"
        if self.total is not None and packet is not None and packet.pts is not None:
            m = round(frame_number(packet.pts, self.offset, self.time_base, self.fps))
            mode = "DEFAULT" if m == self.total - 1 or self.steps.needs(m) else "NONREF"
        if mode != self.mode:
            self.codec.skip_frame = mode
            self.mode = mode

    def number(self, frame: av.VideoFrame) -> int:
        """The decoded frame's number: its timestamp's frame, or the count where not trusted.
        Raises DecodeError where a frame a step needs did not come out (a decoding error)."""
        n = self.last + 1
        if self.total is not None and frame.pts is not None:
            n = max(n, round(frame_number(frame.pts, self.offset, self.time_base, self.fps)))
            lost = next((m for m in range(self.last + 1, n) if self.steps.needs(m)), None)
            if lost is not None:
                raise DecodeError(f"frame {lost}, which a row needs, did not decode (a decoding error)")
        self.last = n
        return n


def decode_dense_pyav(
    path: Path, job: DecodeJob, next_buffer: Callable[[], np.ndarray], skip: bool = True
) -> Iterator[Chunk]:
    """Every step of a dense job (FRAMES=all) over the whole video, in chunks of job.frames steps:
    each chunk is decoded into a buffer from next_buffer() ((>= job.frames, *step) uint8,
    C-contiguous) and yielded before the next is decoded, so memory does not grow with the video.
    The last chunk (last=True, possibly empty) says how many frames decoded.

    The rows follow the frames that decode, not the container's count (DenseSteps); only the
    frames a step needs are converted, and with `skip`, non-reference frames no step needs are
    not decoded where the timestamps number the frames (NonRefSkipper): the same rows as a
    full decode's (skip=False). job.timeout: seconds for each chunk (waiting for a
    buffer not counted); the last chunk's `seconds`: the decoding time, waits left out. Raises DecodeError with the reason (no frame at all, a timeout, too
    many decoding errors), possibly after some chunks.
    """
    t0 = time.perf_counter()
    path = Path(path)
    preflight(path)
    deadline = time.monotonic() + job.timeout
    with Input(path, deadline, job.timeout) as src:
        codec = src.stream.codec_context
        if codec is None:
            raise DecodeError(f"ffmpeg failed: 'no decoder for this video codec ({src.stream.codec_tag or 'unknown'})'")
        codec.thread_type = "NONE"  # as decode_selected: decoders in parallel fill the cores
        codec.thread_count = 1
        fps = stream_info(src).fps
        tb, offset = src.stream.time_base, start_offset(src)

        def restart_clock() -> None:
            nonlocal deadline
            deadline = src.reader.deadline = time.monotonic() + job.timeout

        idle = 0.0  # seconds waiting for a buffer or for the consumer to take a chunk: not decoding

        def buffer() -> np.ndarray:
            nonlocal idle
            w0 = time.perf_counter()
            out = next_buffer()
            idle += time.perf_counter() - w0
            restart_clock()
            return out

        def handed(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
            """The chunks, the time until the consumer asks for more counted as idle."""
            nonlocal idle
            for chunk in chunks:
                w0 = time.perf_counter()
                yield chunk
                idle += time.perf_counter() - w0

        steps, writer = DenseSteps(job, fps), ChunkWriter(job, buffer)
        convert, guess, sel = FrameConverter(job, tb), PtsGuess(), Selection(0)
        total = timestamp_frames(path, fps, deadline, job.timeout) if skip and tb else None
        skipper = NonRefSkipper(codec, steps, total, tb or Fraction(1, AV_TIME_BASE), offset, fps)
        n, last = -1, None

        def picture(frame: av.VideoFrame) -> np.ndarray:
            out = np.empty((job.size, job.size, 3), np.uint8)
            convert.into(frame, out)
            return out

        # the deadline is this loop's, per chunk
        for frame in decoded_frames(src, math.inf, sel, skipper.before):
            if time.monotonic() > deadline:
                raise DecodeError(decode_timeout(job.timeout))
            n = skipper.number(frame)
            pts = guess(frame.pts, frame.dts)
            when = n / fps if pts is None or not tb else (pts - offset) * tb.numerator / tb.denominator
            last = (frame, when)
            if steps.wants(n):
                yield from handed(writer.put(steps.add(n, picture(frame), when)))
        if sel.errors > (n + 1 + sel.errors) * MAX_ERROR_RATE:
            raise DecodeError(f"ffmpeg failed: {stderr_text_tail(sel.last_error)!r}")
        if n < 0:
            raise DecodeError("no decodable frames: the video stream is empty (0 s)")
        assert last is not None, "a frame decoded"
        final = last
        yield from handed(writer.put(steps.end(n, lambda: (picture(final[0]), final[1]))))
        seconds = time.perf_counter() - t0 - idle
        yield writer.chunk(last=True, num_frames=n + 1, duration=(n + 1) / fps, fps=fps, seconds=seconds)
