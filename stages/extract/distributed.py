"""Stage one on a Dask cluster: one task per shard, the driver commits.

    driver (extract_features)                   Dask workers (one per GPU, or CPU workers)
    ---------------------------                 -------------------------------------------
    claim shard i (flock) ──submit(i)──────────► ShardRunner for shard i, as a local run does
                                                 write shard-0000i.h5.tmp-dask-<host>-<pid>-<tag>
    rename it to shard-0000i.h5 ◄──entry, failures── (tmp + fsync + rename, store.write_shard)
    commit_shard(i), release the claim

Why the driver holds the claims, not the workers: the process that renames a file to
`shard-0000i.h5` must hold claim i from before it checks "not committed" until after it
commits, or a concurrent run could replace a committed shard with other bytes. On Dask
the committer is the driver, so the driver claims, and a task writes to a name of its
own. This also makes retries trivial: a task whose worker died is simply run again
elsewhere (by Dask's own rescheduling, or `retries=`), an attempt that was written but
never reported is just a stray staged file (removed at the end, or by `store gc`), and
only the attempt whose result reached the driver is ever renamed and committed. A
second commit of the same index is ignored by `store.commit_shard`, so no video is
stored twice. A concurrent local run sees the driver's claims and helps elsewhere.

The cluster: `SCHEDULER=local:N` starts N single-thread worker processes on 127.0.0.1
(on a machine with GPUs, each sees one of them, dealt round-robin, as `cuda`);
`SCHEDULER=tcp://host:8786` connects to a running one.
GPU clusters follow dask-cuda: one worker process per GPU, each seeing its GPU as
`cuda` through CUDA_VISIBLE_DEVICES (`dask cuda worker`, or one `dask worker` per GPU),
and advertising `--resources GPU=1`; when workers advertise GPUs, tasks ask for one,
so CPU-only workers in the same cluster take no backbone work. Datasets, weights files
and FEATURES_ROOT must be visible at the same paths on every worker and on the driver.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import torch

from pipeline import console, store
from pipeline.errors import ConfigError, StoreError
from pipeline.files import TMP_MARK, fsync_dir

from .config import ExtractConfig
from .copying import index_committed
from .decode import require_decoder
from .errors import ClusterError, WeightsError
from .extractors import Extractor
from .model_thread import ModelThread
from .plan import ExtractionPlan, committed_indices
from .runner import AnyShard, ShardRunner, Summary, claim_uncommitted
from .weights import WeightsSpec, on_worker

RETRIES = 2  # re-runs of a task that raised (a worker's death is rescheduled by Dask on top)
CONNECT_TIMEOUT = 30.0  # seconds to reach a scheduler
WORKER_TIMEOUT = 120.0  # seconds to wait for a first worker to join


def staged_name(index: int) -> str:
    """A name unique to one task attempt; it carries store.TMP_MARK, so gc knows it."""
    return f"{store.shard_name(index)}{TMP_MARK}dask-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- on a worker
_MODELS: dict[tuple, ModelThread] = {}
_MODELS_LOCK = threading.Lock()


class StagedForDriver:
    """A Dask task's sink: the shard goes to a name of this attempt's own; the driver commits it."""

    def __init__(self, plan: ExtractionPlan, index: int):
        self.staged = plan.set_dir / staged_name(index)
        self.written_as: dict = {}

    def path(self, index: int) -> Path:
        return self.staged

    def rows_to_copy(self, index: int) -> dict | None:
        return None

    def written(self, shard: AnyShard, entry: dict) -> None:
        self.written_as = {"entry": entry, "failures": shard.failures}


def compute_shard(job: ExtractionPlan, workers_per_host: dict[str, int]) -> dict:
    """Task body: decode, embed and write the job's one shard under a staged name.

    Returns {"index", "staged" (file name), "entry" (manifest entry, bytes/sha256 of
    the staged file), "failures" ([{"video_id", "reason"}]), "worker", "device",
    "timings"}. Nothing is committed here; the driver renames and commits.
    """
    require_decoder(job.cfg.decoder)  # fail the task at once, with the install hint, on a worker without ffmpeg
    (index,) = job.shards
    host = worker_host()
    job = job.with_config(workers=decoders_here(job.cfg, workers_per_host.get(host, 1)))
    device = worker_device(job.cfg.device, host)
    warm_up = job.family.batch_size(torch.device(device))
    model = cached_model(job.family, job.required_weights, device, job.precision, job.cfg.compile, warm_up)
    sink = StagedForDriver(job, index)
    timings = ShardRunner(job, model, sink).run(iter([(index, None)]))
    return {
        "index": index,
        "staged": sink.staged.name,
        **sink.written_as,
        "worker": host,
        "device": str(model.device),
        "timings": timings,
    }


def worker_host() -> str:
    """This worker's host as the scheduler knows it (falls back to the hostname outside Dask)."""
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        return get_address_host(get_worker().address)
    except (ImportError, ValueError):
        return socket.gethostname()


