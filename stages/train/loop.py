"""The training loop: optimiser, schedule, one step, one epoch, early stopping.

Deliberately plain: data sits standardised on the device (sources.MemorySource) and
batches are index lookups, or shards stream through (sources.StreamSource). AdamW with a
linear warmup then cosine decay, label smoothing, gradient clipping, bf16/fp16 autocast,
early stopping on a validation part carved from the training split by group, and the
best epoch's weights kept. Nothing in a step waits for the GPU.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import console

from .config import TrainConfig
from .models import TemporalClassifier
from .sources import Batch, Source

# BATCH=0: this many videos per step, fewer on small sets so that an epoch still has
# MIN_STEPS_PER_EPOCH optimiser steps.
AUTO_BATCH = 256
MIN_STEPS_PER_EPOCH = 8
# batch x layer width below which a CPU step runs on one thread (see cpu_threads)
SMALL_STEP = 32 * 512


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
    barrier waits for a descheduled peer (docs/bench.md, "Figures behind the code").
    """
    if device.type != "cpu" or batch * width > SMALL_STEP:
        return torch.get_num_threads()
    return 1


class OptimizerSettings(Protocol):
    """What make_optimizer reads of a config (TrainConfig, and localization's LocalizeConfig)."""

    @property
    def lr(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...


def make_optimizer(model: torch.nn.Module, cfg: OptimizerSettings, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (biases, norms and position embeddings are not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2 and p.shape[0] > 1]
    no_decay = [p for p in params if not (p.ndim >= 2 and p.shape[0] > 1)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters, far cheaper on CPU than the per-tensor loop (docs/bench.md, "Figures behind the code")
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type in ("cpu", "cuda"))


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear from ~0 to 1 over `warmup` steps, then cosine down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def loss_and_accuracy(
    model: TemporalClassifier, part: Source, batch: int, autocast_dtype: torch.dtype | None
) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and top-1 accuracy of a part, in eval mode."""
    model.eval()
    loss: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    for b in part.batches(batch):
        with torch.autocast(b.x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model.classify(b.x, b.lengths, b.present)
        l_sum = F.cross_entropy(logits, b.labels, reduction="sum")
        hits = (logits.argmax(1) == b.labels).sum()
        loss, correct = (l_sum, hits) if loss is None or correct is None else (loss + l_sum, correct + hits)
    if loss is None or correct is None:
        raise ValueError("cannot evaluate an empty part")
    return float(loss) / len(part), float(correct) / len(part)  # one device sync per evaluation


@dataclass
class FitHistory:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def train_step(
    model: TemporalClassifier,
    params: Sequence[torch.Tensor],
    batch: Batch,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    autocast_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a Batch (x (B, T, D), lengths (B,), labels (B,), present (B, M)).

    Returns (mean loss, correct predictions) as 0-d tensors on the device. Nothing here
    waits for the GPU (fused AdamW takes the GradScaler's inf check on the device, and
    modality dropout draws on the device), so the host queues step after step;
    tests/test_gpu.py runs it under CUDA's sync check.
    """
    x, y = batch.x, batch.labels
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        logits = model.classify(x, batch.lengths, batch.present)
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


def train_one_epoch(
    model: TemporalClassifier,
    part: Source,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    batch: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    generator: torch.Generator,
    desc: str,
) -> tuple[float, float]:
    """One shuffled pass over a training source. Returns (mean smoothed loss, top-1 accuracy)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    bar = console.progress(len(part), "video", desc, disable=not cfg.progress, leave=False)
    loss_sum = torch.zeros((), device=device)  # accumulated on the device: no GPU sync per step
    hits = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for step, b in enumerate(part.batches(batch, shuffle=True, generator=generator)):
        loss, hit = train_step(model, params, b, opt, sched, scaler, cfg, autocast_dtype)
        loss_sum += loss * len(b.labels)
        hits += hit
        seen += len(b.labels)
        bar.update(len(b.labels))
        if cfg.progress and (device.type == "cpu" or step % 20 == 0):  # .item() syncs a GPU: not every step
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{hits.item() / seen:.3f}")
    bar.close()
    return loss_sum.item() / seen, hits.item() / seen


def fit(
    model: TemporalClassifier,
    train: Source,
    val: Source | None,
    cfg: TrainConfig,
    batch: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    label: str,
) -> FitHistory:
    """Train on the `train` source for cfg.epochs (or until cfg.patience epochs bring no gain
    on the `val` source, if any); keep the best weights.

    "Best" is the highest validation accuracy, ties broken by the lower validation loss;
    with no validation part (too few groups to carve one), the last epoch is kept.
    """
    opt = make_optimizer(model, cfg, device)
    steps = math.ceil(len(train) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)  # fp16 only: bf16 needs none
    generator = torch.Generator().manual_seed(cfg.seed)
    result = FitHistory()
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] = {}
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        desc = f"{label} epoch {epoch}/{cfg.epochs}"
        loss, acc = train_one_epoch(
            model, train, opt, sched, scaler, cfg, batch, device, autocast_dtype, generator, desc
        )
        entry = {
            "epoch": epoch,
            "train_loss": loss,
            "train_acc": acc,
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        if val is not None:
            entry["val_loss"], entry["val_acc"] = loss_and_accuracy(model, val, batch, autocast_dtype)
            key = (entry["val_acc"], -entry["val_loss"])
        else:
            key = (epoch, 0.0)  # no validation part: the latest epoch is the best we know
        entry["best"] = best_key is None or key > best_key
        if entry["best"]:
            best_key, result.best_epoch = key, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        result.history.append(entry)
        if cfg.progress:
            val_text = f", val loss {entry['val_loss']:.3f} acc {entry['val_acc']:.3f}" if "val_acc" in entry else ""
            console.say(
                f"{desc}: loss {loss:.3f} acc {acc:.3f}{val_text}  [{entry['seconds']:.1f} s]"
                f"{'  *' if entry['best'] else ''}"
            )
        if cfg.patience and val is not None and epoch - result.best_epoch >= cfg.patience:
            break
    result.seconds = time.perf_counter() - t0
    model.load_state_dict(best_state)
    return result
