"""The hand-off from decoders to the backbone: frame slots, and batches run on a thread of their own.

    decode thread   PyAV's converted frames (np.copyto), or ffmpeg's stdout (readinto), straight
                    into a slot: one video's frames, in pinned host memory on CUDA (no bytes
                    object, no extra copy, no pickling)
    main thread     add(slot) appends a *reference* to the batch being filled; a full
                    batch goes on a queue (size 1) to the inference thread
    inference loop  on the extractor's own long-lived thread (the one whose cuDNN kernel
                    search the warm-up paid): copies the batch's slots into one device
                    tensor (asynchronous DMA from pinned memory) on its own CUDA stream,
                    normalises, runs the backbone and copies the features back into
                    pinned memory; batch i+1 is queued on the GPU behind batch i before
                    batch i's features are awaited, so the GPU never waits for Python
                    between batches
                 -> features handed to `sink`, slots handed back to the decoders

So decode (many decoder threads), host-to-device copies, inference and the shard writes
(another thread, runner.py) all overlap, and the main thread only routes.

Host memory is bounded by the slot count, fixed at start: 2 x workers slots for the
decoders (what run_shards keeps in flight) plus 4 batches' worth (filling, queued,
on the GPU, being scattered), at most `videos_per_batch` videos each. A batch is sent
when its frames reach the batch size or its videos reach that count, so short videos
only make smaller batches. At the GPU defaults (T=16, 224 px, batch 512, 16 decoders)
that is 165 slots x 2.4 MB = 400 MB of pinned memory, whatever the dataset size.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .model_thread import ModelThread

log = logging.getLogger(__name__)
POLL_S = 0.5  # how often a blocked thread looks whether the pipeline was stopped


class Stopped(RuntimeError):
    """The batcher was stopped (an error elsewhere): a decoder waiting for a slot gives up."""


class FrameSlots:
    """`count` buffers of (frames, *item_shape) items, e.g. (T, S, S, 3) uint8 pictures,
    pinned when the model is on CUDA."""

    def __init__(self, count: int, frames: int, item_shape: tuple[int, ...], dtype: torch.dtype, pin: bool):
        self.data = torch.empty((count, frames, *item_shape), dtype=dtype, pin_memory=pin)
        self.arrays = self.data.numpy()  # numpy views of the same memory, the decoders' `out=`
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(count):
            self.free.put(i)
        self.stopped = threading.Event()

    def acquire(self) -> int:
        """A free slot's index; blocks while all are in use (raises Stopped if stopped)."""
        while True:
            try:
                return self.free.get(timeout=POLL_S)
            except queue.Empty:
                if self.stopped.is_set():
                    raise Stopped("stage one stopped while this decoder waited for a frame slot") from None

    def release(self, slot: int) -> None:
        self.free.put(slot)


@dataclass
class Job:
    """One batch: pieces (slot, first frame, frames, is the video's last piece, owner)."""

    pieces: list[tuple[int, int, int, bool, object]]
    frames: int
    # filled by launch():
    out: torch.Tensor | None = None
    events: tuple = ()
    started: float = 0.0
    timings: dict = field(default_factory=dict)


