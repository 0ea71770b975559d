"""Where one training step of a head goes: wall, CPU and device time per step (the bench's
and the GPU check's profile of stage two)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from pipeline.devices import resolve_device, training_precision

from .config import TrainConfig
from .loop import make_optimizer, seed_everything, train_step, warmup_cosine
from .models import build_model
from .sources import Batch
from .spec import PROJECTED


def profile_steps(
    device: str = "auto",
    precision: str = "auto",
    steps: int = 40,
    batch: int = 256,
    t: int = 16,
    d: int = 2048,
    classes: int = 101,
    top: int = 15,
    **overrides: Any,
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
    settings: dict[str, Any] = {"device": device, "precision": precision, "progress": False}
    cfg = TrainConfig(**(settings | overrides))
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
