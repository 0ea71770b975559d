"""`make localize`: train a localization head on a dense set's training videos, score its validation videos.

localize(cfg)                 read the set(s) and annotations, train, write the run directory
fit_and_score(...)            the same on videos already in memory (what localize and the tests call)
segments_of(model, video)     one video's segments in seconds, best first (predict uses it too)
evaluate_run(run_dir)         re-score a run's checkpoint on its validation videos, rewrite its reports

A run directory holds config.json ("kind": "localize"), checkpoint.pt, metrics.json (flat mAP@0.3
... mAP@0.7, their mean mAP, ActivityNet's mAP@0.5:0.95, per-class AP, the epochs), predictions.json
(ActivityNet's results format), and timelines/<video>.png (ground truth against predictions);
FAILED while it is not finished, as stage two's runs (stages.train.runs).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import console, store
from pipeline.config import repo_root
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError
from pipeline.files import atomic_write_json
from stages.train.loop import cpu_threads, make_optimizer, seed_everything, warmup_cosine
from stages.train.models import count_parameters
from stages.train.runs import CHECKPOINT, CONFIG, FAILED, METRICS, mark_failed

from . import plots
from .annotations import Matched, match
from .config import LocalizeConfig
from .data import DenseSet, Video, read_dense
from .heads import ActionFormerLite, StepSegments, Tagger, build_head
from .scoring import localization_metrics, results_rows

KIND = "localize"  # config.json's "kind" in a localization run
PREDICTIONS = "predictions.json"
TIMELINES = "timelines"

Head = Tagger | ActionFormerLite


@dataclass
class Example:
    """One annotated video: its rows and its ground truth in steps (start, end, class index)."""

    video: Video
    entry: str  # its id in the annotations (and in predictions.json)
    truth: StepSegments


@dataclass
class LocalizeResult:
    run_dir: Path
    metrics: dict


def default_out(model: str) -> Path:
    return repo_root() / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{KIND}-{model}"


def examples(dense: DenseSet, matched: Matched, part: str) -> list[Example]:
    """The videos of one part ("train" or "eval") with their segments in steps."""
    out = []
    for truth in matched.part(part):
        video = dense.videos[truth.video_id]
        steps = [
            (video.to_steps(s.start), video.to_steps(s.end), matched.classes.index(s.label)) for s in truth.segments
        ]
        out.append(Example(video, truth.entry, steps))
    return out


def training_stats(videos: list[Video]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (D,) float32 over every row of `videos` (float64 sums)."""
    total = sum(v.length for v in videos)
    s = sum(v.features.astype(np.float64).sum(0) for v in videos)
    sq = sum((v.features.astype(np.float64) ** 2).sum(0) for v in videos)
    mean = s / total
    std = np.sqrt(np.maximum(sq / total - mean**2, 0)) + 1e-6
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32))


