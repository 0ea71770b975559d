"""The `pyav` decoder in worker processes: how stage one runs it on every core.

    with DecoderProcesses(workers) as procs:
        procs.decode(path, job, out=slot)   # a DecodeJob, on any of `workers` threads

Why processes: PyAV releases the GIL inside libav's calls but takes it back for every
frame it hands out (every decoded frame, kept or not, is a Python object), so threads of one
process fill only a few of many cores, while processes fill them all (docs/bench.md has the
16-core figures); on 2 cores the GIL hardly binds, so the difference only shows on many cores.

So each decoding thread of stage one drives one long-lived Python process (started once
per run, importing only PyAV and numpy, never torch) that runs pyav.decode_video_pyav,
the very function a thread would run, and sends the result back over a pipe. The thread
reads the frames straight into its slot (readinto, GIL released while it waits), as the
ffmpeg-cli decoder reads ffmpeg's output. The bytes are the in-process decoder's: the same
frames, indices, timestamps and reasons.

A process can also be killed, which an in-process decoder cannot: a video that has not
answered GRACE_S after its timeout (a read hung in the kernel, a crash in libav) costs its
process, which is replaced; the video fails with the reason and the run goes on. Where no
decoder process can be started at all (Python cannot be run again: a sandbox, a dropped
user), the pool says so once and decodes in the calling threads, as PyAV allows.

The same processes decode the sound of an audio set (sound.decode_audio), which PyAV's
GIL binds the same way.

The protocol, on the child's stdin/stdout: each request is a 4-byte little-endian length and
that many bytes of JSON (a VideoRequest: the path and the DecodeJob's fields; a SoundRequest:
the path and the timeout; JSON, not pickle, so that nothing the child reads can run code); the
answer is a 4-byte length, that many bytes of JSON, then the array it announces: for a video
{frames: k, indices, timestamps, num_frames, error, seconds} and the k steps' frames,
k x job.shape()[1:] uint8 (the indices (k, K) with a clip); for a sound {samples: n,
has_audio, error, ...} and n float32 samples. A dense job (FRAMES=all) is answered chunk by chunk:
each a length, {frames: k, indices, timestamps, spans, last, num_frames, duration, fps, seconds,
error} and its k steps' frames, until one says last (or error); the child decodes the next chunk
only once the pipe has taken this one, so a slow consumer holds it back (no chunk piles up).
Only the pool that started the child writes to its stdin.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .common import Chunk, Decoded, DecodeError, DecodeJob
from .pyav import decode_dense_pyav, decode_video_pyav
from .sound import AudioTrack, decode_audio

GRACE_S = 5.0  # past the video's own timeout, which the child enforces itself, before it is killed
HEADER = struct.Struct("<I")
ROOT = Path(__file__).resolve().parents[3]  # the repository, on the child's sys.path
# What a decoder process runs: serve() on its pipes (not `-m`: runpy would import this module
# twice, once as the package's and once as __main__, and warn).
CHILD = "import sys; from stages.extract.decode.processes import serve; serve(sys.stdin.buffer, sys.stdout.buffer)"


class VideoRequest(NamedTuple):
    """Decode the pictures of `path` (absolute) as `job` says: what a decoder process is sent."""

    path: str
    job: DecodeJob


class SoundRequest(NamedTuple):
    """Read the sound track of `path` (absolute) within `timeout` s."""

    path: str
    timeout: float


Request = VideoRequest | SoundRequest


def encode_request(request: Request) -> bytes:
    """The request in JSON: its kind and its fields (a DecodeJob as its dataclass fields)."""
    fields = request._asdict() | ({"job": dataclasses.asdict(request.job)} if isinstance(request, VideoRequest) else {})
    return json.dumps({"kind": type(request).__name__} | fields).encode()


def decode_request(data: bytes) -> Request:
    """encode_request's inverse."""
    fields = json.loads(data)
    if fields.pop("kind") == VideoRequest.__name__:
        return VideoRequest(fields["path"], DecodeJob.from_fields(fields["job"]))
    return SoundRequest(**fields)


