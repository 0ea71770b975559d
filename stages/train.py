"""Stage two: train a temporal head straight from a feature set and write the run directory.

    train(cfg) -> TrainResult           one split, or SPLIT=all: each official split and the mean
    time_training(...) -> seconds       the 50-epoch benchmark on synthetic UCF101-sized shards

The loop is deliberately plain: data sits standardised on the device (reader.MemorySource)
and batches are index lookups, or shards stream through (reader.StreamSource) when the set
does not fit. AdamW with a linear warmup then cosine decay, label smoothing, gradient
clipping, bf16/fp16 autocast, early stopping on a validation part carved from the
training split by group, and the best epoch's weights kept.
"""
from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import reader
from pipeline.config import ConfigError, TrainConfig, repo_root

from . import evaluate
from .backbone import resolve_device
from .models import WORKSPACE, build_from_spec, build_model, count_parameters

# BATCH=0: this many videos per step, fewer on small sets so that an epoch still has
# MIN_STEPS_PER_EPOCH optimiser steps.
AUTO_BATCH = 256
MIN_STEPS_PER_EPOCH = 8
# batch x layer width below which a CPU step runs on one thread (see cpu_threads)
SMALL_STEP = 32 * 512


# ---------------------------------------------------------------- device, precision, seeds
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, torch.dtype]:
    """(autocast dtype or None, dtype of the standardised features kept in memory)."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "fp16"  # classic AMP (with a GradScaler): cuDNN's RNNs take fp16 everywhere
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp32":
        return None, torch.float32
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16: only on CUDA; use bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no native bf16; use fp16 or fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return dtype, dtype


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def auto_batch(batch: int, n_train: int) -> int:
    """BATCH=0: 256, or fewer so that an epoch has at least MIN_STEPS_PER_EPOCH steps (never below 8)."""
    if batch:
        return batch
    return int(min(AUTO_BATCH, max(8, n_train // MIN_STEPS_PER_EPOCH)))


def cpu_threads(device: torch.device, batch: int, width: int) -> int:
    """Intra-op threads for training steps of `batch` videos through `width`-wide layers.

    Tiny steps run on one thread: each element-wise kernel of a few thousand values then
    costs microseconds, while a parallel region costs a barrier, and on a busy machine a
    barrier waits for a descheduled peer (seen: 15x slower epochs on a shared 2-core box).
    """
    if device.type != "cpu" or batch * width > SMALL_STEP:
        return torch.get_num_threads()
    return 1


def default_out(model: str, split: str) -> Path:
    return repo_root() / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-split{split}"


# ---------------------------------------------------------------- data
@dataclass
class Data:
    """The feature set(s) and splits a run reads, loaded once (shared by `compare`).

    store_features (M, T, D) float16 holds every video of the selected splits when
    mode == "memory" (None when streaming); position (N,) maps an index row to its
    place in it (-1: not loaded).
    """

    sets: list[reader.FeatureSet]
    index: reader.Index
    splits: dict[str, reader.Split]
    mode: str
    store_features: np.ndarray | None = None
    position: np.ndarray | None = None
    read_seconds: float = 0.0


def load_data(cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> Data:
    """Resolve FEATURES=/DATASET=, open the set(s), select the split(s), read features if they fit."""
    t0 = time.perf_counter()
    sets = reader.open_feature_sets(reader.resolve_feature_sets(cfg.dataset, cfg.features, cfg.features_root))
    for fs in sets:
        if not fs.manifest.get("complete"):
            print(f"warning: feature set {fs.set_dir} is incomplete ({fs.manifest['num_stored']} of "
                  f"{fs.manifest['num_videos']} videos committed); training on what is there", file=sys.stderr)
    index = reader.read_index(sets)
    names = reader.split_names(sets[0].manifest, cfg.split)
    splits = {n: reader.select_split(sets, index, n, cfg.seed, cfg.test_fraction) for n in names}
    rows = np.unique(np.concatenate([np.concatenate([s.train, s.test]) for s in splits.values()]))
    mode = reader.choose_load(cfg.load, len(rows), sets[0].frames, sets[0].feature_dim, dtype, device)
    data = Data(sets, index, splits, mode)
    if mode == "memory":
        data.store_features = reader.read_features(sets, index, rows)
        data.position = np.full(len(index.video_ids), -1, np.int64)
        data.position[rows] = np.arange(len(rows))
    data.read_seconds = time.perf_counter() - t0
    return data


@dataclass
class Parts:
    """Train / validation / test sources of one split, standardised with training statistics."""

    train: object
    val: object | None
    test: object
    mean: torch.Tensor  # (D,) float32
    std: torch.Tensor  # (D,) float32
    sizes: dict


def make_parts(data: Data, split: reader.Split, cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> Parts:
    """Carve validation from the training side by group, compute statistics, build the sources."""
    train_rows, val_rows = reader.carve_by_group(split.train, data.index, cfg.val_fraction, cfg.seed)
    idx = data.index
    if data.mode == "memory":
        pos = lambda rows: data.position[rows]
        mean, std = reader.feature_stats(reader.memory_chunks(data.store_features, pos(train_rows), idx.lengths[train_rows]), device)
        source = lambda rows: reader.MemorySource(data.store_features, pos(rows), idx.lengths[rows], idx.labels[rows],
                                                  idx.video_ids[rows], mean, std, device, dtype)
    else:
        mean, std = reader.feature_stats(reader.stream_chunks(data.sets, idx, train_rows), device)
        source = lambda rows: reader.StreamSource(data.sets, idx, rows, mean, std, device, dtype)
    sizes = {"train": len(train_rows), "val": len(val_rows), "test": len(split.test),
             "carved_test": split.carved_test, "missing": split.missing}
    return Parts(source(train_rows), source(val_rows) if len(val_rows) else None, source(split.test), mean, std, sizes)


# ---------------------------------------------------------------- optimisation
def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (biases, norms and position embeddings are not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2 and p.shape[0] > 1]
    no_decay = [p for p in params if not (p.ndim >= 2 and p.shape[0] > 1)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters; on CPU 8x cheaper than the per-tensor loop (~3% of an LSTM step)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type in ("cpu", "cuda"))


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear from ~0 to 1 over `warmup` steps, then cosine down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def loss_and_accuracy(model: torch.nn.Module, part, batch: int, autocast_dtype: torch.dtype | None) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and top-1 accuracy of a part, in eval mode."""
    model.eval()
    loss = correct = None
    for x, lengths, y, _ in part.batches(batch):
        with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model.classify(x, lengths)
        l_sum = F.cross_entropy(logits, y, reduction="sum")
        hits = (logits.argmax(1) == y).sum()
        loss, correct = (l_sum, hits) if loss is None else (loss + l_sum, correct + hits)
    return float(loss) / len(part), float(correct) / len(part)  # one device sync per evaluation