def collate(
    items: list[Example], multiple: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, T, D) float32 zero-padded to the longest (rounded up to `multiple`), lengths (B,), present (B, M)."""
    longest = max(e.video.length for e in items)
    frames = math.ceil(longest / multiple) * multiple
    x = np.zeros((len(items), frames, items[0].video.features.shape[1]), np.float32)
    for b, e in enumerate(items):
        x[b, : e.video.length] = e.video.features
    lengths = torch.tensor([e.video.length for e in items])
    present = torch.from_numpy(np.stack([e.video.present for e in items]))
    return torch.from_numpy(x).to(device), lengths.to(device), present.to(device)


def pad_multiple(model: Head) -> int:
    """A batch's steps are padded to a multiple of this: the pyramid's coarsest stride, so every level halves exactly."""
    return 2 ** (model.levels - 1) if isinstance(model, ActionFormerLite) else 1


def length_batches(items: list[Example], batch: int, generator: torch.Generator) -> list[list[Example]]:
    """Batches of videos of similar length (sorted, cut), in a shuffled order; ties of length in a random order."""
    jitter = torch.rand(len(items), generator=generator).numpy()
    order = sorted(range(len(items)), key=lambda i: (items[i].video.length, jitter[i]))
    groups = [[items[i] for i in order[s : s + batch]] for s in range(0, len(order), batch)]
    return [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]


def fit(model: Head, train: list[Example], cfg: LocalizeConfig, device: torch.device) -> list[dict]:
    """Train for cfg.epochs (AdamW, warmup then cosine, gradient clipping); the epochs' history."""
    opt = make_optimizer(model, cfg, device)
    steps = math.ceil(len(train) / cfg.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    multiple = pad_multiple(model)
    history = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        desc = f"localize {cfg.model} epoch {epoch}/{cfg.epochs}"
        bar = console.progress(len(train), "video", desc, disable=not cfg.progress, leave=False)
        loss_sum, start = 0.0, time.perf_counter()
        for items in length_batches(train, cfg.batch, generator):
            x, lengths, present = collate(items, multiple, device)
            loss = model.loss(model(x, lengths, present), [e.truth for e in items])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            sched.step()
            value = float(loss.detach())  # one sync per step: these heads are small, and mostly on a CPU
            loss_sum += value * len(items)
            bar.update(len(items))
            bar.set_postfix(loss=f"{value:.3f}")
        bar.close()
        entry = {"epoch": epoch, "train_loss": loss_sum / len(train), "seconds": time.perf_counter() - start}
        history.append(entry)
        if cfg.progress:
            console.say(f"{desc}: loss {entry['train_loss']:.4f}  [{time.perf_counter() - t0:.1f} s]")
    return history


@torch.no_grad()
def segments_of(model: Head, video: Video, classes: list[str], cfg: LocalizeConfig, device: torch.device) -> list[dict]:
    """One video's segments as ActivityNet's results list them ({"label", "score", "segment": [s, e]}), best first."""
    model.eval()
    x, lengths, present = collate([Example(video, video.video_id, [])], pad_multiple(model), device)
    found = model.decode(model(x, lengths, present), 0, video.length, cfg.tag_threshold, cfg.max_segments)
    out = []
    for start, end, c, score in found:
        s, e = video.to_seconds(start), video.to_seconds(end)
        if e > s:
            out.append({"label": classes[c], "score": round(score, 6), "segment": [round(s, 3), round(e, 3)]})
    return out


def model_spec(cfg: LocalizeConfig, dense: DenseSet, classes: list[str]) -> dict:
    """Everything needed to rebuild the head (plain JSON)."""
    return {
        "name": cfg.model,
        "input_dims": dense.dims,
        "modalities": dense.modalities,
        "num_classes": len(classes),
        "hidden": cfg.hidden,
        "levels": cfg.levels,
        "dropout": cfg.dropout,
        "modality_dropout": cfg.modality_dropout if len(dense.dims) > 1 else 0.0,
    }


def fit_and_score(
    cfg: LocalizeConfig,
    dense: DenseSet,
    matched: Matched,
    run_dir: Path,
    device: torch.device,
) -> LocalizeResult:
    """Train on the training part, score the validation part, write the run directory."""
    seed_everything(cfg.seed)
    train, held = examples(dense, matched, "train"), examples(dense, matched, "eval")
    mean, std = training_stats([e.video for e in train])
    spec = model_spec(cfg, dense, matched.classes)
    model = build_head(spec, mean, std).to(device)
    params = count_parameters(model)
    atomic_write_json(
        run_dir / CONFIG,
        {
            "kind": KIND,
            "localize": cfg.to_json(),
            "model": spec,
            "classes": matched.classes,
            "parts": {"train": len(train), "eval": len(held)},
            "notes": matched.notes,
            "device": str(device),
            "params": params,
            "torch": torch.__version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "feature_sets": dense.records,
        },
    )
    console.say(
        f"localize {cfg.model}: {len(train)} training / {len(held)} scored videos, {len(matched.classes)} classes, "
        f"{sum(e.video.length for e in train):,} training rows in memory, {params:,} parameters, {device}"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(device, cfg.batch, cfg.hidden))
    try:
        history = fit(model, train, cfg, device)
        torch.save(model.state_dict(), run_dir / CHECKPOINT)
        seconds = float(np.mean([h["seconds"] for h in history]))
        extra = {"params": params, "history": history, "seconds_per_epoch": seconds}
        return LocalizeResult(run_dir, report(run_dir, model, held, matched.classes, cfg, device, extra))
    finally:
        torch.set_num_threads(threads)


def report(
    run_dir: Path,
    model: Head,
    held: list[Example],
    classes: list[str],
    cfg: LocalizeConfig,
    device: torch.device,
    extra: dict,
) -> dict:
    """predictions.json, metrics.json and the timelines of the scored videos; the metrics."""
    results = {e.entry: segments_of(model, e.video, classes, cfg, device) for e in held}
    atomic_write_json(run_dir / PREDICTIONS, {"version": "vidstore", "results": results, "external_data": {}})
    truth = [(e.entry, e.video.to_seconds(s), e.video.to_seconds(t), classes[c]) for e in held for s, t, c in e.truth]
    metrics = {**localization_metrics(truth, results_rows(results)), "model": cfg.model, "videos": len(held), **extra}
    atomic_write_json(run_dir / METRICS, metrics)
    (run_dir / TIMELINES).mkdir(exist_ok=True)
    for e in held:
        gt = [(e.video.to_seconds(s), e.video.to_seconds(t), classes[c]) for s, t, c in e.truth]
        plots.timeline(
            run_dir / TIMELINES / f"{safe_name(e.entry)}.png", e.entry, e.video.duration, classes, gt, results[e.entry]
        )
    console.result(headline(cfg.model, metrics, run_dir))
    return metrics


def safe_name(entry: str) -> str:
    """A file name for an annotation id (folders flattened)."""
    return entry.replace("/", "__")


def headline(model: str, metrics: dict, run_dir: Path) -> str:
    figures = "  ".join(f"{k} {metrics[k]:.4f}" for k in ("mAP@0.3", "mAP@0.5", "mAP@0.7", "mAP", "mAP@0.5:0.95"))
    return f"localize {model}: {figures}  ({metrics['videos']} videos scored)  -> {run_dir}"


def localize(cfg: LocalizeConfig) -> LocalizeResult:
    """Read FEATURES= and ANNOTATIONS=, train and score; the run directory is marked FAILED until done."""
    if not cfg.features or not cfg.annotations:  # neither: the CLI's sample path (stages/localize_sample.py)
        raise ConfigError("--features (FEATURES=) and --annotations (ANNOTATIONS=): both are needed here")
    annotations = Path(cfg.annotations).resolve()
    cfg = cfg.replace(annotations=annotations)  # recorded whole: evaluate finds it from anywhere
    device = resolve_device(cfg.device)
    dense = read_dense(store.resolve_feature_sets("", cfg.features, cfg.features_root))
    ids = list(dense.videos)
    matched = match(annotations, ids, [dense.videos[v].duration for v in ids], cfg.train_subset, cfg.eval_subset)
    for note in matched.notes:
        console.say(f"note: {note}")
    run_dir = Path(cfg.out) if cfg.out else default_out(cfg.model)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).unlink(missing_ok=True)
    try:
        return fit_and_score(cfg, dense, matched, run_dir, device)
    except BaseException as e:  # Ctrl-C too: a directory without its results must say it has none
        console.say(f"run directory {run_dir} marked {FAILED}: {mark_failed(run_dir, e)}")
        raise


