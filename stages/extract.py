"""Stage one: decode every video, run the backbone, write shards, commit the manifest.

The pipeline inside one process:

    claim shard -> decode threads (each drives one ffmpeg process) -> frame slots (pinned)
    -> batcher (frames of many videos in one backbone batch, run on an inference thread
    with its own CUDA stream; stages/batching.py) -> shard buffer -> writer thread (fsync,
    rename, commit to the manifest)

Decoding is done by ffmpeg processes; the Python threads that drive them only wait on
pipes (the GIL is released), and ffmpeg's output is read straight into the slot the
backbone's copy reads from: no pickling, no intermediate copy. The main thread only
routes: decode, copies, inference and writes all overlap. Work is planned as fixed chunks of the sorted video list (shard i = videos
[i*S, (i+1)*S)), so a rerun, a second concurrent run, a Dask task or another GPU all
agree on what shard i holds, and a claim (flock) decides who computes it.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from pipeline import store
from pipeline.config import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD, SCHEMA_VERSION, ConfigError, ExtractConfig, FeatureIdentity
from pipeline.datasets import Dataset, VideoRecord, load_dataset

from .backbone import FeatureExtractor, WeightsSpec, resolve_device, resolve_precision, resolve_weights
from .batching import Batcher
from .decode import Decoded, check_ffmpeg, decode_threads, decode_video

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Everything known before any video is decoded."""

    cfg: ExtractConfig
    dataset: Dataset
    weights: WeightsSpec
    identity: FeatureIdentity
    set_dir: Path

    @property
    def plan(self) -> list[list[VideoRecord]]:
        """Shard i holds records[i*S:(i+1)*S] of the sorted listing."""
        r, s = self.dataset.records, self.cfg.shard_size
        return [r[i : i + s] for i in range(0, len(r), s)]


@dataclass
class Summary:
    feature_set_id: str
    set_dir: Path
    total: int = 0  # videos in the dataset listing
    computed: int = 0  # videos stored by this run
    reused: int = 0  # videos already committed before this run
    failed: int = 0  # failures recorded by this run
    elapsed: float = 0.0
    reused_set: bool = False  # the whole feature set already existed
    timings: dict = field(default_factory=dict)  # decode / backbone / write / wait seconds

    @property
    def videos_per_s(self) -> float:
        return (self.computed + self.failed) / self.elapsed if self.elapsed else 0.0

    def add_shard(self, stored: int, failures: list[dict], label: str = "failed") -> None:
        """Count a committed shard's newly stored videos and its failures; log each failure."""
        self.computed += stored
        self.failed += len(failures)
        for f in failures:
            log.warning("%s: %s: %s", label, f["video_id"], f["reason"])

    def add_timings(self, timings: dict) -> None:
        """Sum another run_shards' (or process's) seconds and counts into this summary's."""
        for k, v in timings.items():
            self.timings[k] = self.timings.get(k, 0) + v