@dataclass
class Fit:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def train_step(model: torch.nn.Module, params: list[torch.Tensor], x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, sched, scaler: torch.amp.GradScaler, cfg: TrainConfig,
               autocast_dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on x (B, T, D), lengths (B,), labels y (B,).

    Returns (mean loss, correct predictions) as 0-d tensors on the device. Nothing here
    waits for the GPU (fused AdamW takes the GradScaler's inf check on the device), so
    the host queues step after step; tests/test_gpu.py runs it under CUDA's sync check.
    """
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        logits = model.classify(x, lengths)
    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.clip_grad:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
    scaler.step(opt)
    scaler.update()
    sched.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


def train_one_epoch(model: torch.nn.Module, part, opt: torch.optim.Optimizer, sched, scaler: torch.amp.GradScaler,
                    cfg: TrainConfig, batch: int, device: torch.device, autocast_dtype: torch.dtype | None,
                    generator: torch.Generator, desc: str) -> tuple[float, float]:
    """One shuffled pass over a training source. Returns (mean smoothed loss, top-1 accuracy)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(total=len(part), desc=desc, unit="video", leave=False, disable=not cfg.progress, file=sys.stderr,
               dynamic_ncols=True)
    loss_sum = torch.zeros((), device=device)  # accumulated on the device: no GPU sync per step
    hits = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for step, (x, lengths, y, _) in enumerate(part.batches(batch, shuffle=True, generator=generator)):
        loss, hit = train_step(model, params, x, lengths, y, opt, sched, scaler, cfg, autocast_dtype)
        loss_sum += loss * len(y)
        hits += hit
        seen += len(y)
        bar.update(len(y))
        if cfg.progress and (device.type == "cpu" or step % 20 == 0):  # .item() syncs a GPU: not every step
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{hits.item() / seen:.3f}")
    bar.close()
    return loss_sum.item() / seen, hits.item() / seen


def fit(model: torch.nn.Module, parts: Parts, cfg: TrainConfig, batch: int, device: torch.device,
        autocast_dtype: torch.dtype | None, label: str) -> Fit:
    """Train for cfg.epochs (or until cfg.patience epochs bring no validation gain); keep the best weights.

    "Best" is the highest validation accuracy, ties broken by the lower validation loss;
    with no validation part (too few groups to carve one), the last epoch is kept.
    """
    opt = make_optimizer(model, cfg, device)
    steps = math.ceil(len(parts.train) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, round(cfg.warmup_epochs * steps), cfg.epochs * steps))
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)  # fp16 only: bf16 needs none
    generator = torch.Generator().manual_seed(cfg.seed)
    result, best_key, best_state = Fit(), None, None
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        desc = f"{label} epoch {epoch}/{cfg.epochs}"
        loss, acc = train_one_epoch(model, parts.train, opt, sched, scaler, cfg, batch, device, autocast_dtype, generator, desc)
        entry = {"epoch": epoch, "train_loss": loss, "train_acc": acc, "lr": opt.param_groups[0]["lr"],
                 "seconds": time.perf_counter() - t0}
        if parts.val is not None:
            entry["val_loss"], entry["val_acc"] = loss_and_accuracy(model, parts.val, batch, autocast_dtype)
            key = (entry["val_acc"], -entry["val_loss"])
        else:
            key = (epoch, 0.0)  # no validation part: the latest epoch is the best we know
        entry["best"] = best_key is None or key > best_key
        if entry["best"]:
            best_key, result.best_epoch = key, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        result.history.append(entry)
        if cfg.progress:
            val = f", val loss {entry['val_loss']:.3f} acc {entry['val_acc']:.3f}" if "val_acc" in entry else ""
            tqdm.write(f"{desc}: loss {loss:.3f} acc {acc:.3f}{val}  [{entry['seconds']:.1f} s]{'  *' if entry['best'] else ''}",
                       file=sys.stderr)
        if cfg.patience and parts.val is not None and epoch - result.best_epoch >= cfg.patience:
            break
    result.seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    return result