def is_localization_run(run_dir: Path) -> bool:
    config = Path(run_dir) / CONFIG
    return config.is_file() and json.loads(config.read_text()).get("kind") == KIND


def load_run(run_dir: Path, device: torch.device) -> tuple[Head, dict]:
    """The trained head (eval mode, on `device`) and config.json of a localization run; FAILED refused."""
    run_dir = Path(run_dir)
    if (run_dir / FAILED).is_file():
        raise FileNotFoundError(
            f"--run (RUN=): the run in {run_dir} did not finish ({(run_dir / FAILED).read_text().strip()}); "
            f"run make localize again, or pass another run directory"
        )
    if not (run_dir / CHECKPOINT).is_file():
        raise FileNotFoundError(
            f"--run (RUN=): no {CHECKPOINT} in {run_dir}; pass the directory `make localize` printed"
        )
    config = json.loads((run_dir / CONFIG).read_text())
    model = build_head(config["model"])
    model.load_state_dict(torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True))
    return model.to(device).eval(), config


def evaluate_run(run_dir: Path, device: str = "auto") -> LocalizeResult:
    """The run's checkpoint on its validation videos again (the set and annotations its config.json
    names): predictions.json, metrics.json and the timelines rewritten, the metrics returned."""
    dev = resolve_device(device)
    model, config = load_run(run_dir, dev)
    cfg = LocalizeConfig(**{**config["localize"], "device": device})
    dense = read_dense([Path(r["dir"]) for r in config["feature_sets"]])
    ids = list(dense.videos)
    matched = match(
        Path(config["localize"]["annotations"]),
        ids,
        [dense.videos[v].duration for v in ids],
        cfg.train_subset,
        cfg.eval_subset,
    )
    if matched.classes != config["classes"]:
        raise ConfigError(
            f"{cfg.annotations}: its classes are no longer the ones {run_dir} was trained on; train again"
        )
    previous = json.loads((Path(run_dir) / METRICS).read_text()) if (Path(run_dir) / METRICS).is_file() else {}
    kept = {k: previous[k] for k in ("params", "history", "seconds_per_epoch") if k in previous}
    held = examples(dense, matched, "eval")
    return LocalizeResult(Path(run_dir), report(Path(run_dir), model, held, matched.classes, cfg, dev, kept))
