"""The shard runner: decode, embed and write the shards a run has claimed.

    claimed shard -> decode threads (each driving a PyAV process, or ffmpeg processes) -> frame slots (pinned)
    -> batcher (items of many videos in one model batch, on the model's thread with
    its own CUDA stream; batching.py) -> shard buffer -> writer thread (tmp, fsync, rename)
    -> the mode's `ShardSink`: commit to the manifest (a local run), hand the staged file to
    the Dask driver (distributed.py), or swap a rewritten shard in (retry.py)

What a decode thread hands the model (frames, or sound windows) is the family's
(extractors/, inputs.py); the runner is the same for every family. Each decode thread
drives a process and waits on its pipe with the GIL released: its own
long-lived PyAV process (decode/processes.py; PyAV in threads of this process is bound by the
GIL on many cores), or, with DECODER=ffmpeg-cli, an ffmpeg process per video. Either way
the frames are read straight into the slot the backbone's copy reads from: no pickling, no
intermediate copy. The main thread only routes: decode, copies, inference
and writes all overlap. Host memory stays bounded: at most 2 x `workers` videos are
decoding, into the batcher's fixed pool of slots, plus the shards in progress.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from pipeline import console, store

from .batching import Batcher, FrameSlots
from .copying import RowCopier, index_committed, stored_positions
from .datasets import VideoRecord
from .decode import Chunk, Decoded, DecodeError
from .inputs import decode_items, decode_job, dense_items, input_processes
from .model_thread import ModelThread
from .plan import ExtractionPlan, committed_indices
from .ragged import RaggedShardBuffer

# What a dense video's decode task hands back: its last chunk (None: failed), the reason it
# failed, its flags (has_audio) and the seconds its decoding took.
DenseResult = tuple[Chunk | None, str | None, dict[str, int], float]


@dataclass
class Summary:
    """What a run did, for its last lines and for the benchmark."""

    feature_set_id: str
    set_dir: Path
    total: int = 0  # videos in the dataset listing
    computed: int = 0  # videos stored by this run, decoded and embedded
    copied: int = 0  # videos stored by this run, copied from other sets of the store
    copied_from: dict = field(default_factory=dict)  # set id -> videos copied from it
    reused: int = 0  # videos already committed before this run
    failed: int = 0  # failures recorded by this run
    elapsed: float = 0.0
    reused_set: bool = False  # the whole feature set already existed
    timings: dict = field(default_factory=dict)  # decode / backbone / write / wait seconds, images, batches
    failures: list[dict] = field(default_factory=list)  # {"video_id", "reason"} recorded by this run

    @property
    def videos_per_s(self) -> float:
        return (self.computed + self.failed) / self.elapsed if self.elapsed else 0.0

    def add_shard(self, stored: int, failures: list[dict], label: str = "failed", copied: dict | None = None) -> None:
        """Count a committed shard's newly stored videos (copied: set id -> rows copied from it,
        the rest computed) and its failures; report each failure."""
        copied = copied or {}
        for set_id, n in copied.items():
            self.copied_from[set_id] = self.copied_from.get(set_id, 0) + n
        self.copied += sum(copied.values())
        self.computed += stored - sum(copied.values())
        self.failed += len(failures)
        self.failures += failures
        for f in failures:
            console.say(f"{label}: {f['video_id']}: {f['reason']}")

    def add(self, other: Summary) -> None:
        """Fold in what another process of the same run did (its failures are reported here)."""
        self.add_shard(other.computed + other.copied, other.failures, copied=other.copied_from)
        self.add_timings(other.timings)

    def add_timings(self, timings: dict) -> None:
        """Sum another runner's (or process's) seconds and counts into this summary's."""
        for k, v in timings.items():
            self.timings[k] = self.timings.get(k, 0) + v


