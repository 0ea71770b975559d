"""Stage two's timing: LSTM epochs on UCF101-sized synthetic features, loading included; the
profile of its steps."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import console, store
from pipeline.config import SCHEMA_VERSION
from pipeline.devices import resolve_device
from stages.train.config import TrainConfig

from ..train import train
from .config import BenchConfig
from .usage import process_usage, usage_since


def measure_training(cfg: BenchConfig, device: torch.device) -> dict:
    """Stage two's own timing of LSTM epochs on UCF101-sized features (stages/train/)."""
    t0, before = time.perf_counter(), process_usage()
    seconds = time_training(epochs=cfg.train_epochs, device=str(device))
    wall = time.perf_counter() - t0
    out: dict[str, object] = {"epochs": cfg.train_epochs, "seconds": seconds, "wall_s": wall, **usage_since(before)}
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
        arrays: dict[str, np.ndarray | list[str]] = {
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
        settings: dict[str, Any] = {
            "dataset": "synthetic",
            "features": str(set_dir),
            "model": model,
            "epochs": epochs,
            "patience": 0,
            "device": device,
            "out": Path(tmp) / "run",
            "progress": False,
        }
        cfg = TrainConfig(**(settings | overrides))
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