# ---------------------------------------------------------------- one split, all splits
@dataclass
class RunResult:
    run_dir: Path
    model: str
    split: str
    params: int
    train_seconds: float
    best_epoch: int
    epochs_run: int
    metrics: dict  # test metrics: top1, top5, mean_class_acc, per_class, videos, ...


@dataclass
class TrainResult:
    run_dir: Path  # the run directory (SPLIT=all: the parent of split<k>/)
    runs: list[RunResult]

    @property
    def mean(self) -> dict:
        return evaluate.mean_metrics([r.metrics for r in self.runs])


def model_spec(cfg: TrainConfig, fs: reader.FeatureSet) -> dict:
    """Everything needed to rebuild the model from config.json (stored as JSON, never pickled)."""
    return {"name": cfg.model, "input_dim": fs.feature_dim, "frames": fs.frames, "num_classes": len(fs.classes),
            "hidden": cfg.hidden, "layers": cfg.layers, "bidirectional": cfg.bidirectional, "dropout": cfg.dropout,
            "proj": cfg.proj if cfg.model in ("lstm", "gru", "attention", "fusion") else 0}


def train_split(cfg: TrainConfig, data: Data, name: str, run_dir: Path, device: torch.device) -> RunResult:
    """Train and evaluate on one split; write the run directory."""
    autocast_dtype, data_dtype = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = make_parts(data, data.splits[name], cfg, device, data_dtype)
    fs = data.sets[0]
    spec = model_spec(cfg, fs)
    model = build_from_spec(spec, parts.mean, parts.std).to(device)
    batch = auto_batch(cfg.batch, len(parts.train))
    params = count_parameters(model)
    evaluate.write_json(run_dir / evaluate.CONFIG, {
        "train": cfg.to_json(), "model": spec, "split": name, "parts": parts.sizes, "batch": batch,
        "device": str(device), "precision": str(autocast_dtype or torch.float32).replace("torch.", ""), "load": data.mode,
        "params": params, "classes": fs.classes, "torch": torch.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "feature_sets": [{"dir": str(s.set_dir.resolve()), "id": s.id, "dataset": s.manifest["dataset"],
                          "frames": s.frames, "feature_dim": s.feature_dim, "config": s.manifest["config"],
                          "identity": s.manifest["identity"]} for s in data.sets],
    })
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(device, batch, max(cfg.hidden, spec["proj"])))
    try:
        return fit_and_report(cfg, data, name, run_dir, device, model, parts, batch, params, autocast_dtype)
    finally:
        torch.set_num_threads(threads)
        WORKSPACE.clear()