def make_identity(cfg: ExtractConfig, ds: Dataset, weights: WeightsSpec, precision: str) -> FeatureIdentity:
    sampling = {"mode": "fps", "fps": cfg.fps, "max_frames": cfg.frames} if cfg.fps else {"mode": "uniform", "frames": cfg.frames}
    return FeatureIdentity(
        schema_version=SCHEMA_VERSION, dataset=cfg.dataset_name, videos_sha256=ds.listing_sha256,
        backbone=cfg.backbone, weights=weights.identity, sampling=sampling, image_size=cfg.image_size,
        resize=cfg.resize_to, crop="center", normalisation={"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        precision=precision,
    )


def compute_precision(cfg: ExtractConfig) -> str:
    """The precision the backbone will run at (auto: fp16 on CUDA, fp32 on CPU)."""
    device = cfg.devices[0] if cfg.devices else cfg.device
    if cfg.scheduler and device.startswith("cuda"):
        # On Dask the GPUs are the workers'; the driver (a login node) may have none.
        return resolve_precision(cfg.precision, torch.device("cuda"))
    if cfg.scheduler and not cfg.scheduler.startswith("local:") and device == "auto" and cfg.precision == "auto":
        # The precision is part of the feature-set id, fixed before any worker is asked what
        # it has; this driver's own device says nothing about a remote cluster's.
        raise ConfigError(f"--device (DEVICE=) auto with --scheduler {cfg.scheduler}: say what the workers run on, "
                          f"DEVICE=cuda (GPU workers, fp16) or DEVICE=cpu (fp32), or set PRECISION=")
    return resolve_precision(cfg.precision, resolve_device(device))


def prepare(cfg: ExtractConfig, download: bool = True) -> Prepared:
    """List the dataset, resolve the weights, and derive the feature-set id and directory."""
    precision = compute_precision(cfg)  # first: DEVICE=cuda without CUDA fails before the sample is generated
    ds = load_dataset(cfg)
    if not ds.records:
        raise store.StoreError(f"no videos found under {ds.video_root}")
    weights = resolve_weights(cfg.weights, cfg.seed, fallback_to_random=cfg.dataset == "sample",
                              download_timeout=20.0 if download else 0.001)
    identity = make_identity(cfg, ds, weights, precision)
    return Prepared(cfg, ds, weights, identity, cfg.store_root / cfg.dataset_name / identity.id)


def default_feature_set(dataset: str = "sample", features_root: Path | None = None, **overrides) -> Path:
    """Directory of the feature set stage one's defaults produce for `dataset` (no download)."""
    return prepare(ExtractConfig(dataset=dataset, features_root=features_root, **overrides), download=False).set_dir


# ---------------------------------------------------------------- the feature set on disk
def open_feature_set(p: Prepared) -> dict:
    """Create the set directory and its manifest if absent; return the manifest."""
    try:  # a complete set needs no lock (its manifest is replaced atomically): read-only users reuse it too
        manifest = store.load_manifest(p.set_dir)
        if manifest["complete"]:
            return manifest
    except (store.StoreError, OSError):  # none yet (or an unusable path, reported just below)
        pass
    try:
        p.set_dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(p.set_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o664))  # what store.locked needs
    except OSError as e:
        raise store.StoreError(f"--features-root (FEATURES_ROOT=): cannot write the feature set at {p.set_dir} "
                               f"({e.strerror or e}); point FEATURES_ROOT at a directory you can write") from None
    with store.locked(p.set_dir):
        try:
            return store.load_manifest(p.set_dir)
        except store.StoreError:
            if (p.set_dir / store.MANIFEST).exists():
                raise
        ds, cfg = p.dataset, p.cfg
        manifest = {
            "schema_version": SCHEMA_VERSION, "feature_set_id": p.identity.id, "dataset": cfg.dataset_name,
            "identity": json.loads(json.dumps(p.identity.__dict__)), "config": cfg.to_json() | {"precision": p.identity.precision},
            "frames": cfg.frames, "feature_dim": FEATURE_DIM, "video_root": str(ds.video_root),
            "classes": ds.classes, "splits": ds.splits, "num_videos": len(ds.records),
            "shard_size": cfg.shard_size, "num_shards": len(p.plan), "shards": [],
            "unlisted_failures": ds.problems, "complete": False, "created_at": store.now_iso(),
        }
        store.write_manifest(p.set_dir, manifest)
        return manifest


def committed_indices(set_dir: Path) -> set[int]:
    return {s["index"] for s in store.load_manifest(set_dir)["shards"]}


