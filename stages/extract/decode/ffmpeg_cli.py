"""The `ffmpeg-cli` decoder: an ffmpeg process per video (DECODER=ffmpeg-cli; the default is PyAV).

One video costs one short-lived ffmpeg process, whose filter graph is `select(the T
indices) -> scale shorter side -> centre crop (common.scale_filters) -> showinfo`, so frames are
decoded up to the last one kept (`-frames:v T` stops it there) but only the kept ones are
scaled and copied out, straight into the caller's buffer (`out=`, pinned memory in stage
one) with `readinto`. The frame count comes from the AVI header when that gives exactly
what ffprobe would say (UCF101 and HMDB51 are AVI): a second process per video (ffprobe)
costs about as much as the decode itself. Other files are probed with ffprobe, or, where
only an ffmpeg binary exists (imageio-ffmpeg ships no ffprobe), with ffmpeg itself.
Each ffmpeg runs with one decoding thread when there are as many decoders as cores: that
gives the most videos per second on a many-core machine (docs/bench.md).

This is the reference the benchmark compares the in-process decoder with, and what a
feature set made before PyAV became the default was computed with. Every call has a time
limit and is killed when it runs over.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import av
import ffmpeg  # ffmpeg-python: builds the argument lists
import numpy as np

from pipeline.ffmpeg_tools import ffmpeg_binary, find_binary

from .common import (
    Decoded,
    DecodeError,
    DecodeJob,
    FramePlan,
    VideoInfo,
    counts_empty_chunks,
    frame_buffer,
    preflight,
    read_avi_header,
    scale_filters,
    stderr_text_tail,
)

PIPE_BYTES = 1 << 20  # ffmpeg's stdout pipe: 1 MiB (Linux max for a user) means a few reads per video


@functools.cache
def fps_mode_args_of(binary: str) -> tuple[str, ...]:
    """Output option that keeps exactly the selected frames (-fps_mode since ffmpeg 5.1)."""
    out = subprocess.run([binary, "-hide_banner", "-h", "full"], capture_output=True, text=True, timeout=30).stdout
    return ("-fps_mode", "passthrough") if "-fps_mode" in out else ("-vsync", "0")


@functools.cache
def showinfo_has_checksum(binary: str) -> bool:
    """Whether this ffmpeg's showinfo filter can skip its checksums (an option since ffmpeg 5.0)."""
    out = subprocess.run(
        [binary, "-hide_banner", "-h", "filter=showinfo"], capture_output=True, text=True, timeout=30
    ).stdout
    return "checksum" in out


