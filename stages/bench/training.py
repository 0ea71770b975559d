"""Stage two's timing: LSTM epochs on UCF101-sized synthetic features, loading included; the
profile of its steps."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import console, store
from pipeline.config import (
    SCHEMA_VERSION,
    TrainConfig,
)
from pipeline.devices import resolve_device, training_precision

from ..train import train
from ..train.loop import make_optimizer, seed_everything, train_step, warmup_cosine
from ..train.models import build_model
from ..train.sources import Batch
from ..train.spec import PROJECTED
from .config import BenchConfig


def measure_training(cfg: BenchConfig, device: torch.device) -> dict:
    """Stage two's own timing of LSTM epochs on UCF101-sized features (stages/train.py)."""
    t0 = time.perf_counter()
    seconds = time_training(epochs=cfg.train_epochs, device=str(device))
    wall = time.perf_counter() - t0
    out = {"epochs": cfg.train_epochs, "seconds": seconds, "wall_s": wall}
    if cfg.train_epochs == 50:
        out["train_50_epochs_s"] = seconds
    else:
        out["train_50_epochs_s"] = seconds * 50 / cfg.train_epochs
        out["extrapolated"] = (
            f"from {cfg.train_epochs} measured epoch(s), scaled linearly to 50 (loading and "
            f"evaluation scaled too: an overestimate)"
        )
    return out