class ShardBuffer:
    """Rows of one shard while its videos are decoded and embedded.

    features (n, T, D) float16 (zeros where padded); frame_indices (n, T) int32, or (n, T, K)
    for a clip model (every frame of every clip; -1 pad); timestamps (n, T) float32 s (NaN
    pad); lengths (n,) int32; fingerprints (n,) str (sha256 of each file, "" unknown);
    copied: set id -> rows copied from that set.
    """

    def __init__(
        self,
        index: int,
        records: list[VideoRecord],
        frames: int,
        claim: store.Claim | None,
        dim: int,
        extras: tuple[str, ...] = (),
        clip_length: int | None = None,
    ):
        n = len(records)
        self.index, self.records, self.claim = index, records, claim
        self.features = np.zeros((n, frames, dim), np.float16)
        step = (clip_length,) if clip_length else ()
        self.frame_indices = np.full((n, frames, *step), -1, np.int32)
        self.timestamps = np.full((n, frames), np.nan, np.float32)
        self.lengths = np.zeros(n, np.int32)
        self.fingerprints = [""] * n
        self.copied: dict[str, int] = {}
        self.extras = {name: np.zeros(n, np.uint8) for name in extras}  # per-video flags, e.g. has_audio
        self.ok = np.zeros(n, bool)
        self.failures: list[dict] = []
        self.pending = n  # videos not yet embedded or failed

    def fail(self, pos: int, reason: str) -> None:
        self.failures.append({"video_id": self.records[pos].video_id, "reason": reason})
        self.pending -= 1

    def embedded(self) -> None:
        """A video's last features are in `features`."""
        self.pending -= 1

    def reuse(self, stored: dict[str, np.ndarray]) -> None:
        """Copy the rows of videos a committed shard already holds (read_shard's arrays).

        Only what `--retry-failures` needs: the shard is rewritten, and its videos that
        did not fail are copied bit for bit instead of being decoded again.
        """
        for pos, k in stored_positions(self.records, stored):
            self.copy_row(pos, stored, k)

    def copy_row(self, pos: int, stored: dict[str, np.ndarray], k: int, from_set: str | None = None) -> None:
        """Row k of a shard read whole (read_shard's arrays) as this shard's video `pos`:
        what the computation would store, but not the listing's label, group or id.
        from_set: the id of the other set it comes from (None: this set's own shard)."""
        self.features[pos] = stored["features"][k]
        self.lengths[pos], self.ok[pos] = stored["lengths"][k], True
        # the fingerprint of the bytes the row was computed from, not of the file now there
        self.fingerprints[pos] = stored["fingerprints"][k] if "fingerprints" in stored else ""
        self.frame_indices[pos] = stored["frame_indices"][k]
        self.timestamps[pos] = stored["timestamps"][k]
        for name, values in self.extras.items():
            values[pos] = stored[name][k]
        if from_set is not None:
            self.copied[from_set] = self.copied.get(from_set, 0) + 1
        self.pending -= 1

    def accept(self, pos: int, dec: Decoded, flags: dict[str, int]) -> None:
        frames, indices, timestamps = dec.picture()
        k = len(frames)
        self.lengths[pos], self.ok[pos] = k, True
        self.frame_indices[pos, :k] = indices
        self.timestamps[pos, :k] = timestamps
        for name, value in flags.items():
            self.extras[name][pos] = value

    def arrays(self) -> dict[str, np.ndarray | list[str]]:
        keep = self.ok
        recs = [r for r, k in zip(self.records, keep) if k]
        arrays: dict[str, np.ndarray | list[str]] = {
            "features": self.features[keep],
            "lengths": self.lengths[keep],
            "labels": np.array([r.label for r in recs], np.int32).reshape(-1),
            "video_ids": [r.video_id for r in recs],
            "groups": [r.group for r in recs],
            "frame_indices": self.frame_indices[keep],
            "timestamps": self.timestamps[keep],
            "fingerprints": [fp for fp, k in zip(self.fingerprints, keep) if k],
        }
        return arrays | {name: values[keep] for name, values in self.extras.items()}


# A shard's rows while they are computed: (n, T, ...) arrays, or a dense set's ragged rows.
AnyShard = ShardBuffer | RaggedShardBuffer


class ShardSink(Protocol):
    """What one mode (local, Dask task, retry) does around the shards the runner computes."""

    def path(self, index: int) -> Path:
        """Where shard `index` is written."""

    def rows_to_copy(self, index: int) -> dict | None:
        """A committed shard's arrays whose videos are copied, not decoded (None: decode all)."""

    def written(self, shard: AnyShard, entry: dict) -> None:
        """Shard written to path(index) (entry: file, videos, bytes, sha256); commit or hand it on."""


