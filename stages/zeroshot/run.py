"""Zero-shot scores of an OpenCLIP feature set's test videos, and the reports a trained run writes.

The checkpoint is the one the set was made with, found from its manifest by stage one's
own weights policy (extract.config_from_manifest: the published file from the cache, the
same local file, checked by content, or the same seeded random weights). Its text tower
embeds each class's prompts; a video's embedding is the mean of its normalised stored frame
embeddings; the logits are the model's logit scale times their cosines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import FeatureSetView, console
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError
from pipeline.files import atomic_write_json

from .. import extract
from ..train import evaluate
from ..train.config import TrainConfig
from ..train.runs import CONFIG, FAILED, ZEROSHOT, mark_failed, split_dirs
from ..train.trainer import feature_sets_record, open_view
from .prompts import TEMPLATE_SETS, class_words, prompts_for

OPEN_CLIP = "open_clip:"  # how an OpenCLIP set's backbone is written (stage one's --backbone)
TEXT_BATCH = 256  # prompts per text-tower forward


@dataclass
class ZeroShotRun:
    """One split's zero-shot run: its directory, metrics, and the scores behind them.

    video_ids (N,) of the split's test part, labels (N,) int64, probs (N, C) float32.
    """

    run_dir: Path
    split: str
    metrics: dict
    video_ids: list[str]
    labels: np.ndarray
    probs: np.ndarray


def open_clip_set(view: FeatureSetView) -> str:
    """The backbone of the one OpenCLIP set `view` reads; else an option error naming the BACKBONE to make one with."""
    if len(view.ids) != 1:
        raise ConfigError(f"--features (FEATURES=): zero-shot scores one OpenCLIP set, got {', '.join(view.ids)}")
    manifest = view.manifest
    backbone = manifest.identity.get("backbone")
    if not (backbone or "").startswith(OPEN_CLIP):
        made = f"BACKBONE={backbone}" if backbone else f"MODALITY={view.modalities[0]}"
        raise ConfigError(
            f"--features (FEATURES=): {view.ids[0]} was made with {made}, which has no text tower; "
            f"zero-shot needs a set made with an OpenCLIP image tower, e.g. "
            f"`make features BACKBONE=open_clip:ViT-B-16:openai` on the same dataset, then FEATURES=<its id> "
            f"(`make store-list` shows each set's backbone)"
        )
    return str(backbone)


def load_clip(view: FeatureSetView, device: torch.device) -> tuple[Any, Any]:
    """The set's whole CLIP model (eval, fp32, on `device`) and its tokenizer, through stage one's
    weights policy: weights that are no longer the set's are refused (StoreError)."""
    cfg, spec = extract.config_from_manifest(
        view.manifest.config, view.manifest.identity, device=str(device), precision="fp32"
    )
    family = extract.family_for(cfg)
    return family.build_clip(spec).to(device), family.tokenizer()


@torch.no_grad()
def class_embeddings(model: Any, tokenizer: Any, prompts: list[list[str]], device: torch.device) -> torch.Tensor:
    """Per class the mean of its prompts' normalised text embeddings, normalised: (C, D) float32.

    prompts: C lists of the same length P (one per template).
    """
    flat = [p for per_class in prompts for p in per_class]
    tokens = tokenizer(flat)
    parts = [model.encode_text(tokens[i : i + TEXT_BATCH].to(device)).float() for i in range(0, len(flat), TEXT_BATCH)]
    text = F.normalize(torch.cat(parts), dim=-1).view(len(prompts), len(prompts[0]), -1)
    return F.normalize(text.mean(1), dim=-1)