# ---------------------------------------------------------------- stage two's timing
def write_synthetic_set(
    set_dir: Path,
    n_train: int,
    n_test: int,
    frames: int = 16,
    dim: int = 2048,
    classes: int = 101,
    shard_size: int = 256,
    seed: int = 0,
) -> Path:
    """A feature set of random features in the store format (via pipeline.store), for timing.

    Videos are UCF101-like: 25 groups per class, ids "c<k>/v_c<k>_g<gg>_c<n>.avi", split "1"
    with n_train training and n_test test videos.
    """
    set_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = np.arange(n, dtype=np.int32) % classes
    ids = [f"c{y:03d}/v_c{y:03d}_g{(i // classes) % 25 + 1:02d}_c{i:05d}.avi" for i, y in enumerate(labels)]
    groups = [f"c{y:03d}/g{(i // classes) % 25 + 1:02d}" for i, y in enumerate(labels)]
    config = {"frames": frames, "image_size": 224, "weights": "synthetic"}
    identity = {
        "schema_version": SCHEMA_VERSION,
        "dataset": "synthetic",
        "backbone": "none",
        "weights": "synthetic",
        "sampling": {"mode": "uniform", "frames": frames},
    }
    splits = {"1": {"train": ids[:n_train], "test": ids[n_train:]}}
    store.create(
        set_dir,
        store.new_manifest(
            "synthetic",
            "synthetic",
            identity,
            config,
            frames,
            dim,
            [f"c{y:03d}" for y in range(classes)],
            splits,
            n,
            shard_size,
            -(-n // shard_size),
        ),
    )
    for k, s in enumerate(range(0, n, shard_size)):
        e = min(n, s + shard_size)
        arrays = {
            "features": rng.standard_normal((e - s, frames, dim), dtype=np.float32).astype(np.float16),
            "lengths": np.full(e - s, frames, np.int32),
            "labels": labels[s:e],
            "video_ids": ids[s:e],
            "groups": groups[s:e],
            "frame_indices": np.tile(np.arange(frames, dtype=np.int32), (e - s, 1)),
            "timestamps": np.tile(np.arange(frames, dtype=np.float32), (e - s, 1)),
        }
        attrs = {"feature_set_id": "synthetic", "config": config, "shard_index": k}
        store.commit_shard(set_dir, k, store.write_shard(set_dir / store.shard_name(k), arrays, attrs), [])
    store.mark_complete(set_dir)
    return set_dir


def time_training(
    model: str = "lstm",
    n: int = 9537,
    t: int = 16,
    d: int = 2048,
    epochs: int = 50,
    device: str = "auto",
    classes: int = 101,
    n_test: int = 3783,
    workdir: Path | None = None,
    **overrides,
) -> float:
    """Wall seconds of `train()` for `epochs` epochs on a synthetic set of n training videos (T=t, D=d).

    Defaults mirror UCF101 split 1 (9,537 train / 3,783 test videos, 101 classes) and the
    default head settings (2-layer LSTM-512 after the 256-d input projection). Writing the
    synthetic shards is not timed; reading them through the reader (checksums included),
    statistics, training, the per-epoch validation, test evaluation and the run's reports
    are. Early stopping is off so every epoch runs. `overrides` go to TrainConfig.
    """
    with tempfile.TemporaryDirectory(prefix="vidstore-timing-", dir=workdir) as tmp:
        set_dir = write_synthetic_set(Path(tmp) / "features" / "synthetic" / "synthetic", n, n_test, t, d, classes)
        cfg = TrainConfig(
            **(
                {
                    "dataset": "synthetic",
                    "features": str(set_dir),
                    "model": model,
                    "epochs": epochs,
                    "patience": 0,
                    "device": device,
                    "out": Path(tmp) / "run",
                    "progress": False,
                }
                | overrides
            )
        )
        t0 = time.perf_counter()
        result = train(cfg)
        seconds = time.perf_counter() - t0
        run = result.runs[0]
        console.say(
            f"time_training: {model}, {n} x {t} x {d}, {epochs} epochs on {resolve_device(device)}: {seconds:.1f} s "
            f"in all ({run.train_seconds:.1f} s in the training loop, {run.epochs_run} epochs)"
        )
        if run.epochs_run != epochs:
            raise RuntimeError(f"time_training: {run.epochs_run} of {epochs} epochs ran; the timing would mislead")
        return seconds


def profile_steps(
    device: str = "auto",
    precision: str = "auto",
    steps: int = 40,
    batch: int = 256,
    t: int = 16,
    d: int = 2048,
    classes: int = 101,
    top: int = 15,
    **overrides,
) -> dict:
    """Where one training step of the default head goes: wall, CPU and device time per step.

    Runs `train_step` on random standardised batches (B, T, D) already on the device (no
    reader, no epoch bookkeeping) for `steps` steps after a warm-up, then `torch.profiler`
    over 10 more. Returns {"ms_per_step", "ops_per_step", "cpu_ms_per_step",
    "device_ms_per_step", "top": [[op, calls per step, self CPU ms, self device ms]]}: when
    the host's time per step exceeds the device's, the step is launch-bound.
    """
    from torch.profiler import ProfilerActivity, profile

    dev = resolve_device(device)
    cfg = TrainConfig(**({"device": device, "precision": precision, "progress": False} | overrides))
    autocast_dtype, data_dtype = training_precision(cfg.precision, dev)
    seed_everything(0)
    model = build_model(
        cfg.model,
        d,
        t,
        classes,
        hidden=cfg.hidden,
        layers=cfg.layers,
        bidirectional=cfg.bidirectional,
        dropout=cfg.dropout,
        proj=cfg.proj if cfg.model in PROJECTED else 0,
    ).to(dev)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, cfg, dev)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 10, 10 * steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=autocast_dtype == torch.float16)
    x = torch.randn((batch, t, d), device=dev).to(data_dtype)
    lengths = torch.full((batch,), t, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    one = Batch(x, lengths, y, np.arange(batch), torch.ones((batch, 1), dtype=torch.bool, device=dev))
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    run = lambda: train_step(model, params, one, opt, sched, scaler, cfg, autocast_dtype)
    for _ in range(5):
        run()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    sync()
    ms = 1e3 * (time.perf_counter() - t0) / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(10):
            run()
        sync()
    events = prof.key_averages()
    device_us = lambda e: getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
    top_ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "device": str(dev),
        "precision": str(autocast_dtype or "fp32").replace("torch.", ""),
        "batch": batch,
        "model": cfg.model,
        "ms_per_step": ms,
        "ops_per_step": sum(e.count for e in events if not e.key.startswith("ProfilerStep")) / 10,
        "cpu_ms_per_step": sum(e.self_cpu_time_total for e in events) / 1e3 / 10,
        "device_ms_per_step": sum(device_us(e) for e in events) / 1e3 / 10,
        "top": [[e.key, e.count / 10, e.self_cpu_time_total / 1e3 / 10, device_us(e) / 1e3 / 10] for e in top_ops],
    }