# ---------------------------------------------------------------- per-shard buffers
class ShardBuffer:
    """Rows of one shard while its videos are decoded and embedded.

    features (n, T, D) float16 (zeros where padded); frame_indices (n, T) int32 (-1 pad);
    timestamps (n, T) float32 s (NaN pad); lengths (n,) int32.
    """

    def __init__(self, index: int, records: list[VideoRecord], frames: int, claim: store.Claim | None):
        n = len(records)
        self.index, self.records, self.claim = index, records, claim
        self.features = np.zeros((n, frames, FEATURE_DIM), np.float16)
        self.frame_indices = np.full((n, frames), -1, np.int32)
        self.timestamps = np.full((n, frames), np.nan, np.float32)
        self.lengths = np.zeros(n, np.int32)
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
        row = {vid: k for k, vid in enumerate(stored["video_ids"])}
        for pos, rec in enumerate(self.records):
            k = row.get(rec.video_id)
            if k is None:
                continue
            self.features[pos] = stored["features"][k]
            self.lengths[pos], self.ok[pos] = stored["lengths"][k], True
            self.frame_indices[pos] = stored["frame_indices"][k]
            self.timestamps[pos] = stored["timestamps"][k]
            self.pending -= 1

    def accept(self, pos: int, dec: Decoded) -> None:
        k = len(dec.frames)
        self.lengths[pos], self.ok[pos] = k, True
        self.frame_indices[pos, :k] = dec.indices
        self.timestamps[pos, :k] = dec.timestamps

    def arrays(self) -> dict[str, np.ndarray]:
        keep = self.ok
        recs = [r for r, k in zip(self.records, keep) if k]
        return {
            "features": self.features[keep], "lengths": self.lengths[keep],
            "labels": np.array([r.label for r in recs], np.int32).reshape(-1),
            "video_ids": [r.video_id for r in recs], "groups": [r.group for r in recs],
            "frame_indices": self.frame_indices[keep], "timestamps": self.timestamps[keep],
        }


# ---------------------------------------------------------------- the pipeline
def claim_shards(p: Prepared, indices: list[int], say: Callable[[str], None], told: set[int] | None = None) -> Iterator[tuple[int, store.Claim]]:
    """Yield (index, held claim) for each listed shard nobody has committed or claimed.

    `told` remembers the shards already reported as taken, so a run that polls while
    waiting for another one does not repeat itself.
    """
    told = set() if told is None else told
    for i in indices:
        claim, holder = claim_uncommitted(p.set_dir, i)
        if holder and i not in told:
            told.add(i)
            say(f"helping: shard {i} is being computed by another run ({holder}); taking the next free one")
        if claim is not None:
            yield i, claim


def claim_uncommitted(set_dir: Path, i: int) -> tuple[store.Claim | None, str]:
    """(held claim, "") when shard i is ours to compute; (None, who holds it) when another
    run computes it; (None, "") when it was committed before we got the claim."""
    claim = store.Claim(set_dir, i)
    if not claim.acquire():
        return None, claim.path.read_text().strip() or "a live run"
    if i in committed_indices(set_dir):  # committed between our look and our claim
        claim.release()
        return None, ""
    return claim, ""


def backbone_batch(cfg: ExtractConfig, device: torch.device) -> int:
    """Frames per backbone batch: GPU_BATCH=, else 512 on CUDA (13,900 images/s on the H100
    in fp16, DESIGN.md; larger batches gain nothing) and 32 on a CPU."""
    return cfg.gpu_batch or (512 if device.type == "cuda" else 32)


@contextlib.contextmanager
def releasing_claims(shards: list[ShardBuffer]) -> Iterator[None]:
    """On the way out, release every claim still held (release is idempotent).

    A committed shard released its claim already; one this run could not finish (its
    write failed, the run stopped early) would otherwise stay locked until the process
    exits, and a retry in the same process (a test, a notebook, a Dask worker) would
    wait forever for its own claim: a flock is per open file, not per process.
    """
    try:
        yield
    finally:
        for shard in shards:
            if shard.claim is not None:
                shard.claim.release()