class Batcher:
    """Packs items of many videos into model batches, run on the model's thread.

    sink(owner, first, feats, last) is called on the inference thread for every piece,
    in order: feats (k, D) float16 numpy for items [first, first+k) of the video
    `owner`; `last` when it was the video's last piece. Use as a context manager, or
    call close() (flush and wait) and stop() (on errors).

    On CUDA every batch has `batch` rows (a partial one is padded with zeros), as with a
    compiled model: one shape means one cuDNN kernel search, done by the warm-up, and the
    same kernels, so the same feature bits, whatever the batch's composition.
    """

    def __init__(
        self,
        extractor: ModelThread,
        batch: int,
        frames: int,
        workers: int,
        sink: Callable[[Any, int, np.ndarray, bool], None],  # its first argument: the owner given to add()
    ):
        self.extractor, self.batch, self.sink = extractor, batch, sink
        family = extractor.family
        self.item_shape, self.item_dtype, self.dim = family.item_shape(), family.item_dtype, family.dim
        self.cuda = extractor.device.type == "cuda"
        self.videos_per_batch = 1 if family.one_video_per_batch else -(-batch // frames) + 1
        # Pinned memory and the stream belong to the model's GPU, whatever this thread's current one.
        with torch.cuda.device(extractor.device) if self.cuda else contextlib.nullcontext():
            self.allocate(workers, frames)
        self.pieces: list[tuple] = []
        self.fill = 0
        # add() is called by the main thread (a fixed-T video) and by decode threads (a dense
        # video's chunks); the batch being filled is theirs to share
        self.adding = threading.Lock()
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        # seconds: H2D copies, backbone, scatter to shards; inference loop idle (starved:
        # decode-bound); main thread blocked on a full queue (backbone-bound); CPU time of
        # the inference loop
        self.timings = {
            "transfer": 0.0,
            "backbone": 0.0,
            "scatter": 0.0,
            "starved": 0.0,
            "feed_wait": 0.0,
            "inference_cpu": 0.0,
            "images": 0,
            "batches": 0,
        }
        self.turn = 0
        self.serving: cf.Future = extractor.submit(self.serve)

    def allocate(self, workers: int, frames: int) -> None:
        """The frame slots; on CUDA also the side stream and the two pinned feature outputs."""
        count = 2 * workers + 4 * self.videos_per_batch
        self.slots = FrameSlots(count, frames, self.item_shape, self.item_dtype, pin=self.cuda)
        if self.cuda:
            self.stream = torch.cuda.Stream(self.extractor.device)
            self.outs = [torch.empty((self.batch, self.dim), dtype=torch.float16, pin_memory=True) for _ in range(2)]

    # -------------------------------------------------------------- main thread
    def add(self, slot: int, k: int, owner: object) -> None:
        """Queue frames [0, k) of `slot` (k >= 1) for the backbone; may span batches. Any thread."""
        with self.adding:
            self.add_locked(slot, k, owner)

    def add_locked(self, slot: int, k: int, owner: object) -> None:
        t = 0
        while t < k:
            n = min(k - t, self.batch - self.fill)
            self.pieces.append((slot, t, n, t + n == k, owner))
            self.fill += n
            t += n
            if self.fill == self.batch or len(self.pieces) >= self.videos_per_batch:
                self.dispatch()

    def dispatch(self) -> None:
        if not self.pieces:
            return
        job, self.pieces, self.fill = Job(self.pieces, self.fill), [], 0
        t0 = time.perf_counter()
        self.put(job)
        self.timings["feed_wait"] += time.perf_counter() - t0

    def put(self, item: Job | None) -> None:
        """Hand a job (None: the end) to the inference thread, re-raising its error rather
        than blocking forever on the queue of a thread that died."""
        while not self.serving.done():
            self.check()
            try:
                self.jobs.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue
        self.check()

    def close(self) -> None:
        """Send the last partial batch, wait until every feature reached the sink."""
        with self.adding:
            self.dispatch()
        self.put(None)
        self.serving.result()
        self.check()

    def stop(self) -> None:
        """Unblock everyone after an error: decoders waiting for slots, the inference thread."""
        self.slots.stopped.set()
        with contextlib.suppress(queue.Full):
            self.jobs.put_nowait(None)

    def check(self) -> None:
        """Re-raise, on the calling thread, what stopped the inference thread (its own type,
        so a WeightsError from a background model build still reads as one)."""
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.stop()

    # -------------------------------------------------------------- inference loop
    def serve(self) -> None:
        """The inference loop, on the extractor's thread, until close() or stop()."""
        cpu0 = time.thread_time()
        try:
            device_ctx = torch.cuda.device(self.extractor.device) if self.cuda else contextlib.nullcontext()
            stream_ctx = torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()
            with torch.inference_mode(), device_ctx, stream_ctx:
                running = None
                while True:
                    t0 = time.perf_counter()
                    job = self.jobs.get()
                    self.timings["starved"] += time.perf_counter() - t0
                    if job is None or self.slots.stopped.is_set():
                        break
                    self.launch(job)
                    if running is not None:
                        self.finish(running)
                    running = job
                if running is not None and not self.slots.stopped.is_set():
                    self.finish(running)
        except BaseException as e:  # handed to the main thread, which re-raises it
            self.error = e
            self.slots.stopped.set()
            log.error("stage one's inference loop stopped: %s: %s", type(e).__name__, e)
        finally:
            # CPU seconds of this loop: near its wall time would mean it spins while the GPU works
            self.timings["inference_cpu"] = time.thread_time() - cpu0

    def launch(self, job: Job) -> None:
        """Enqueue the batch's copies, the backbone and the copy back; on CUDA, returns at once."""
        ext, n = self.extractor, job.frames
        ext.ready()  # the first batch waits for the background model load here, outside the timings
        # One shape only on CUDA and for a compiled model: pad a partial batch.
        rows = self.batch if ext.compiled or self.cuda else n
        job.started = time.perf_counter()
        if self.cuda:
            # blocking: waiting on `done` sleeps instead of spinning a core the decoders need
            start, copied, done = (torch.cuda.Event(enable_timing=True, blocking=True) for _ in range(3))
            start.record()
            x = torch.empty((rows, *self.item_shape), dtype=self.item_dtype, device=ext.device)
            off = 0
            for slot, first, k, _, _ in job.pieces:
                x[off : off + k].copy_(self.slots.data[slot, first : first + k], non_blocking=True)
                off += k
            if rows > n:
                x[n:].zero_()
            copied.record()
            feats = ext.embed(x)[:n].to(torch.float16)
            job.out = self.outs[self.turn][:n]
            self.turn ^= 1
            job.out.copy_(feats, non_blocking=True)
            done.record()
            job.events = (start, copied, done)
        else:
            parts = [self.slots.data[slot, first : first + k] for slot, first, k, _, _ in job.pieces]
            if rows > n:
                parts.append(torch.zeros((rows - n, *self.item_shape), dtype=self.item_dtype))
            x = torch.cat(parts)
            t1 = time.perf_counter()
            job.out = ext.embed(x)[:n].to(torch.float16)
            job.timings = {"transfer": t1 - job.started, "backbone": time.perf_counter() - t1}

    def finish(self, job: Job) -> None:
        """Wait for the batch's features, hand them to the sink, free its slots."""
        if self.cuda:
            start, copied, done = job.events
            done.synchronize()
            job.timings = {"transfer": start.elapsed_time(copied) / 1e3, "backbone": copied.elapsed_time(done) / 1e3}
        for key, value in job.timings.items():
            self.timings[key] += value
        t0 = time.perf_counter()
        assert job.out is not None, "submit() gave the job its output"
        feats = job.out.numpy()
        off = 0
        for slot, first, k, last, owner in job.pieces:
            self.sink(owner, first, feats[off : off + k], last)
            if last:
                self.slots.release(slot)
            off += k
        self.timings["scatter"] += time.perf_counter() - t0
        self.timings["images"] += job.frames
        self.timings["batches"] += 1