class CommitToManifest:
    """A local run's sink: shard i goes to its final name and into the manifest at once."""

    def __init__(self, plan: ExtractionPlan, summary: Summary):
        self.plan, self.summary = plan, summary

    def path(self, index: int) -> Path:
        return self.plan.set_dir / store.shard_name(index)

    def rows_to_copy(self, index: int) -> dict | None:
        return None

    def written(self, shard: AnyShard, entry: dict) -> None:
        store.commit_shard(self.plan.set_dir, shard.index, entry, shard.failures)
        if shard.claim is not None:
            shard.claim.release()
        index_committed(self.plan, entry["file"])
        self.summary.add_shard(entry["videos"], shard.failures, copied=entry.get("copied"))


class ShardRunner:
    """Decodes, embeds and writes the shards it is given, with one family's model.

    `run(claimed)` takes (index, held claim or None) pairs and returns the timings in
    seconds: decode (decoder-seconds, summed over the decoders), transfer and backbone
    (host-to-device copies and inference, GPU time on CUDA), scatter, write (the writer
    thread), wait (main thread waiting for decoders), feed_wait (main thread waiting for
    the backbone), starved (inference loop waiting for frames), inference_cpu; images, batches.
    """

    def __init__(self, plan: ExtractionPlan, model: ModelThread, sink: ShardSink, bar: tqdm | None = None):
        self.plan, self.model, self.sink, self.bar = plan, model, sink, bar
        self.family = model.family
        self.job = decode_job(self.family)  # what every video of the run is decoded as
        self.workers = plan.cfg.workers or os.cpu_count() or 1
        self.timings = {"decode": 0.0, "write": 0.0, "wait": 0.0}
        self.writes: list[cf.Future] = []
        self.opened: list[AnyShard] = []
        # ShardBuffer.pending drops on the main thread (a failed video) and on the inference
        # thread (a video's last features): the lock makes "reached zero" happen exactly once.
        self.pending_lock = threading.Lock()

    # -------------------------------------------------------------- the main loop
    def run(self, claimed: Iterator[tuple[int, store.Claim | None]]) -> dict:
        with torch_threads(self.family.torch_threads):
            return self.run_shards(claimed)

    def run_shards(self, claimed: Iterator[tuple[int, store.Claim | None]]) -> dict:
        cfg = self.plan.cfg
        batch = self.family.batch_size(self.model.device)
        with (
            releasing_claims(self.opened),
            contextlib.closing(RowCopier(self.plan)) as self.copier,
            cf.ThreadPoolExecutor(1, thread_name_prefix="write") as self.writer,
            Batcher(self.model, batch, cfg.steps, self.workers, self.take_features) as batcher,
            input_processes(self.family, self.workers) as self.procs,  # ended after the threads using them
            cf.ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool,
        ):
            videos = self.videos_to_decode(claimed)
            decoding: dict[cf.Future, tuple[AnyShard, int, VideoRecord]] = {}
            self.keep_decoders_busy(videos, decoding, pool, batcher)
            while decoding:
                t0 = time.perf_counter()
                ready, _ = cf.wait(decoding, return_when=cf.FIRST_COMPLETED)
                self.timings["wait"] += time.perf_counter() - t0
                for fut in ready:
                    shard, pos, rec = decoding.pop(fut)
                    if isinstance(shard, RaggedShardBuffer):
                        self.route_dense(fut.result(), shard, pos)
                    else:
                        self.route(fut.result(), shard, pos, rec, batcher)
                self.keep_decoders_busy(videos, decoding, pool, batcher)
        # Leaving the with block flushed the batcher (every feature is in its shard) and
        # waited for the writer.
        for f in self.writes:
            f.result()  # re-raise a write error (disk full) here, after the others finished
        self.timings.update(batcher.timings)
        return self.timings

    def videos_to_decode(
        self, claimed: Iterator[tuple[int, store.Claim | None]]
    ) -> Iterator[tuple[AnyShard, int, VideoRecord]]:
        """(shard, position, record) of every video to decode, shard after shard as claimed."""
        for index, claim in claimed:
            shard = self.open_shard(index, claim)
            self.opened.append(shard)
            stored = self.sink.rows_to_copy(index)
            if stored is not None:
                shard.reuse(stored)
            self.copier.fill(shard)
            if self.bar is not None:
                self.bar.update(int(shard.ok.sum()))  # copied rows are done too
            if shard.pending == 0:
                self.send_to_writer(shard)
            for pos, rec in enumerate(shard.records):
                if not shard.ok[pos]:
                    yield shard, pos, rec

    def open_shard(self, index: int, claim: store.Claim | None) -> AnyShard:
        """The buffer of shard `index`'s rows: ragged for a dense set, else (n, T, ...)."""
        records, clip = self.plan.shards[index], self.family.clip()
        length = clip.length if clip else None
        if self.plan.cfg.dense:
            return RaggedShardBuffer(index, records, claim, self.family.dim, self.family.flags, length)
        return ShardBuffer(index, records, self.plan.cfg.steps, claim, self.family.dim, self.family.flags, length)

    def keep_decoders_busy(self, videos: Iterator, decoding: dict, pool: cf.Executor, batcher: Batcher) -> None:
        """Start decodes until 2 x workers are in flight (or the listing is done)."""
        while len(decoding) < 2 * self.workers:
            if any(f.done() and f.exception() is not None for f in self.writes):
                return  # a write failed (disk full): stop here rather than decode the rest for nothing
            item = next(videos, None)
            if item is None:
                return
            shard, pos, rec = item
            if isinstance(shard, RaggedShardBuffer):
                decoding[pool.submit(self.decode_dense, shard, pos, rec, batcher)] = item
            else:
                decoding[pool.submit(self.decode, rec, batcher.slots)] = item

    def route(
        self,
        decoded: tuple[Decoded, int | None, dict[str, int]],
        shard: ShardBuffer,
        pos: int,
        rec: VideoRecord,
        batcher: Batcher,
    ) -> None:
        """A finished decode: its items to the batcher, or its failure to the shard."""
        dec, slot, flags = decoded
        self.timings["decode"] += dec.seconds
        if dec.error:
            # pending only drops once a video's features are out of the batch, so at zero
            # nothing of this shard is still waiting in it.
            error = dec.error
            self.count_down(shard, lambda: shard.fail(pos, error))
        else:
            shard.accept(pos, dec, flags)
            assert slot is not None, "a decoded video holds its slot"
            batcher.add(slot, len(dec.picture()[0]), (shard, pos))
        if self.bar is not None:
            self.bar.update(1)

    def route_dense(self, result: DenseResult, shard: RaggedShardBuffer, pos: int) -> None:
        """A dense video's decoding ended (its chunks are with the batcher already): its end, or its failure."""
        last, error, flags, seconds = result
        self.timings["decode"] += seconds
        self.count_down(shard, lambda: shard.ended(pos, last, flags, error))
        if self.bar is not None:
            self.bar.update(1)

    # -------------------------------------------------------------- on the decode threads
    def decode(self, rec: VideoRecord, slots: FrameSlots) -> tuple[Decoded, int | None, dict[str, int]]:
        """Decode one video into a free slot; (decoded, slot, flags), or (decoded with error, None, {})."""
        slot = slots.acquire()
        try:
            dec, flags = decode_items(self.family, self.job, rec.path, slots.arrays[slot], self.workers, self.procs)
        except BaseException:
            slots.release(slot)
            raise
        if dec.error:
            slots.release(slot)
            return dec, None, {}
        return dec, slot, flags

    def decode_dense(self, shard: RaggedShardBuffer, pos: int, rec: VideoRecord, batcher: Batcher) -> DenseResult:
        """Decode a dense video chunk by chunk, each chunk into a free slot and on to the batcher
        at once (its features come back to its rows in `shard`): memory does not grow with the
        video. Returns its last chunk, or why it failed (rows queued before are dropped then)."""
        t0 = time.perf_counter()
        held: list[int] = []  # slots taken for chunks not yet handed to the batcher
        flags: dict[str, int] = {}
        slots = batcher.slots

        def next_slot() -> np.ndarray:
            slot = slots.acquire()
            held.append(slot)
            return slots.arrays[slot]

        try:
            for chunk in dense_items(self.family, self.job, rec.path, next_slot, flags, self.procs):
                if len(chunk.timestamps):
                    rows = shard.add_chunk(pos, chunk)
                    batcher.add(held.pop(0), len(chunk.timestamps), (shard, pos, rows))
                if chunk.last:
                    return chunk, None, flags, chunk.seconds
            raise DecodeError("the decoder stopped before the end of the video")
        except DecodeError as e:
            return None, str(e), {}, time.perf_counter() - t0
        finally:
            for slot in held:  # taken for a chunk that never came
                slots.release(slot)

    # -------------------------------------------------------------- on the inference thread
    def take_features(self, owner: tuple, first: int, feats: np.ndarray, last: bool) -> None:
        """The batcher's sink: items [first, first + k) of a slot are embedded; the owner is
        (fixed-T shard, video) or (ragged shard, video, the chunk's rows)."""
        if len(owner) == 3:
            ragged, pos, rows = owner
            rows[first : first + len(feats)] = feats
            self.count_down(ragged, lambda: ragged.rows_embedded(pos, len(feats)))
            return
        shard, pos = owner
        shard.features[pos, first : first + len(feats)] = feats
        if last:
            self.count_down(shard, shard.embedded)

    # -------------------------------------------------------------- shards
    def count_down(self, shard: AnyShard, change: Callable[[], None]) -> None:
        """Apply a change that drops shard.pending; send the shard to the writer at zero."""
        with self.pending_lock:
            change()
            finished = shard.pending == 0
        if finished:
            self.send_to_writer(shard)

    def send_to_writer(self, shard: AnyShard) -> None:
        self.writes.append(self.writer.submit(self.write, shard))

    def write(self, shard: AnyShard) -> None:
        """On the writer thread: the shard file (tmp, fsync, rename), then the sink."""
        t0 = time.perf_counter()
        write_shard(self.plan, self.sink, shard)
        self.timings["write"] += time.perf_counter() - t0