def run_shards(p: Prepared, claimed: Iterator[tuple[int, store.Claim | None]], extractor: FeatureExtractor,
               on_written: Callable[[ShardBuffer, dict], None], progress: tqdm | None = None,
               shard_path: Callable[[int], Path] | None = None,
               stored: Callable[[int], dict] | None = None) -> dict:
    """Decode, embed and write the claimed shards; return timings in seconds.

    Decoders write frames into the batcher's fixed pool of slots (stages/batching.py),
    and at most 2x`workers` videos are in flight, plus the shards in progress, so host
    memory stays bounded whatever the dataset size. `shard_path(index)` is where a
    shard is written (default: its final name); a Dask task writes to a staged name
    that only the driver renames into place (stages/distributed.py). `stored(index)`, when
    given, returns a committed shard's arrays whose videos are copied, not decoded
    (`--retry-failures`).

    Timings: decode (decoder-seconds, summed over the workers), transfer and backbone
    (host-to-device copies and inference, GPU time on CUDA), scatter, write (the writer
    thread), wait (main thread waiting for decoders), feed_wait (main thread waiting for
    the backbone), starved (inference thread waiting for frames); images, batches.
    """
    cfg, plan = p.cfg, p.plan
    workers = cfg.workers or os.cpu_count() or 1
    threads = decode_threads(workers)
    batch = backbone_batch(cfg, extractor.device)
    timings = {"decode": 0.0, "write": 0.0, "wait": 0.0}
    writes: list[cf.Future] = []
    # ShardBuffer.pending drops on the main thread (a failed video) and on the inference
    # thread (a video's last features): the lock makes "reached zero" happen exactly once.
    pending_lock = threading.Lock()

    def write(shard: ShardBuffer) -> None:
        t0 = time.perf_counter()
        arrays = shard.arrays()
        attrs = {"feature_set_id": p.identity.id, "config": json.dumps(cfg.to_json(), sort_keys=True), "shard_index": shard.index,
                 "identity": json.dumps(p.identity.__dict__, sort_keys=True)}
        path = shard_path(shard.index) if shard_path else p.set_dir / store.shard_name(shard.index)
        entry = store.write_shard(path, arrays, attrs)
        on_written(shard, entry)
        timings["write"] += time.perf_counter() - t0

    def settle(shard: ShardBuffer, change: Callable[[], None]) -> None:
        """Apply a change that drops shard.pending; send the shard to the writer at zero."""
        with pending_lock:
            change()
            finished = shard.pending == 0
        if finished:
            shard_done(shard)

    def take_features(owner: tuple[ShardBuffer, int], first: int, feats: np.ndarray, last: bool) -> None:
        shard, pos = owner  # on the inference thread
        shard.features[pos, first : first + len(feats)] = feats
        if last:
            settle(shard, shard.embedded)

    def decode(rec: VideoRecord, slots) -> tuple[Decoded, int | None]:
        slot = slots.acquire()  # on a decode thread
        try:
            dec = decode_video(rec.path, cfg.frames, cfg.image_size, cfg.resize_to, cfg.fps, cfg.timeout,
                               out=slots.arrays[slot], threads=threads)
        except BaseException:
            slots.release(slot)
            raise
        if dec.error:
            slots.release(slot)
            return dec, None
        return dec, slot

    opened: list[ShardBuffer] = []
    with releasing_claims(opened), \
            cf.ThreadPoolExecutor(1, thread_name_prefix="write") as writer, \
            Batcher(extractor, batch, cfg.frames, cfg.image_size, workers, take_features) as batcher, \
            cf.ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        def shard_done(shard: ShardBuffer) -> None:
            writes.append(writer.submit(write, shard))

        def tasks() -> Iterator[tuple[ShardBuffer, int, VideoRecord]]:
            for index, claim in claimed:
                shard = ShardBuffer(index, plan[index], cfg.frames, claim)
                opened.append(shard)
                if stored is not None:
                    shard.reuse(stored(index))
                if shard.pending == 0:
                    shard_done(shard)
                for pos, rec in enumerate(shard.records):
                    if not shard.ok[pos]:
                        yield shard, pos, rec

        source, inflight = tasks(), {}

        def top_up() -> None:
            while len(inflight) < 2 * workers:
                if any(f.done() and f.exception() is not None for f in writes):
                    return  # a write failed (disk full): stop here rather than decode the rest for nothing
                item = next(source, None)
                if item is None:
                    return
                inflight[pool.submit(decode, item[2], batcher.slots)] = item

        top_up()
        while inflight:
            t0 = time.perf_counter()
            ready, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            timings["wait"] += time.perf_counter() - t0
            for fut in ready:
                shard, pos, rec = inflight.pop(fut)
                dec, slot = fut.result()
                timings["decode"] += dec.seconds
                if dec.error:
                    # pending only drops once a video's features are out of the batch,
                    # so at zero nothing of this shard is still waiting in it.
                    settle(shard, lambda: shard.fail(pos, dec.error))
                else:
                    shard.accept(pos, dec)
                    batcher.add(slot, len(dec.frames), (shard, pos))
                if progress is not None:
                    progress.update(1)
            top_up()
    # Leaving the with block flushed the batcher (every feature is in its shard) and
    # waited for the writer.
    for f in writes:
        f.result()  # re-raise a write error (disk full) here, after the others finished
    timings.update(batcher.timings)
    return timings


