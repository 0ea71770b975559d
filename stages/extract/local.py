"""Stage one on this machine: one process, or one backbone process per device (DEVICES=).

Both compute every uncommitted shard of the plan, taking shards by claim, so any number
of runs (here or on other machines sharing the store) help each other instead of
computing a shard twice, and a run that dies leaves its shards to the others.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

import torch
from joblib import Parallel, delayed

from pipeline import console, store

from .model_thread import ModelThread
from .plan import ExtractionPlan, committed_indices
from .runner import CommitToManifest, ShardRunner, Summary, claim_free_shards


def start_model(plan: ExtractionPlan) -> ModelThread:
    """The family's model on this run's (first) device, loading in the background.

    The model loads (and on CUDA runs one batch, so cuDNN's kernel search is paid too)
    on its own thread while the decoders already fill their slots.
    """
    device = plan.family.device()
    return ModelThread(
        plan.family,
        plan.weights,
        str(device),
        plan.precision,
        plan.cfg.compile,
        background=True,
        warm_up=plan.family.batch_size(device),
    )


def uncommitted(plan: ExtractionPlan) -> list[int]:
    done = committed_indices(plan.set_dir)
    return [i for i in plan.shards if i not in done]


def extract_in_process(plan: ExtractionPlan, summary: Summary, show_progress: bool = True) -> None:
    """Compute every uncommitted shard in this process, helping or waiting for other runs."""
    if not uncommitted(plan):
        return
    model = start_model(plan)
    what = plan.family.describe(plan.weights, model.device, model.precision)
    work = f"{what}, {plan.cfg.workers or os.cpu_count()} decoders"
    sink = CommitToManifest(plan, summary)
    work_through(plan, summary, work, lambda bar: ShardRunner(plan, model, sink, bar), show_progress)
    model.ready()  # a model that failed to load fails the run even if no video reached it
    model.close()
    summary.timings["model_load"] = model.build_seconds  # seconds, overlapped with the first decodes


def work_through(plan: ExtractionPlan, summary: Summary, work: str, runner_for: Callable, show_progress: bool) -> None:
    """Run `runner_for(bar).run(claims)` over the uncommitted shards until every one is committed:
    those this run claims, then, while other runs hold the rest, waiting for them (and taking
    over the shards of a run that dies)."""
    missing = uncommitted(plan)
    if not missing:
        return
    console.say(
        f"feature set {plan.identity.id}: {len(missing)} of {console.plural(len(plan.shards), 'shard')} to compute {work}"
    )
    waited, reported_busy = False, set[int]()
    with console.progress(
        sum(len(plan.shards[i]) for i in missing), "video", "stage one", disable=not show_progress
    ) as bar:
        while missing:
            summary.add_timings(runner_for(bar).run(claim_free_shards(plan, missing, reported_busy)))
            missing = uncommitted(plan)
            if missing:
                if not waited:
                    console.say(
                        f"waiting: {len(missing)} shard(s) are being computed by another run; "
                        f"this run takes them over if that run dies"
                    )
                    waited = True
                time.sleep(0.5)


def extract_on_devices(plan: ExtractionPlan, summary: Summary) -> None:
    """One process per device (DEVICES=cuda:0,cuda:1); the shard claims share the work.

    Every process gets this run's plan with only its device and its share of the decoders
    changed: nothing is listed, hashed or resolved again, so all of them write the one
    feature set this run opened, at the precision in its identity (mixed devices
    included). The processes stay quiet; this one draws the progress bar from the
    manifest and reports their failures.
    """
    devices = plan.cfg.devices
    per = max(1, (plan.cfg.workers or os.cpu_count() or 1) // len(devices))
    shares = [plan.with_config(devices=(d,), device=d, workers=per) for d in devices]
    console.say(f"one backbone process per device: {', '.join(devices)} ({per} decoders each, {plan.precision})")
    with follow_manifest(plan):
        results = Parallel(n_jobs=len(devices), backend="loky")(delayed(device_worker)(share) for share in shares)
    for r in results:
        summary.add(r)


def device_worker(plan: ExtractionPlan) -> Summary:
    """Body of one device process: extract_in_process on plan.cfg.device, silent, no bar."""
    device = torch.device(plan.cfg.device)
    if device.type == "cuda" and device.index is not None:
        # This process's current device, before anything touches CUDA: pinned host memory
        # and contexts go to its GPU, not to cuda:0 (which EXCLUSIVE_PROCESS would refuse).
        torch.cuda.set_device(device)
    summary = Summary(plan.identity.id, plan.set_dir)
    with console.silenced():  # siblings sharing shards is the plan, not news; failures are reported by the parent
        extract_in_process(plan, summary, show_progress=False)
    return summary


@contextlib.contextmanager
def follow_manifest(plan: ExtractionPlan, poll: float = 1.0) -> Iterator[None]:
    """A progress bar over videos (stored or failed) that other processes commit."""

    def settled() -> int:
        return sum(s.videos + len(s.failures) for s in store.read_manifest(plan.set_dir).shards)

    todo = sum(len(plan.shards[i]) for i in uncommitted(plan))
    start, stop = settled(), threading.Event()

    def follow() -> None:
        with console.progress(todo, "video", "stage one") as bar:
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