def decoders_here(cfg: ExtractConfig, siblings: int) -> int:
    """Decoders for this worker: WORKERS=, else its share of this host's cores.

    A worker pinned to some cores (dask-cuda pins each GPU worker to its NUMA node) uses
    all of those; an unpinned one shares the host's cores with its sibling workers.
    """
    if cfg.workers:
        return cfg.workers
    total = os.cpu_count() or 1
    mine = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return mine if mine < total else max(1, total // max(1, siblings))


def worker_device(device: str, host: str) -> str:
    """The torch device of this worker: its one visible GPU (dask-cuda style) or the CPU."""
    if device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        # One worker per GPU: CUDA_VISIBLE_DEVICES shows it the GPU it owns as cuda:0.
        n = device.removeprefix("cuda:")
        return device if n.isdigit() and int(n) < torch.cuda.device_count() else "cuda"
    if device == "auto":
        return "cpu"
    raise ConfigError(
        f"--device {device!r}: Dask worker on {host} has no CUDA device; "
        f"start GPU workers with `dask cuda worker` (or CUDA_VISIBLE_DEVICES=k dask worker ...)"
    )


def cached_model(
    family: Extractor, spec: WeightsSpec, device: str, precision: str, compile: bool, warm_up: int | None = None
) -> ModelThread:
    """One model per worker process, built (and warmed up) by its first task and kept
    for the next ones, with its thread: the cuDNN kernels chosen once serve every task."""
    key = (family.family, family.item_shape(), spec.identity, device, precision, compile, warm_up)
    with _MODELS_LOCK:
        if key not in _MODELS:
            for old in _MODELS.values():  # a GPU holds one model at a time; a new run drops the old one
                old.close()
            _MODELS.clear()
            _MODELS[key] = ModelThread(family, weights_here(family, spec), device, precision, compile, warm_up=warm_up)
        return _MODELS[key]


def weights_here(family: Extractor, spec: WeightsSpec) -> WeightsSpec:
    """The driver's weights on this worker (weights.on_worker: the same file, or this worker's
    own cache of the published ones)."""
    return on_worker(spec, family.resolve_weights, socket.gethostname(), family.family)


# ---------------------------------------------------------------- the cluster
def parse_local(scheduler: str) -> int:
    """local:N -> N worker processes."""
    n = scheduler.removeprefix("local:")
    if not n.isdigit() or int(n) < 1:
        raise ConfigError(f"--scheduler (SCHEDULER=): expected local:N with N >= 1 workers, got {scheduler!r}")
    return int(n)


def local_gpus(device: str) -> list[str]:
    """The GPUs a local cluster's workers share out: CUDA_VISIBLE_DEVICES's entries, or 0..n-1.

    None for DEVICE=cpu, or where this machine has no CUDA device.
    """
    if device == "cpu":
        return []
    count = torch.cuda.device_count()  # NVML's count: no CUDA context in the driver
    if not count:
        return []
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[:count] if visible else [str(k) for k in range(count)]


def start_local_cluster(n: int, gpus: list[str]):
    """N single-thread worker processes on 127.0.0.1; with GPUs, dask-cuda style.

    Worker k sees GPU gpus[k % len(gpus)] alone, as `cuda` (CUDA_VISIBLE_DEVICES set by
    its nanny before the process starts), and advertises GPU=1, so tasks spread over all
    of the machine's GPUs instead of all landing on cuda:0.
    """
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    if not gpus:
        return LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    workers = {
        k: {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "host": "127.0.0.1",
                "silence_logs": logging.ERROR,
                "env": {"CUDA_VISIBLE_DEVICES": gpus[k % len(gpus)]},
                "resources": {"GPU": 1},
                # distributed's GPU monitor asks NVML for the device at CUDA_VISIBLE_DEVICES'
                # index, which fails the worker's start ("Nanny failed to start") wherever
                # that is not a plain index NVML knows (MIG, a UUID, a container's renumbering)
                # (dotted: the nanny merges this shallowly over the whole config, then sets it)
                "config": {"distributed.diagnostics.nvml": False},
            },
        }
        for k in range(n)
    }
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR)