def commit_locally(p: Prepared, summary: Summary) -> Callable[[ShardBuffer, dict], None]:
    def on_written(shard: ShardBuffer, entry: dict) -> None:
        store.commit_shard(p.set_dir, shard.index, entry, shard.failures)
        if shard.claim is not None:
            shard.claim.release()
        summary.add_shard(entry["videos"], shard.failures)
    return on_written


def extract_features(cfg: ExtractConfig, quiet: bool = False) -> Summary:
    """Stage one for a whole dataset; computes only what the store does not hold yet."""
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    check_ffmpeg()
    p = prepare(cfg)
    manifest = open_feature_set(p)
    summary = Summary(p.identity.id, p.set_dir, total=len(p.dataset.records))
    # --retry-failures retries what earlier runs recorded, not what this run just saw fail.
    earlier_failures = {s["index"] for s in manifest["shards"] if s.get("failures")}
    if manifest["shard_size"] != cfg.shard_size:
        # Shard i must hold the same videos for every run that works on this set, and the
        # shard size is not part of its identity (it changes no number): the set's wins.
        if not manifest["complete"]:
            say(f"feature set {p.identity.id} was started with --shard-size {manifest['shard_size']}; "
                f"continuing with that (not {cfg.shard_size})")
        p = dataclasses.replace(p, cfg=cfg.replace(shard_size=manifest["shard_size"]))
    if manifest["complete"]:
        summary.reused, summary.reused_set = manifest["num_stored"], True
        say(f"reusing feature set {p.identity.id}: complete, {manifest['num_stored']} videos "
            f"(computed {manifest.get('completed_at', manifest['created_at'])}); nothing to compute"
            + (f"; {manifest['num_failed']} failed video(s) listed in {p.set_dir / store.FAILURES} "
               f"(rerun with --retry-failures / RETRY_FAILURES=1 to try them again)"
               if manifest["num_failed"] and not cfg.retry_failures else ""))
        if cfg.retry_failures:
            from .retry import retry_failed
            retry_failed(p, summary, say, earlier_failures)
            if not quiet:
                print_summary(summary, store.load_manifest(p.set_dir))
        summary.elapsed = time.perf_counter() - t_start
        return summary
    # Under the claim or lock that guards each file: a plain unlink could race a live run
    # that is rewriting its manifest temp file (same name every time) at this moment.
    removed = store.remove_garbage(p.set_dir)
    if removed:
        say(f"removed {len(removed)} temp file(s) or uncommitted shard(s) left by an interrupted run")
    summary.reused = manifest["num_stored"]
    if cfg.scheduler:
        from .distributed import extract_on_dask
        extract_on_dask(p, summary, say)
    elif len(cfg.devices) > 1:
        extract_on_devices(p, summary, say)
    else:
        extract_here(p, summary, say)
    final = store.mark_complete(p.set_dir)
    if cfg.retry_failures and final["complete"]:
        from .retry import retry_failed
        retry_failed(p, summary, say, earlier_failures)
        final = store.load_manifest(p.set_dir)
    summary.elapsed = time.perf_counter() - t_start
    if not quiet:
        print_summary(summary, final)
    return summary