class ChildGone(Exception):
    """The decoder process closed its pipe (it died); str(e) says how."""


class DecoderProcess:
    """One child process running decode_video_pyav or decode_audio for jobs sent one at a time."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=env,
            start_new_session=True,  # Ctrl-C stops the run, which ends its decoders, not each with a traceback
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def ask(self, request: Request, timeout: float) -> tuple[dict, float]:
        """Send one request; (its answer's JSON header, the deadline for reading the rest).
        Raises TimeoutError or ChildGone."""
        data = encode_request(request)
        try:
            self.stdin.write(HEADER.pack(len(data)) + data)
        except OSError:  # BrokenPipeError: the child is gone
            raise ChildGone(self.gone()) from None
        deadline = time.monotonic() + timeout + GRACE_S
        return self.answer(deadline), deadline

    def answer(self, deadline: float) -> dict:
        """The next answer's JSON header, read before `deadline`."""
        (length,) = HEADER.unpack(self.read(bytearray(HEADER.size), deadline))
        return json.loads(bytes(self.read(bytearray(length), deadline)))

    def read(self, buf, deadline: float):
        """Fill `buf` from the child's stdout before `deadline`; returns buf."""
        fd, view, got = self.stdout.fileno(), memoryview(buf).cast("B"), 0
        while got < len(view):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            n = os.readv(fd, [view[got:]])
            if n == 0:
                raise ChildGone(self.gone())
            got += n
        return buf

    def gone(self) -> str:
        code = self.proc.wait(timeout=GRACE_S)
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def cpu_seconds(self) -> float:
        """CPU seconds this child has used so far (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def close(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            self.stdin.close()  # the child's loop ends at EOF
        try:
            self.proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stdout.close()


def chunk_of(head: dict, child: DecoderProcess, next_buffer: Callable[[], np.ndarray], timeout: float) -> Chunk:
    """A dense chunk's answer: its frames read into a buffer from next_buffer() (waiting for one
    not counted against the timeout), the rest from its header."""
    k = head["frames"]
    frames = np.empty((0,), np.uint8)
    if k:
        frames = next_buffer()[:k]
        child.read(frames, time.monotonic() + timeout + GRACE_S)
    spans = np.asarray(head["spans"], np.float32).reshape(k, 2)
    fields = {key: head[key] for key in ("last", "num_frames", "duration", "fps", "seconds")}
    return Chunk(
        frames, np.asarray(head["indices"], np.int32), np.asarray(head["timestamps"], np.float32), spans, **fields
    )


class DecoderProcesses:
    """Up to `workers` decoder processes shared by the threads that call decode() or
    decode_sound(), started on first use and reused; a context manager that ends them all."""

    def __init__(self, workers: int):
        self.workers = workers
        self.idle: queue.SimpleQueue[DecoderProcess] = queue.SimpleQueue()
        self.all: list[DecoderProcess] = []
        self.lock = threading.Lock()
        self.retired_cpu = 0.0  # CPU of the processes killed and replaced
        self.unavailable: str | None = None  # why no decoder process can be started here

    def __enter__(self) -> DecoderProcesses:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def decode(self, path: Path, job: DecodeJob, out: np.ndarray | None = None) -> Decoded:
        """decode_video_pyav's contract, run in a decoder process: the frames land in `out`
        (job.shape() or longer, uint8, C-contiguous). Never raises for a bad video."""
        out = np.empty(job.shape(), np.uint8) if out is None else out

        def answer(child: DecoderProcess, head: dict, deadline: float) -> Decoded:
            k = head["frames"]
            if k:
                child.read(out[:k], deadline)
            as_array = lambda key, dtype: np.asarray(head[key], dtype) if k else None
            return Decoded(
                out[:k] if k else None,
                as_array("indices", np.int32),
                as_array("timestamps", np.float32),
                head["num_frames"],
                head["error"],
                head["seconds"],
            )

        return self.run(
            VideoRequest(str(Path(path).absolute()), job),
            job.timeout,
            answer,
            in_thread=lambda: decode_video_pyav(path, job, out),
            failed=lambda why, seconds: Decoded(error=why, seconds=seconds),
            doing="decoding",
        )

    def decode_dense(self, path: Path, job: DecodeJob, next_buffer: Callable[[], np.ndarray]) -> Iterator[Chunk]:
        """decode_dense_pyav's contract, run in a decoder process: each chunk's frames land in a
        buffer from next_buffer(), taken when its header has arrived. Raises DecodeError for a
        bad video (its process killed where it timed out or died)."""
        child = self.take()
        if child is None:
            yield from decode_dense_pyav(path, job, next_buffer)
            return
        done = False
        try:
            head, deadline = child.ask(VideoRequest(str(Path(path).absolute()), job), job.timeout)
            while True:
                if head["error"]:
                    done = True
                    raise DecodeError(head["error"])
                chunk = chunk_of(head, child, next_buffer, job.timeout)
                done = chunk.last
                yield chunk
                if done:
                    break
                head = child.answer(time.monotonic() + job.timeout + GRACE_S)
        except TimeoutError:
            self.retire(child)
            child = None
            raise DecodeError(
                f"timeout after {job.timeout:g} s (PyAV did not finish decoding a chunk; its process was killed)"
            ) from None
        except ChildGone as e:
            self.retire(child)
            child = None
            raise DecodeError(f"the PyAV decoder process died on this file ({e})") from None
        finally:
            if child is not None:
                if done:
                    self.idle.put(child)
                else:  # abandoned mid-video (an error elsewhere): its answers are still coming
                    self.retire(child)

    def decode_sound(self, path: Path, timeout: float = 60.0) -> AudioTrack:
        """sound.decode_audio's contract (the first audio stream, 16 kHz mono), run in a
        decoder process. Never raises for a bad file: see `.error`."""

        def answer(child: DecoderProcess, head: dict, deadline: float) -> AudioTrack:
            samples = np.empty(head.pop("samples"), np.float32)
            if len(samples):
                child.read(samples, deadline)
            return AudioTrack(samples=samples, **head)

        return self.run(
            SoundRequest(str(Path(path).absolute()), timeout),
            timeout,
            answer,
            in_thread=lambda: decode_audio(path, timeout),
            failed=lambda why, seconds: AudioTrack(error=f"audio: {why}", seconds=seconds),
            doing="reading the sound",
        )

    def run(
        self, request: Request, timeout: float, answer: Callable, in_thread: Callable, failed: Callable, doing: str
    ):
        """`request` in a decoder process, its answer read by answer(child, head, deadline); in
        this thread where no process can be started; failed(reason, seconds) where the process
        did not answer within `timeout` (s) and its grace (it is killed) or died."""
        t0 = time.perf_counter()
        child = self.take()
        if child is None:
            return in_thread()
        try:
            head, deadline = child.ask(request, timeout)
            result = answer(child, head, deadline)
        except TimeoutError:
            self.retire(child)
            why = f"timeout after {timeout:g} s (PyAV did not finish {doing}; its process was killed)"
            return failed(why, time.perf_counter() - t0)
        except ChildGone as e:
            self.retire(child)
            return failed(f"the PyAV decoder process died on this file ({e})", time.perf_counter() - t0)
        except BaseException:
            self.retire(child)
            raise
        self.idle.put(child)
        return result

    def take(self) -> DecoderProcess | None:
        """An idle decoder process, a new one, or None where none can be started."""
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            if self.unavailable:
                return None
            if len(self.all) < self.workers:
                try:
                    child = DecoderProcess()
                except OSError as e:
                    self.unavailable = f"{sys.executable}: {e.strerror or e}"
                    logging.getLogger(__name__).warning(
                        "stage one: cannot start a PyAV decoder process (%s); decoding in threads of "
                        "this process instead, which the GIL slows down on many cores",
                        self.unavailable,
                    )
                    return None
                self.all.append(child)
                return child
        return self.idle.get()

    def retire(self, child: DecoderProcess) -> None:
        """Kill a child that timed out or died; a new one takes its place on the next take()."""
        cpu = child.cpu_seconds()
        child.close(kill=True)
        with self.lock:
            self.retired_cpu += cpu
            if child in self.all:  # not when close() has already taken them all
                self.all.remove(child)

    def cpu_seconds(self) -> float:
        """CPU seconds of every decoder process of this pool so far (for the benchmark)."""
        with self.lock:
            return self.retired_cpu + sum(c.cpu_seconds() for c in self.all)

    def close(self) -> None:
        with self.lock:
            children, self.all = self.all, []
        for child in children:
            child.close()


# ---------------------------------------------------------------- in the child
def video_answer(path: str, job: DecodeJob, buffers: dict) -> tuple[dict, np.ndarray | None]:
    shape = job.shape()
    out = buffers.get(shape)
    if out is None:  # one buffer per shape, reused: not a fresh allocation per video
        out = buffers[shape] = np.empty(shape, np.uint8)
    dec = decode_video_pyav(Path(path), job, out)
    head: dict[str, object] = {"frames": 0, "indices": None, "timestamps": None}
    head |= {"num_frames": dec.num_frames, "error": dec.error, "seconds": dec.seconds}
    if dec.error or dec.frames is None or not len(dec.frames):
        return head, None
    frames, indices, timestamps = dec.picture()
    return head | {"frames": len(frames), "indices": indices.tolist(), "timestamps": timestamps.tolist()}, frames


def dense_answers(path: str, job: DecodeJob, buffers: dict) -> Iterator[tuple[dict, np.ndarray | None]]:
    """Each chunk of a dense video as (header, frames), or a last header with the error."""
    shape = job.shape()
    out = buffers.get(shape)
    if out is None:
        out = buffers[shape] = np.empty(shape, np.uint8)
    try:
        for chunk in decode_dense_pyav(Path(path), job, lambda: out):
            head = {"frames": len(chunk.timestamps), "error": None, "indices": chunk.indices.tolist()}
            head |= {"timestamps": chunk.timestamps.tolist(), "spans": chunk.spans.tolist()}
            head |= {key: getattr(chunk, key) for key in ("last", "num_frames", "duration", "fps", "seconds")}
            yield head, chunk.frames if len(chunk.timestamps) else None
    except DecodeError as e:
        yield {"frames": 0, "error": str(e)}, None


def sound_answer(path: str, timeout: float) -> tuple[dict, np.ndarray | None]:
    track = decode_audio(Path(path), timeout)
    head = {f.name: getattr(track, f.name) for f in dataclasses.fields(track) if f.name != "samples"}
    return head | {"samples": len(track.samples)}, track.samples.astype(np.float32, copy=False)


def requests(source) -> Iterator[Request]:
    """Each Request on `source` (a binary stream), until it ends."""
    while len(size := source.read(HEADER.size)) == HEADER.size:
        (length,) = HEADER.unpack(size)
        yield decode_request(source.read(length))


def serve(source, answers) -> None:
    """Answer each request on `source` on `answers`: a length, a JSON header, then the array's bytes."""
    buffers: dict[tuple, np.ndarray] = {}
    for request in requests(source):
        if isinstance(request, VideoRequest) and request.job.dense:
            for head, data in dense_answers(request.path, request.job, buffers):
                send(answers, head, data)
            continue
        if isinstance(request, VideoRequest):
            head, data = video_answer(request.path, request.job, buffers)
        else:
            head, data = sound_answer(request.path, request.timeout)
        send(answers, head, data)


def send(answers, head: dict, data: np.ndarray | None) -> None:
    """One answer: a length, the JSON header, then the array's bytes."""
    text = json.dumps(head).encode()
    answers.write(HEADER.pack(len(text)) + text)
    if data is not None and data.size:
        answers.write(memoryview(np.ascontiguousarray(data)).cast("B"))  # type: ignore[arg-type]  # numpy's stubs lack __buffer__
    answers.flush()