def connect(scheduler: str, device: str = "auto"):
    """(client, cluster or None) for SCHEDULER=local:N or tcp://host:port."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError(f"--scheduler {scheduler!r} needs dask.distributed: pip install 'vidstore[dask]'") from None
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # Dask logs every connection at INFO; this module says what matters (-v shows it all).
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler.startswith("local:"):
        n = parse_local(scheduler)
        gpus = local_gpus(device)
        console.say(
            f"dask: starting a local cluster of {n} worker process(es) on 127.0.0.1"
            + (f", each with one of GPU(s) {','.join(gpus)}" if gpus else "")
        )
        cluster = start_local_cluster(n, gpus)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT), None
    except (OSError, TimeoutError) as e:
        raise ClusterError(
            f"--scheduler (SCHEDULER=): no Dask scheduler answers at {scheduler} ({e}); "
            f"start one with `dask scheduler` and workers with `dask worker {scheduler}`"
        ) from None


def workers_of(client) -> dict[str, dict]:
    """address -> scheduler's record of each worker (host, nthreads, resources, ...)."""
    return client.scheduler_info(n_workers=-1)["workers"]


def describe_cluster(workers: dict[str, dict]) -> str:
    hosts = collections.Counter(w["host"] for w in workers.values())
    gpus = sum(w.get("resources", {}).get("GPU", 0) for w in workers.values())
    return (
        f"{len(workers)} worker(s) on {len(hosts)} host(s), {sum(w['nthreads'] for w in workers.values())} thread(s), "
        + (
            f"{gpus:g} GPU(s) advertised"
            if gpus
            else "no GPU resources advertised (CPU workers, or GPUs without --resources GPU=1)"
        )
    )


# ---------------------------------------------------------------- the driver
def extract_on_dask(plan: ExtractionPlan, summary: Summary) -> None:
    """Compute every uncommitted shard of the plan on the Dask cluster named by plan.cfg.scheduler."""
    if not plan.cfg.scheduler:
        raise ValueError("extract_on_dask needs --scheduler (SCHEDULER=)")
    client, cluster = connect(plan.cfg.scheduler, plan.cfg.device)
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
        except TimeoutError:
            raise ClusterError(
                f"--scheduler {plan.cfg.scheduler}: no worker joined within {WORKER_TIMEOUT:.0f} s; "
                f"start some with `dask worker {plan.cfg.scheduler} --nthreads 1`"
            ) from None
        Driver(plan, summary, client).run()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    # Attempts that were written but never reported (their worker died after writing).
    removed = store.remove_garbage(plan.set_dir)
    if removed:
        console.say(f"dask: removed {len(removed)} file(s) of task attempts lost with their workers")