def start_extractor(p: Prepared) -> FeatureExtractor:
    """The backbone on this run's (first) device, loading in the background.

    The model loads (and on CUDA runs one batch, so cuDNN's kernel search is paid too)
    on a thread of its own while the decoders already fill their slots.
    """
    device = p.cfg.devices[0] if p.cfg.devices else p.cfg.device
    return FeatureExtractor(p.weights, device, p.identity.precision, p.cfg.compile, background=True,
                            warm_up=(backbone_batch(p.cfg, resolve_device(device)), p.cfg.image_size))


def extract_here(p: Prepared, summary: Summary, say: Callable[[str], None], show_progress: bool = True) -> None:
    """Compute every uncommitted shard in this process, helping or waiting for other runs."""
    missing = [i for i in range(len(p.plan)) if i not in committed_indices(p.set_dir)]
    if not missing:
        return
    extractor = start_extractor(p)
    say(f"feature set {p.identity.id}: {len(missing)} of {len(p.plan)} shards to compute on {extractor.device} "
        f"({extractor.precision}), {p.cfg.workers or os.cpu_count()} decoders")
    todo = sum(len(p.plan[i]) for i in missing)
    waited, told = False, set()
    with tqdm(total=todo, unit="video", desc="stage one", dynamic_ncols=True, mininterval=1.0, file=sys.stderr,
              disable=not show_progress) as bar:
        while missing:
            summary.add_timings(run_shards(p, claim_shards(p, missing, say, told), extractor, commit_locally(p, summary), bar))
            missing = [i for i in range(len(p.plan)) if i not in committed_indices(p.set_dir)]
            if missing:
                if not waited:
                    say(f"waiting: {len(missing)} shard(s) are being computed by another run; "
                        f"this run takes them over if that run dies")
                    waited = True
                time.sleep(0.5)
    extractor.ready()  # a model that failed to load fails the run even if no video reached it
    summary.timings["model_load"] = extractor.build_seconds  # seconds, overlapped with the first decodes