def write_shard(plan: ExtractionPlan, sink: ShardSink, shard: AnyShard) -> None:
    """The shard's file (tmp, fsync, rename; its attributes name the set), then the sink."""
    attrs: dict[str, str | int] = {
        "feature_set_id": plan.identity.id,
        "config": json.dumps(plan.cfg.to_json(), sort_keys=True),
        "shard_index": shard.index,
        "identity": json.dumps(plan.identity.__dict__, sort_keys=True),
    }
    if isinstance(shard, RaggedShardBuffer):
        attrs["layout"] = "ragged"  # fixed-T shards have no such attribute: their bytes stay as they were
    entry = store.write_shard(sink.path(shard.index), shard.arrays(), attrs)
    if shard.copied:  # recorded in the manifest: which rows came from which set
        entry["copied"] = dict(shard.copied)
    sink.written(shard, entry)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to n for the block (None: left as they are)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def releasing_claims(shards: list[AnyShard]) -> Iterator[None]:
    """On the way out, release every claim still held (release is idempotent).

    A committed shard released its claim already; one a run could not finish (its write
    failed, the run stopped early) would otherwise stay locked until the process exits,
    and a retry in the same process (a test, a notebook, a Dask worker) would wait forever
    for its own claim: a flock is per open file, not per process.
    """
    try:
        yield
    finally:
        for shard in shards:
            if shard.claim is not None:
                shard.claim.release()


# ---------------------------------------------------------------- claims
def claim_free_shards(
    plan: ExtractionPlan, indices: list[int], reported_busy: set[int] | None = None
) -> Iterator[tuple[int, store.Claim]]:
    """Yield (index, held claim) for each listed shard nobody has committed or claimed.

    `reported_busy` remembers the shards already reported as computed elsewhere, so a run
    that polls while waiting for another one does not repeat itself.
    """
    reported_busy = set() if reported_busy is None else reported_busy
    for i in indices:
        claim, holder = claim_uncommitted(plan.set_dir, i)
        if holder and i not in reported_busy:
            reported_busy.add(i)
            console.say(f"helping: shard {i} is being computed by another run ({holder}); taking the next free one")
        if claim is not None:
            yield i, claim


def claim_uncommitted(set_dir: Path, i: int) -> tuple[store.Claim | None, str]:
    """(held claim, "") when shard i is ours to compute; (None, who holds it) when another
    run computes it; (None, "") when it was committed before we got the claim."""
    claim = store.Claim(set_dir, i)
    if not claim.acquire():
        return None, claim.holder() or "a live run"
    if i in committed_indices(set_dir):  # committed between our look and our claim
        claim.release()
        return None, ""
    return claim, ""