class Driver:
    """Claims shards, keeps a bounded window of tasks in flight, commits what comes back."""

    def __init__(self, plan: ExtractionPlan, summary: Summary, client):
        self.plan, self.summary, self.client = plan, summary, client
        self.claims: dict[int, store.Claim] = {}  # shards this driver holds (in flight)
        self.inflight: dict = {}  # future -> shard index
        self.elsewhere: set[int] = set()  # shards another run is computing
        self.errors: dict[int, BaseException] = {}
        self.stopping = False  # a task failed for good: finish what runs, start nothing new
        self.videos = 0
        self.t0 = time.perf_counter()

    def run(self) -> None:
        p = self.plan
        done = committed_indices(p.set_dir)
        todo = collections.deque(i for i in p.shards if i not in done)
        if not todo:
            return
        workers = workers_of(self.client)
        self.workers_per_host = dict(collections.Counter(w["host"] for w in workers.values()))
        self.resources = {"GPU": 1} if any(w.get("resources", {}).get("GPU") for w in workers.values()) else None
        self.window = max(2, 2 * sum(w["nthreads"] for w in workers.values()))
        console.say(f"dask: scheduler {self.client.scheduler.address}: {describe_cluster(workers)}")
        console.say(
            f"feature set {p.identity.id}: {len(todo)} of {console.plural(len(p.shards), 'shard')} to compute on the cluster, one task per shard "
            f"({p.cfg.shard_size} videos, {p.precision}); workers write shards, this process commits them"
        )
        seen_workers = set(workers)
        try:
            with console.progress(len(todo), "shard", "stage one (dask)") as self.bar:
                while todo or self.inflight or self.elsewhere:
                    self.keep_window_full(todo)
                    self.collect(timeout=1.0)
                    self.check_elsewhere(todo)
                    seen_workers = self.notice_worker_changes(seen_workers)
                    if self.stopping and not self.inflight:
                        break
                    if not self.inflight and not todo and self.elsewhere:
                        time.sleep(0.5)
        finally:  # also on Ctrl-C: another run may take over at once
            for claim in self.claims.values():
                claim.release()
        if self.errors:
            self.fail()

    def keep_window_full(self, todo: collections.deque) -> None:
        """Claim and submit shards until `window` tasks are in flight."""
        while todo and len(self.inflight) < self.window and not self.stopping:
            i = todo.popleft()
            claim, holder = claim_uncommitted(self.plan.set_dir, i)
            if holder:
                if i not in self.elsewhere:
                    console.say(
                        f"helping: shard {i} is being computed by another run ({holder}); "
                        f"this run waits for it, and takes it over if that run dies"
                    )
                self.elsewhere.add(i)
                continue
            if claim is None:  # committed meanwhile
                self.bar.update(1)
                continue
            self.claims[i] = claim
            self.submit(i)

    def submit(self, i: int) -> None:
        key = f"vidstore-shard-{i:05d}-{self.plan.identity.id[-12:]}-{uuid.uuid4().hex[:8]}"
        fut = self.client.submit(
            compute_shard,
            self.plan.only(i),
            self.workers_per_host,
            key=key,
            pure=False,
            retries=RETRIES,
            resources=self.resources,
        )
        self.inflight[fut] = i

    def collect(self, timeout: float) -> None:
        """Commit the tasks that finished within `timeout` seconds."""
        from distributed import wait

        if not self.inflight:
            return
        try:
            done, _ = wait(list(self.inflight), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return
        for fut in done:
            i = self.inflight.pop(fut)
            try:
                result = fut.result()
            except Exception as e:  # raised RETRIES+1 times, killed its workers, or was cancelled
                self.give_up(i, e)
            else:
                self.commit(result)
            fut.release()

    def commit(self, result: dict) -> None:
        """Rename the staged shard into place and record it; we hold its claim throughout."""
        i, set_dir = result["index"], self.plan.set_dir
        staged, final = set_dir / result["staged"], set_dir / store.shard_name(result["index"])
        try:
            if staged.stat().st_size != result["entry"]["bytes"]:
                raise ClusterError(
                    f"{staged.name}: {staged.stat().st_size} bytes on the shared store, the task wrote {result['entry']['bytes']}"
                )
            os.replace(staged, final)
            fsync_dir(set_dir)
        except (OSError, ClusterError) as e:
            # The store the workers write to is not the one this driver sees, or the file
            # vanished: compute it again rather than commit something unchecked.
            console.say(f"dask: shard {i} from {result['worker']} cannot be committed ({e}); running it again")
            self.submit(i)
            return
        store.commit_shard(set_dir, i, result["entry"] | {"file": final.name}, result["failures"])
        self.claims.pop(i).release()
        index_committed(self.plan, final.name)
        self.summary.add_shard(result["entry"]["videos"], result["failures"], copied=result["entry"].get("copied"))
        self.summary.add_timings(result["timings"])
        self.videos += result["entry"]["videos"] + len(result["failures"])
        self.bar.set_postfix_str(f"{self.videos / (time.perf_counter() - self.t0):.1f} videos/s", refresh=False)
        self.bar.update(1)

    def give_up(self, i: int, error: BaseException) -> None:
        """A task that raised RETRIES+1 times, or killed 3 workers: stop starting new ones."""
        self.errors[i] = error
        self.claims.pop(i).release()
        console.say(f"dask: shard {i} failed for good: {type(error).__name__}: {error}")
        self.stopping = True

    def check_elsewhere(self, todo: collections.deque) -> None:
        """Count shards another run committed; take back those whose run died."""
        if not self.elsewhere:
            return
        done = committed_indices(self.plan.set_dir)
        for i in sorted(self.elsewhere):
            if i in done:
                self.elsewhere.discard(i)
                self.bar.update(1)
            elif not store.Claim(self.plan.set_dir, i).held_elsewhere():
                self.elsewhere.discard(i)
                todo.append(i)

    def notice_worker_changes(self, seen: set[str]) -> set[str]:
        """Say when workers leave (their tasks are rescheduled) or join; returns the current set."""
        now = set(self.client.nthreads())
        if seen - now:
            console.say(f"dask: lost worker(s) {', '.join(sorted(seen - now))}; Dask runs their tasks again elsewhere")
        if now - seen:
            console.say(f"dask: worker(s) joined: {', '.join(sorted(now - seen))} ({len(now)} now)")
        return now

    def fail(self) -> None:
        lines = "; ".join(f"shard {i}: {type(e).__name__}: {e}" for i, e in sorted(self.errors.items()))
        first = next(iter(self.errors.values()))
        if isinstance(first, (StoreError, ConfigError, WeightsError)):
            raise first  # the user can act on these as they are (disk full, bad weights path, ...)
        from distributed import KilledWorker

        if isinstance(first, KilledWorker):
            raise ClusterError(
                f"{len(self.errors)} shard(s) failed on the cluster ({lines}); committed shards are kept, "
                f"rerun to resume"
            ) from first
        raise first  # a bug: keep its traceback