def video_embeddings(features: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
    """The mean of each video's normalised frame embeddings, normalised: (N, D) float32.

    features (N, T, D) as stored (zero-padded after each video's length); lengths (N,) >= 1.
    """
    x = F.normalize(torch.from_numpy(np.ascontiguousarray(features)).float(), dim=-1)
    valid = torch.arange(x.shape[1])[None, :] < torch.from_numpy(np.asarray(lengths))[:, None]  # (N, T)
    return F.normalize((x * valid[..., None]).sum(1), dim=-1)  # normalising makes the sum a mean


def logit_scale(model: Any) -> float:
    """The model's learned temperature, exp(logit_scale), capped at 100 as CLIP caps it in training.
    (A SigLIP model's logit bias is left out: a constant added to every class changes no softmax.)"""
    return float(model.logit_scale.detach().exp().clamp(max=100).item())


def score(videos: torch.Tensor, classes: torch.Tensor, scale: float) -> torch.Tensor:
    """Logits (N, C): scale x cosine of unit video (N, D) and class (C, D) embeddings."""
    return scale * videos @ classes.to(videos.device).T


def zeroshot(cfg: TrainConfig, templates: str = "ucf101") -> list[ZeroShotRun]:
    """Classify the test videos of split `cfg.split` (all: each split, and the mean) of an OpenCLIP set.

    The set is found as `make train` finds it (FEATURES=, or DATASET=/DATA_DIR=/NAME=); each
    split's run directory gets config.json, metrics.json, predictions.csv and confusion.png,
    and its summary line goes to stdout.
    """
    if templates not in TEMPLATE_SETS:
        raise ConfigError(f"--templates (TEMPLATES=): choose one of {', '.join(TEMPLATE_SETS)}, got {templates!r}")
    device = resolve_device(cfg.device)
    view = open_view(cfg)
    backbone = open_clip_set(view)
    t0 = time.perf_counter()
    model, tokenizer = load_clip(view, device)
    prompts = prompts_for(view.classes, templates)
    classes = class_embeddings(model, tokenizer, prompts, device)
    scale = logit_scale(model)
    console.say(
        f"zero-shot: {backbone} on {view.ids[0]}: {len(view.classes)} classes x {len(prompts[0])} {templates} "
        f"prompts embedded by its text tower on {device} ({time.perf_counter() - t0:.1f} s), logit scale {scale:.2f}"
    )
    record = {
        "name": ZEROSHOT,
        "backbone": backbone,
        "templates": templates,
        "prompts": list(TEMPLATE_SETS[templates]),
        "class_words": [class_words(c) for c in view.classes],
        "logit_scale": scale,
        "frames": view.frames,
        "input_dim": view.feature_dim,
        "num_classes": len(view.classes),
    }
    names = view.split_names(cfg.split)
    out, dirs = split_dirs(cfg.out, ZEROSHOT, cfg.split, names)
    runs = [run_split(cfg, view, n, d, classes, scale, record) for n, d in zip(names, dirs, strict=True)]
    evaluate.report_splits(
        ZEROSHOT,
        out,
        {r.split: r.metrics for r in runs},
        {r.split: f"{r.metrics['videos']} test videos, no training" for r in runs},
        [r.run_dir for r in runs],
    )
    return runs


def run_split(
    cfg: TrainConfig, view: FeatureSetView, name: str, run_dir: Path, classes: torch.Tensor, scale: float, record: dict
) -> ZeroShotRun:
    """Score one split's test part and write its run directory, marked FAILED if it is not finished."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).unlink(missing_ok=True)  # OUT= reused after a failure
    try:
        return score_and_report(cfg, view, name, run_dir, classes, scale, record)
    except BaseException as e:  # Ctrl-C too: a directory without its results must say it has none
        console.say(f"run directory {run_dir} marked {FAILED}: {mark_failed(run_dir, e)}")
        raise


def score_and_report(
    cfg: TrainConfig, view: FeatureSetView, name: str, run_dir: Path, classes: torch.Tensor, scale: float, record: dict
) -> ZeroShotRun:
    split = view.split(name, cfg.seed, cfg.test_fraction)
    rows = split.test
    t0 = time.perf_counter()
    atomic_write_json(
        run_dir / CONFIG,
        {
            "kind": ZEROSHOT,
            "model": record,
            "split": name,
            # what chose the set and its test part (the same fields as a trained run's "train")
            "selection": {k: v for k, v in cfg.to_json().items() if k in SELECTION},
            "parts": {"test": len(rows), "carved_test": split.carved_test, "missing": split.missing},
            "device": str(classes.device),
            "classes": view.classes,
            "torch": torch.__version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "feature_sets": feature_sets_record(view),
        },
    )
    if view.ragged:  # each video's own rows, one at a time: no (N, T_max, D) array
        each = [video_embeddings(v[None], np.array([len(v)])) for v in view.read_videos(rows)]
        videos = torch.cat(each).to(classes.device)
    else:
        videos = video_embeddings(view.read(rows), view.index.lengths[rows]).to(classes.device)
    logits = score(videos, classes, scale)
    labels = view.index.labels[rows].astype(np.int64)
    loss = F.cross_entropy(logits, torch.from_numpy(labels).to(logits.device)).item()
    probs = logits.softmax(1).cpu().numpy().astype(np.float32)
    video_ids = [str(v) for v in view.index.video_ids[rows]]
    metrics = evaluate.write_report(
        run_dir,
        video_ids,
        probs,
        labels,
        view.classes,
        f"zero-shot split {name}",
        {"test_loss": loss, "eval_seconds": time.perf_counter() - t0, "zeroshot": record},
    )
    return ZeroShotRun(run_dir, name, metrics, video_ids, labels, probs)


# TrainConfig fields that pick the set and the test part (the rest is training, which this is not).
SELECTION = ("dataset", "data_dir", "name", "features", "features_root", "split", "seed", "test_fraction", "device")