def extract_on_devices(p: Prepared, summary: Summary, say: Callable[[str], None]) -> None:
    """One process per device (DEVICES=cuda:0,cuda:1); the shard claims share the work.

    Every process gets this run's `Prepared` with only its device and its share of the
    decoders changed: nothing is listed, hashed or resolved again, so all of them write
    the one feature set this run opened, at the precision in its identity (mixed devices
    included). The processes stay quiet; this one draws the progress bar from the manifest.
    """
    from joblib import Parallel, delayed

    n = len(p.cfg.devices)
    per = max(1, (p.cfg.workers or os.cpu_count() or 1) // n)
    shares = [dataclasses.replace(p, cfg=p.cfg.replace(devices=(d,), device=d, workers=per)) for d in p.cfg.devices]
    say(f"one backbone process per device: {', '.join(p.cfg.devices)} ({per} decoders each, {p.identity.precision})")
    with follow_manifest(p):
        results = Parallel(n_jobs=n, backend="loky")(delayed(device_worker)(share, k) for k, share in enumerate(shares))
    for r in results:  # each process logged its own failures
        summary.computed += r.computed
        summary.failed += r.failed
        summary.add_timings(r.timings)


def device_worker(p: Prepared, k: int) -> Summary:
    """Body of device process `k`: extract_here on p.cfg.device, without a bar of its own."""
    def say(msg: str) -> None:
        if not msg.startswith(("helping:", "waiting:")):  # siblings sharing shards is the plan, not news
            print(f"[{p.cfg.device} #{k}] {msg}", file=sys.stderr, flush=True)

    device = torch.device(p.cfg.device)
    if device.type == "cuda" and device.index is not None:
        # This process's current device, before anything touches CUDA: pinned host memory
        # and contexts go to its GPU, not to cuda:0 (which EXCLUSIVE_PROCESS would refuse).
        torch.cuda.set_device(device)
    summary = Summary(p.identity.id, p.set_dir)
    extract_here(p, summary, say, show_progress=False)
    return summary


@contextlib.contextmanager
def follow_manifest(p: Prepared, poll: float = 1.0) -> Iterator[None]:
    """A progress bar over videos (stored or failed) that other processes commit."""
    def settled() -> int:
        return sum(s["videos"] + len(s.get("failures", [])) for s in store.load_manifest(p.set_dir)["shards"])

    done = committed_indices(p.set_dir)
    todo = sum(len(recs) for i, recs in enumerate(p.plan) if i not in done)
    start, stop = settled(), threading.Event()

    def follow() -> None:
        with tqdm(total=todo, unit="video", desc="stage one", dynamic_ncols=True, mininterval=1.0, file=sys.stderr) as bar:
            while not stop.wait(poll):
                bar.update(settled() - start - bar.n)
            bar.update(settled() - start - bar.n)

    thread = threading.Thread(target=follow, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def print_summary(s: Summary, manifest: dict) -> None:
    t = s.timings
    where = ", ".join(f"{k} {t[k]:.1f}s" for k in ("decode", "backbone", "write", "wait") if k in t)
    print(
        f"\nstage one {'complete' if manifest['complete'] else 'INCOMPLETE'}: {s.feature_set_id}\n"
        f"  done {s.computed}, reused {s.reused}, failed {s.failed} (this run) / {manifest['num_failed']} (set), "
        f"total {s.total} videos\n"
        f"  elapsed {s.elapsed:.1f} s, {s.videos_per_s:.2f} videos/s" + (f"  [{where}]" if where else "") + "\n"
        f"  features: {s.set_dir}\n"
        + (f"  failures: {s.set_dir / store.FAILURES}\n" if manifest["num_failed"] else ""),
        flush=True,
    )


def config_from_manifest(manifest: dict, **overrides) -> tuple[ExtractConfig, WeightsSpec]:
    """The extraction settings and the exact weights a feature set was computed with."""
    fields = set(ExtractConfig.__dataclass_fields__)
    raw = {k: v for k, v in manifest["config"].items() if k in fields}
    raw["devices"] = tuple(raw.get("devices") or ())
    weights_id = manifest["identity"]["weights"]
    if weights_id.startswith("random:"):  # includes a sample set made when ImageNet was unreachable
        raw["weights"], raw["seed"] = "random", int(weights_id.split("seed")[1])
    cfg = ExtractConfig(**(raw | {"scheduler": None, "devices": ()} | overrides))
    spec = resolve_weights(cfg.weights, cfg.seed)
    if spec.identity != weights_id:
        raise store.StoreError(f"the weights now at {cfg.weights!r} ({spec.identity}) are not the ones this feature set used ({weights_id})")
    return cfg, spec


def extract_video(path: Path, cfg: ExtractConfig, spec: WeightsSpec, extractor: FeatureExtractor | None = None) -> tuple[np.ndarray, int]:
    """Stage one for one video file: features (T, 2048) float16 zero-padded, and its length."""
    check_ffmpeg()
    dec = decode_video(Path(path), cfg.frames, cfg.image_size, cfg.resize_to, cfg.fps, cfg.timeout)
    if dec.error:
        raise ValueError(f"{path}: {dec.error}")
    extractor = extractor or FeatureExtractor(spec, cfg.device, cfg.precision)
    out = np.zeros((cfg.frames, FEATURE_DIM), np.float16)
    out[: len(dec.frames)] = extractor.extract(torch.from_numpy(np.ascontiguousarray(dec.frames)))
    return out, len(dec.frames)