def decode_threads(workers: int) -> int:
    """ffmpeg threads per decoder: 1 when decoders fill the cores (fastest in aggregate, see
    the module docstring), else the cores left to each, so fewer decoders still use the machine."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_tool(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    """Run ffmpeg/ffprobe with an argument list; both pipes drained; killed at timeout."""
    try:
        # capture_output reads stdout and stderr concurrently, so a chatty stderr can
        # never fill its pipe and deadlock the process.
        return subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DecodeError(f"timeout after {timeout:g} s ({what} did not finish; killed)") from None


def stderr_tail(proc: subprocess.CompletedProcess, n: int = 200) -> str:
    return stderr_text_tail(proc.stderr.decode("utf-8", "replace"), n)


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
    if not find_binary("ffprobe"):
        return probe_with_ffmpeg(path, timeout)
    entries = "stream=nb_frames,avg_frame_rate,r_frame_rate,duration,width,height:format=duration,format_name"
    proc = run_ffprobe(path, timeout, "ffprobe", "-show_entries", entries, "-of", "json")
    if proc.returncode != 0:
        # ffprobe runs as another user, or the file system refused it
        refuse_if_denied("ffprobe", proc.stderr.decode("utf-8", "replace"), stderr_tail(proc))
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
    return VideoInfo(
        frames,
        fps or (frames / duration if duration else 25.0),
        duration,
        int(s.get("width") or 0),
        int(s.get("height") or 0),
    )


def run_ffprobe(path: Path, timeout: float, label: str, *options: str) -> subprocess.CompletedProcess:
    """ffprobe on the first video stream of `path`, with `options`, quiet but for errors."""
    args = [ffmpeg_binary("ffprobe"), "-v", "error", "-select_streams", "v:0", *options, str(path)]
    return run_tool(args, timeout, label)


def count_packets(path: Path, timeout: float) -> int:
    if not find_binary("ffprobe"):
        return ffmpeg_frame_count(path, timeout, decode=False)[0]
    proc = run_ffprobe(
        path,
        timeout,
        "ffprobe -count_packets",
        "-count_packets",
        "-show_entries",
        "stream=nb_read_packets",
        "-of",
        "csv=p=0",
    )
    return max(0, first_count(proc.stdout))


def decoded_extent(path: Path, timeout: float) -> tuple[int, float | None]:
    """(frames that really decode, the last one's timestamp in s from the file's start, None if
    unknown): a full decode, used only where a video ran out early. (-1, None) if unknown."""
    if not find_binary("ffprobe"):
        try:
            return ffmpeg_decoded_extent(path, timeout)
        except DecodeError:
            return -1, None
    try:
        proc = run_ffprobe(
            path,
            timeout,
            "ffprobe -show_frames",
            "-show_entries",
            "frame=best_effort_timestamp_time:format=start_time",
            "-of",
            "csv",
        )
    except DecodeError:
        return -1, None
    times, start = [], 0.0
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        kind, _, value = line.strip().partition(",")
        value = value.split(",")[0]
        if kind == "frame":
            times.append(value)
        elif kind == "format" and value not in ("", "N/A"):  # the container's start, as pts_time subtracts
            start = float(value)
    last = times[-1] if times else "N/A"
    return len(times), (float(last) - start if last not in ("", "N/A") else None)


def first_count(stdout: bytes) -> int:
    """The count on the first non-blank line of ffprobe's csv output, or -1.

    ffprobe prints a stream once per section that lists it: an MPEG-TS stream also sits
    under its program, so the output is "75\n\n75", not "75".
    """
    for line in stdout.decode("utf-8", "replace").splitlines():
        text = line.strip().split(",")[0]
        if text:
            return int(text) if text.isdigit() else -1
    return -1


# ---------------------------------------------------------------- probing without ffprobe
def ffmpeg_frame_count(path: Path, timeout: float, decode: bool) -> tuple[int, str, int]:
    """(frames, ffmpeg's stderr, exit status) from one pass over the first video stream:
    packets copied (decode=False, like ffprobe -count_packets) or frames decoded (True).

    Counted as the lines of the framecrc muxer (one per packet or frame, ~40 bytes each):
    `-progress` has no frame= line for a stream copy in ffmpeg 7, and framecrc's output
    has not changed since ffmpeg 0.x.
    """
    args = [
        ffmpeg_binary(),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-i",
        str(path),
        "-map",
        "0:v:0",
        *(() if decode else ("-c", "copy")),
        "-f",
        "framecrc",
        "-",
    ]
    proc = run_tool(args, timeout, "ffmpeg probing")
    count = sum(1 for line in proc.stdout.splitlines() if line and not line.startswith(b"#"))
    return count, proc.stderr.decode("utf-8", "replace"), proc.returncode


FRAMECRC_TB = re.compile(rb"^#tb 0: (\d+)/(\d+)", re.M)


def ffmpeg_decoded_extent(path: Path, timeout: float) -> tuple[int, float | None]:
    """decoded_extent() with ffmpeg alone: the framecrc lines of a full decode, the last
    one's pts (its third field) in the time base its header names. framecrc writes frames as
    they come (variable rate), so no frame is duplicated into a gap."""
    args = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:v:0"]
    proc = run_tool([*args, "-f", "framecrc", "-"], timeout, "ffmpeg counting frames")
    lines = [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith(b"#")]
    tb = FRAMECRC_TB.search(proc.stdout)
    if not lines or not tb:
        return len(lines), None
    pts = int(lines[-1].split(b",")[2])
    return len(lines), pts * int(tb.group(1)) / int(tb.group(2))


FFMPEG_INPUT = re.compile(r"^Input #0, ([^\n]+?), from", re.M)
FFMPEG_VIDEO = re.compile(r"^\s*Stream #0:\d+\S*: Video: ([^\n]*)", re.M)
FFMPEG_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def declared_frames(path: Path) -> int:
    """The frame count the container declares for its first video stream (nb_frames), 0 if none."""
    try:
        with av.open(str(path)) as c:
            return c.streams.video[0].frames if c.streams.video else 0
    except (av.FFmpegError, OSError):
        return 0


def open_error(text: str, path: Path) -> str:
    """Why ffmpeg could not open `path`, as 'path: message' (ffprobe's and ffmpeg 5's form; ffmpeg
    7 ends with 'Error opening input files: message' instead)."""
    tail = stderr_text_tail(text)
    m = re.fullmatch(r"Error opening input files?: (.+)", tail)
    return stderr_text_tail(f"{path}: {m.group(1)}") if m else tail


def probe_with_ffmpeg(path: Path, timeout: float) -> VideoInfo:
    """probe() for machines with ffmpeg but no ffprobe: the header ffmpeg prints, and the
    packets of one stream-copy pass (demux only) as the frame count.

    The rate is the one ffmpeg prints ("25 fps", "29.97 fps"), rounded to 2 decimals: only
    FPS= sampling uses it. The count is the packet count, which is what ffprobe reports
    for containers without a frame count; for an AVI, its header's count, as ffprobe.
    """
    frames, text, status = ffmpeg_frame_count(path, timeout, decode=False)
    container = FFMPEG_INPUT.search(text)
    video = FFMPEG_VIDEO.search(text)
    if not container:
        said = open_error(text, path)
        refuse_if_denied("ffmpeg", text, said)
        raise DecodeError(f"not a readable video: ffmpeg says {said!r}")
    if not video:
        raise DecodeError(f"no video stream (container: {container.group(1)})")
    if status != 0 and frames <= 0:
        raise DecodeError(crashed("ffmpeg", status) or f"not a readable video: ffmpeg says {stderr_text_tail(text)!r}")
    # ffprobe's count is the container's own where it has one, even when the file is cut
    # short: an AVI's header, an MP4's index (read with the libav PyAV bundles, as ffprobe would)
    header = read_avi_header(path)
    frames = header.frames if header else (declared_frames(path) or frames)
    if frames <= 0:
        raise DecodeError("no decodable frames: the video stream is empty")
    desc = video.group(1)
    size = re.search(r"\b(\d{1,5})x(\d{1,5})\b", desc)
    rate = re.search(r"([\d.]+)(k?) (?:fps|tbr)\b", desc)
    fps = float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else 0.0
    d = FFMPEG_DURATION.search(text)
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    return VideoInfo(
        frames,
        fps or (frames / duration if duration else 25.0),
        duration,
        int(size.group(1)) if size else 0,
        int(size.group(2)) if size else 0,
    )


# ---------------------------------------------------------------- decoding
def build_decode_args(
    path: Path, indices: np.ndarray, job: DecodeJob, threads: int | None = 1, showinfo: bool = True
) -> list[str]:
    """ffmpeg argument list that emits exactly `indices`, scaled and cropped as `job` says, as RGB24.

    threads: ffmpeg's decoding (and filter) threads; None leaves ffmpeg's default (one
    per core). showinfo: print each kept frame's pts on stderr (the timestamps we store).
    """
    binary = ffmpeg_binary()  # a PATH scan: once per video, not once per use
    expr = "+".join(f"eq(n,{int(i)})" for i in indices)
    stream = ffmpeg.input(str(path), **({"threads": threads} if threads else {}))
    stream = stream.filter("select", expr)
    for name, scaling in scale_filters(job.size, job.resize, job.interpolation):
        stream = stream.filter(name, **scaling)
    if showinfo:
        # The checksums showinfo computes by default are measurable work in a select-decode; we only want pts.
        stream = stream.filter("showinfo", **({"checksum": 0} if showinfo_has_checksum(binary) else {}))
    # -frames:v stops decoding after the last kept frame instead of reading to the end.
    options = {"frames:v": len(indices), **({"filter_threads": threads} if threads else {})}
    out = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", **options)
    args = ffmpeg.compile(out, cmd=binary)
    # -nostats/-hide_banner keep stderr to the showinfo lines we parse; the fps mode
    # stops ffmpeg from duplicating frames to fill the gaps the select leaves.
    return [args[0], "-nostdin", "-hide_banner", "-nostats", *args[1:-1], *fps_mode_args_of(binary), args[-1]]


PTS_TIME = re.compile(rb"pts_time:\s*([-0-9.e]+)")


def decode_frames(
    path: Path, indices: np.ndarray, job: DecodeJob, out: np.ndarray | None = None, threads: int | None = 1
) -> tuple[np.ndarray, np.ndarray]:
    """frames (k, S, S, 3) uint8 and timestamps (k,) float32 s, k <= len(indices), scaled and
    cropped as `job` says, within job.timeout.

    out: where the frames go, (>= len(indices), S, S, 3) uint8 C-contiguous (stage one passes
    a pinned slot); the frames returned are a view of it. ffmpeg's stdout is
    read straight into it (readinto, no intermediate bytes); stderr goes to a temp file,
    so a chatty decoder can never fill a pipe and stall while we wait on stdout.
    """
    n, size, timeout = len(indices), job.size, job.timeout
    frame_bytes = size * size * 3
    out = frame_buffer(out, n, size)
    view = memoryview(out).cast("B")[: n * frame_bytes]  # type: ignore[arg-type]  # numpy's stubs lack __buffer__
    args = build_decode_args(path, indices, job, threads)
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as err:
        proc = popen_reader(args, err)
        try:
            got = read_until(proc, view, deadline)
            status = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            got = status = None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raw_stdout(proc).close()
        if got is None or status is None:
            raise DecodeError(f"timeout after {timeout:g} s (ffmpeg did not finish; killed)")
        err.seek(0)
        text = err.read()
    if status != 0:
        said = stderr_text_tail(text.decode("utf-8", "replace"))
        # ffmpeg runs as another user, and no ffprobe ran before it
        refuse_if_denied("ffmpeg", text.decode("utf-8", "replace"), said)
        raise DecodeError(crashed("ffmpeg", status) or f"ffmpeg failed: {said!r}")
    k = got // frame_bytes
    times = np.array([float(t) for t in PTS_TIME.findall(text)[:k]], np.float32)
    return out[:k], times


def refuse_if_denied(tool: str, stderr: str, said: str) -> None:
    """Raise the "unreadable: permission denied" reason where `tool` says it was refused the file."""
    if "Permission denied" in stderr:
        raise DecodeError(f"unreadable: permission denied ({tool} says {said!r})")


def crashed(tool: str, status: int) -> str | None:
    """The reason for a tool killed by a signal (a crash inside it says nothing on stderr), else None."""
    if status >= 0:
        return None
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"{tool} crashed ({name}) on this file: try another FFmpeg build, or DECODER=pyav"


def popen_reader(args: list[str], stderr) -> subprocess.Popen:
    """Start ffmpeg with a 1 MiB stdout pipe (falls back to the default size where refused)."""
    try:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, bufsize=0, pipesize=PIPE_BYTES
        )
    except PermissionError:  # over the user's pipe quota (fs/pipe-user-pages-soft)
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, bufsize=0)


def raw_stdout(proc: subprocess.Popen) -> io.RawIOBase:
    """The stdout of a process popen_reader started: an unbuffered pipe (bufsize=0), so readinto
    fills the caller's buffer in place."""
    if not isinstance(proc.stdout, io.RawIOBase):
        raise TypeError(f"expected an unbuffered stdout pipe, got {proc.stdout!r}")
    return proc.stdout


def read_until(proc: subprocess.Popen, view: memoryview, deadline: float) -> int | None:
    """Fill `view` from proc's stdout until EOF; bytes past its end are read and dropped.

    Returns the bytes stored, or None at the deadline (the caller kills the process).
    """
    stdout = raw_stdout(proc)
    poller = select.poll()
    poller.register(stdout.fileno(), select.POLLIN)
    got, spill = 0, None
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        if got < len(view):
            n = stdout.readinto(view[got:])
            got += n or 0
        else:  # more than asked for (should not happen with -frames:v): drain it so ffmpeg can exit
            spill = spill or bytearray(1 << 16)
            n = stdout.readinto(spill)
        if not n:
            return got


def decode_plan(
    path: Path, job: DecodeJob, info: VideoInfo, out: np.ndarray | None, threads: int | None, from_header: bool
) -> tuple[FramePlan, np.ndarray, np.ndarray, np.ndarray]:
    """One ffmpeg pass: the plan of `job`'s steps in the video `info` describes, the frame buffer
    (a view of `out` when given), and the frames (k, S, S, 3) and timestamps (k,) it decoded.
    from_header: `info` came from the AVI header reader, so a failing ffmpeg is explained by ffprobe."""
    plan = FramePlan.of(job, info)
    buffer = frame_buffer(plan.flat(out), plan.slots, job.size)
    try:
        pixels, times = decode_frames(path, plan.frames, job, buffer, threads)
    except DecodeError:
        if from_header:  # a file ffprobe rejects fails with ffprobe's reason, as without the shortcut
            probe(path, job.timeout)
        raise
    return plan, buffer, pixels, times


def decode_video_cli(path: Path, job: DecodeJob, out: np.ndarray | None = None, threads: int | None = 1) -> Decoded:
    """Probe, sample and decode one video with ffmpeg processes as `job` says. Never raises for
    a bad video: see `.error`.

    out: optional job.shape() (or longer) uint8 buffer the frames are decoded into
    (Decoded.frames is then a view of it; with a clip, (k, K, S, S, 3)); job.timeout: seconds
    allowed to each ffprobe/ffmpeg call; threads: ffmpeg threads (decode_threads()).
    """
    t0 = time.perf_counter()
    timeout = job.timeout
    path = Path(path)
    try:
        # Uniform sampling needs only the frame count, which an AVI header gives exactly
        # as ffprobe would; FPS= sampling also needs ffprobe's rate, so it always probes.
        # A file the header reader cannot open (missing, empty, a directory, no permission)
        # reaches probe(), whose preflight() gives the reason.
        info = read_avi_header(path) if job.fps is None else None
        from_header = info is not None
        info = info or probe(path, timeout)
        plan, buffer, pixels, times = decode_plan(path, job, info, out, threads, from_header)
        if len(pixels) < len(plan.frames):
            real, last_time = decoded_extent(path, timeout)
            if counts_empty_chunks(info, real, last_time):
                # The container counts empty chunks (dropped frames): sample the frames that decode.
                info = replace(info, frames=real)
                plan, buffer, pixels, times = decode_plan(path, job, info, out, threads, False)
        if len(pixels) < len(plan.frames):
            got = f"{real}" if real >= 0 else "fewer"
            raise DecodeError(
                f"truncated: decoded {got} of ~{info.frames} frames (needed frame {int(plan.frames[len(pixels)])})"
            )
        if len(times) != len(pixels):  # no showinfo output (should not happen): use the nominal rate
            times = (plan.frames / info.fps).astype(np.float32)
        pixels, indices, stamps = plan.finish(buffer, times)
        return Decoded(pixels, indices, stamps, info.frames, None, time.perf_counter() - t0)
    except DecodeError as e:
        return Decoded(error=str(e), seconds=time.perf_counter() - t0)