def fit_and_report(cfg: TrainConfig, data: Data, name: str, run_dir: Path, device: torch.device, model: torch.nn.Module,
                   parts: Parts, batch: int, params: int, autocast_dtype: torch.dtype | None) -> RunResult:
    """Fit, keep the best weights, evaluate on the test part and write the reports."""
    fs = data.sets[0]
    label = f"{cfg.model} split {name}"
    if parts.val is None and cfg.val_fraction:
        print(f"{label}: no validation part (too few groups per class to carve {cfg.val_fraction:.0%} by group): "
              f"no early stopping, the last epoch is kept", file=sys.stderr)
    print(f"{label}: {parts.sizes['train']} train / {parts.sizes['val']} validation (by group) / {parts.sizes['test']} test "
          f"videos{' (test carved by group: the dataset has no test split)' if parts.sizes['carved_test'] else ''}, "
          f"{params:,} parameters, batch {batch}, {device} {str(autocast_dtype or 'fp32').replace('torch.', '')}, "
          f"data {data.mode}", file=sys.stderr, flush=True)
    result = fit(model, parts, cfg, batch, device, autocast_dtype, label)
    torch.save(model.state_dict(), run_dir / evaluate.CHECKPOINT)
    probs, labels, test_loss = evaluate.predict_part(model, parts.test, batch, autocast_dtype)
    evaluate.plot_curves(run_dir / evaluate.CURVES, result.history, label)
    metrics = evaluate.write_report(run_dir, parts.test, probs, labels, fs.classes, label, {
        "test_loss": test_loss, "params": params, "train_seconds": result.seconds, "best_epoch": result.best_epoch,
        "epochs_run": len(result.history), "history": result.history})
    return RunResult(run_dir, cfg.model, name, params, result.seconds, result.best_epoch, len(result.history), metrics)


def train(cfg: TrainConfig, data: Data | None = None) -> TrainResult:
    """Train and evaluate `cfg.model` on split `cfg.split` (all: each official split, and the mean).

    Prints the resolved config first and the run directory and headline metrics last.
    `data` (from load_data) lets several runs share one read of the features.
    """
    print(f"stage two: {json.dumps(cfg.to_json())}", file=sys.stderr, flush=True)
    device = resolve_device(cfg.device)
    if data is None:
        data = load_data(cfg, device, resolve_precision(cfg.precision, device)[1])
        print(f"read {len(data.index.video_ids)} videos' index from {len(data.index.shards)} shard(s) of "
              f"{', '.join(s.id for s in data.sets)}; features {data.mode} ({data.read_seconds:.1f} s)", file=sys.stderr, flush=True)
    out = Path(cfg.out) if cfg.out else default_out(cfg.model, cfg.split)
    names = list(data.splits)
    runs = [train_split(cfg, data, n, out if len(names) == 1 else out / f"split{n}", device) for n in names]
    result = TrainResult(out, runs)
    for r in runs:
        print(f"{r.model} split {r.split}: {evaluate.headline(r.metrics)}  "
              f"(best epoch {r.best_epoch}/{r.epochs_run}, {r.train_seconds:.1f} s)  -> {r.run_dir}", flush=True)
    if len(runs) > 1:
        mean = result.mean
        evaluate.write_json(out / evaluate.METRICS, {"mean": mean, "splits": {r.split: {k: r.metrics[k] for k in evaluate.HEADLINE} for r in runs}})
        print(f"{cfg.model} mean over splits {', '.join(names)}: {evaluate.headline(mean)}  -> {out}", flush=True)
    return result


# ---------------------------------------------------------------- the benchmark
def write_synthetic_set(set_dir: Path, n_train: int, n_test: int, frames: int = 16, dim: int = 2048, classes: int = 101,
                        shard_size: int = 256, seed: int = 0) -> Path:
    """A feature set of random features in the store format (via pipeline.store), for timing.

    Videos are UCF101-like: 25 groups per class, ids "c<k>/v_c<k>_g<gg>_c<n>.avi", split "1"
    with n_train training and n_test test videos.
    """
    from pipeline import store

    set_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = np.arange(n, dtype=np.int32) % classes
    ids = [f"c{y:03d}/v_c{y:03d}_g{(i // classes) % 25 + 1:02d}_c{i:05d}.avi" for i, y in enumerate(labels)]
    groups = [f"c{y:03d}/g{(i // classes) % 25 + 1:02d}" for i, y in enumerate(labels)]
    config = {"frames": frames, "image_size": 224, "weights": "synthetic"}
    identity = {"schema_version": 1, "dataset": "synthetic", "backbone": "none", "weights": "synthetic", "sampling": {"mode": "uniform", "frames": frames}}
    shards = []
    for k, s in enumerate(range(0, n, shard_size)):
        e = min(n, s + shard_size)
        arrays = {
            "features": rng.standard_normal((e - s, frames, dim), dtype=np.float32).astype(np.float16),
            "lengths": np.full(e - s, frames, np.int32), "labels": labels[s:e],
            "video_ids": ids[s:e], "groups": groups[s:e],
            "frame_indices": np.tile(np.arange(frames, dtype=np.int32), (e - s, 1)),
            "timestamps": np.tile(np.arange(frames, dtype=np.float32), (e - s, 1)),
        }
        entry = store.write_shard(set_dir / store.shard_name(k), arrays, {"feature_set_id": "synthetic", "config": config, "shard_index": k})
        shards.append({"index": k, **entry, "failures": []})
    store.write_manifest(set_dir, {
        "schema_version": 1, "feature_set_id": "synthetic", "dataset": "synthetic", "identity": identity, "config": config,
        "frames": frames, "feature_dim": dim, "classes": [f"c{y:03d}" for y in range(classes)],
        "splits": {"1": {"train": ids[:n_train], "test": ids[n_train:]}}, "shards": shards, "num_videos": n,
        "num_shards": len(shards), "complete": True, "created_at": store.now_iso(), "unlisted_failures": []})
    return set_dir


def time_training(model: str = "lstm", n: int = 9537, t: int = 16, d: int = 2048, epochs: int = 50, device: str = "auto",
                  classes: int = 101, n_test: int = 3783, workdir: Path | None = None, **overrides) -> float:
    """Wall seconds of `train()` for `epochs` epochs on a synthetic set of n training videos (T=t, D=d).

    Defaults mirror UCF101 split 1 (9,537 train / 3,783 test videos, 101 classes) and the
    default head settings (2-layer LSTM-512 after the 256-d input projection). Writing the
    synthetic shards is not timed; reading them through the reader (checksums included),
    statistics, training, the per-epoch validation, test evaluation and the run's reports
    are. Early stopping is off so every epoch runs. `overrides` go to TrainConfig.
    """
    with tempfile.TemporaryDirectory(prefix="vidstore-timing-", dir=workdir) as tmp:
        set_dir = write_synthetic_set(Path(tmp) / "features" / "synthetic" / "synthetic", n, n_test, t, d, classes)
        cfg = TrainConfig(**({"dataset": "synthetic", "features": str(set_dir), "model": model, "epochs": epochs,
                              "patience": 0, "device": device, "out": Path(tmp) / "run", "progress": False} | overrides))
        t0 = time.perf_counter()
        result = train(cfg)
        seconds = time.perf_counter() - t0
        run = result.runs[0]
        print(f"time_training: {model}, {n} x {t} x {d}, {epochs} epochs on {resolve_device(device)}: {seconds:.1f} s "
              f"in all ({run.train_seconds:.1f} s in the training loop, {run.epochs_run} epochs)", flush=True)
        if run.epochs_run != epochs:
            raise RuntimeError(f"time_training: {run.epochs_run} of {epochs} epochs ran; the timing would mislead")
        return seconds


def profile_steps(device: str = "auto", precision: str = "auto", steps: int = 40, batch: int = 256, t: int = 16,
                  d: int = 2048, classes: int = 101, top: int = 15, **overrides) -> dict:
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
    autocast_dtype, data_dtype = resolve_precision(cfg.precision, dev)
    seed_everything(0)
    model = build_model(cfg.model, d, t, classes, hidden=cfg.hidden, layers=cfg.layers, bidirectional=cfg.bidirectional,
                        dropout=cfg.dropout, proj=cfg.proj if cfg.model in ("lstm", "gru", "attention", "fusion") else 0).to(dev)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, cfg, dev)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 10, 10 * steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=autocast_dtype == torch.float16)
    x = torch.randn((batch, t, d), device=dev).to(data_dtype)
    lengths = torch.full((batch,), t, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    run = lambda: train_step(model, params, x, lengths, y, opt, sched, scaler, cfg, autocast_dtype)
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
    return {"device": str(dev), "precision": str(autocast_dtype or "fp32").replace("torch.", ""), "batch": batch,
            "model": cfg.model, "ms_per_step": ms,
            "ops_per_step": sum(e.count for e in events if not e.key.startswith("ProfilerStep")) / 10,
            "cpu_ms_per_step": sum(e.self_cpu_time_total for e in events) / 1e3 / 10,
            "device_ms_per_step": sum(device_us(e) for e in events) / 1e3 / 10,
            "top": [[e.key, e.count / 10, e.self_cpu_time_total / 1e3 / 10, device_us(e) / 1e3 / 10] for e in top_ops]}
