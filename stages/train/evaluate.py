"""Predictions, metrics and reports of a test part; re-evaluating a run's checkpoint.

predict_part(model, part, ...) -> probs, labels, loss
compute_metrics(probs, labels, classes) -> top-1, top-5, mean class accuracy, per class
write_report(run_dir, ...)     metrics.json, predictions.csv, confusion.png
evaluate_run(run_dir)          the checkpoint(s) of a run, on its test part, again
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from pipeline import FeatureSetView, console
from pipeline.devices import resolve_device, training_precision
from pipeline.errors import ReaderError
from pipeline.files import atomic_write_json

from .models import TemporalClassifier
from .runs import CONFUSION, METRICS, PREDICTIONS, load_run, run_dirs
from .sources import MemorySource, RaggedSource, Source, StreamSource, choose_load

HEADLINE = ("top1", "top5", "mean_class_acc")


@torch.no_grad()
def predict_part(
    model: TemporalClassifier, part: Source, batch: int, autocast_dtype: torch.dtype | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Class probabilities of every video of a reader source, in the source's order.

    Returns probs (N, C) float32, labels (N,) int64 and the mean cross-entropy (no smoothing).
    """
    model.eval()
    probs: np.ndarray | None = None  # (N, C), once the first batch tells C
    labels = np.zeros(len(part), np.int64)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for b in part.batches(batch):
        with torch.autocast(b.x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model.classify(b.x, b.lengths, b.present)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, b.labels, reduction="sum").double().cpu()
        p = logits.softmax(1).cpu().numpy()
        if probs is None:
            probs = np.zeros((len(part), p.shape[1]), np.float32)
        probs[b.positions], labels[b.positions] = p, b.labels.cpu().numpy()
    if probs is None:
        raise ValueError("cannot evaluate an empty part")
    return probs, labels, float(loss_sum) / len(part)


def compute_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Top-1, top-5 (fractions), mean class accuracy and per-class accuracy.

    probs (N, C) float; labels (N,) int. Classes absent from `labels` get accuracy None and
    do not count in the mean class accuracy.
    """
    k = min(5, probs.shape[1])
    topk = np.argsort(-probs, axis=1)[:, :k]
    pred = topk[:, 0]
    per_class = {}
    for c, name in enumerate(classes):
        mask = labels == c
        per_class[name] = float((pred[mask] == c).mean()) if mask.any() else None
    present = [v for v in per_class.values() if v is not None]
    return {
        "top1": float((pred == labels).mean()),
        "top5": float((topk == labels[:, None]).any(1).mean()),
        "mean_class_acc": float(np.mean(present)) if present else float("nan"),
        "videos": int(len(labels)),
        "per_class": per_class,
    }


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def write_predictions(
    path: Path, video_ids: Iterable[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]
) -> None:
    """predictions.csv: video_id, label, predicted, probability, correct, top5 ("class:prob;...")."""
    top = np.argsort(-probs, axis=1)[:, :5]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "predicted", "probability", "correct", "top5"])
        for vid, y, p, t in zip(video_ids, labels, probs, top):
            w.writerow(
                [
                    vid,
                    classes[y],
                    classes[t[0]],
                    f"{p[t[0]]:.4f}",
                    int(t[0] == y),
                    ";".join(f"{classes[c]}:{p[c]:.4f}" for c in t),
                ]
            )


def plot_confusion(path: Path, labels: np.ndarray, pred: np.ndarray, classes: list[str], title: str) -> None:
    """Row-normalised confusion matrix; class names on the axes when there are few enough to read."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    cm = confusion_matrix(labels, pred, len(classes)).astype(float)
    cm /= np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + 0.12 * len(classes), 18)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if len(classes) <= 40:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        if len(classes) <= 12:
            for i in range(len(classes)):
                for j in range(len(classes)):
                    if cm[i, j] > 0:
                        ax.text(
                            j,
                            i,
                            f"{cm[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if cm[i, j] > 0.5 else "black",
                        )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: Path, history: list[dict], title: str) -> None:
    """Loss and accuracy per epoch, training and validation; the kept epoch is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, name in ((ax1, "loss", "loss"), (ax2, "acc", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train")
        if any(h.get(f"val_{key}") is not None for h in history):
            ax.plot(epochs, [h.get(f"val_{key}") for h in history], label="validation")
        best = [h["epoch"] for h in history if h.get("best")]
        if best:
            ax.axvline(best[-1], color="grey", linestyle=":", label=f"kept (epoch {best[-1]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    run_dir: Path,
    video_ids: Iterable[str],
    probs: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    title: str,
    extra: dict,
) -> dict:
    """metrics.json, predictions.csv and confusion.png of the test part: `video_ids` (N,), probs (N, C),
    labels (N,). What a trained run and a zero-shot run (stages/zeroshot) both write. Returns the metrics."""
    metrics = compute_metrics(probs, labels, classes) | extra
    atomic_write_json(run_dir / METRICS, metrics)
    write_predictions(run_dir / PREDICTIONS, video_ids, labels, probs, classes)
    plot_confusion(
        run_dir / CONFUSION,
        labels,
        probs.argmax(1),
        classes,
        f"{title}: top-1 {metrics['top1']:.3f}, mean class acc {metrics['mean_class_acc']:.3f}",
    )
    return metrics


def headline(metrics: dict) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE if metrics.get(k) is not None)


def mean_metrics(runs: list[dict]) -> dict:
    """Headline metrics averaged over runs (splits), as UCF101 results are quoted."""
    return {k: float(np.mean([r[k] for r in runs])) for k in HEADLINE}


def write_split_means(out: Path, by_split: dict[str, dict]) -> dict:
    """A SPLIT=all run's own metrics.json: the mean over splits and each split's headline. Returns the mean."""
    mean = mean_metrics(list(by_split.values()))
    splits = {name: {k: m[k] for k in HEADLINE} for name, m in by_split.items()}
    atomic_write_json(out / METRICS, {"mean": mean, "splits": splits})
    return mean


def report_splits(
    label: str, out: Path, by_split: dict[str, dict], detail: dict[str, str], run_dirs: list[Path]
) -> None:
    """Each split's result line on stdout (`label split k: headline  (detail)  -> its directory`),
    then, for several splits, the mean's, written to the run's own metrics.json."""
    for (name, metrics), run_dir in zip(by_split.items(), run_dirs, strict=True):
        console.result(f"{label} split {name}: {headline(metrics)}  ({detail[name]})  -> {run_dir}")
    if len(by_split) > 1:
        mean = write_split_means(out, by_split)
        console.result(f"{label} mean over splits {', '.join(by_split)}: {headline(mean)}  -> {out}")


def test_source(
    view: FeatureSetView,
    rows: np.ndarray,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
) -> MemorySource | StreamSource | RaggedSource:
    """The test part of a split, whole in memory when it fits, else streamed (a ragged set's: by length)."""
    if view.ragged:
        size = int(view.index.lengths[rows].sum())
        mode = choose_load("auto", size, 1, view.feature_dim, dtype, device)
        return RaggedSource(view, rows, mean, std, device, dtype, mode)
    if choose_load("auto", len(rows), view.frames, view.feature_dim, dtype, device) == "stream":
        return StreamSource(view, rows, mean, std, device, dtype)
    return MemorySource.of_rows(view, view.read(rows), np.arange(len(rows)), rows, mean, std, device, dtype)


def evaluate_run(run_dir: Path, device: str = "auto", batch: int = 256) -> dict:
    """Re-evaluate the checkpoint(s) of a run on its test part; rewrite the reports.

    The feature set and split are the ones in config.json, and the features are
    standardised with the statistics saved in the checkpoint. For a SPLIT=all run, every
    split is re-evaluated and the mean is rewritten too. Returns the (mean) metrics.
    """
    dev = resolve_device(device)
    results = []
    for d in run_dirs(run_dir):
        model, config = load_run(d, dev)
        autocast_dtype, data_dtype = training_precision(config["train"].get("precision", "auto"), dev)
        view = FeatureSetView([Path(s["dir"]) for s in config["feature_sets"]])
        if sorted(view.ids) != sorted(s["id"] for s in config["feature_sets"]):
            raise ReaderError(
                f"the feature sets at the run's directories are now {', '.join(view.ids)}; the run was "
                f"trained on {', '.join(s['id'] for s in config['feature_sets'])}"
            )
        test = view.split(config["split"], config["train"]["seed"], config["train"]["test_fraction"]).test
        part = test_source(view, test, model.norm.mean, model.norm.std, dev, data_dtype)
        t0 = time.perf_counter()
        probs, labels, loss = predict_part(model, part, batch, autocast_dtype)
        old = json.loads((d / METRICS).read_text()) if (d / METRICS).is_file() else {}
        keep = {k: old[k] for k in ("history", "params", "train_seconds", "best_epoch", "epochs_run") if k in old}
        title = f"{config['model']['name']} split {config['split']}"
        metrics = write_report(
            d,
            part.video_ids,
            probs,
            labels,
            view.classes,
            title,
            keep
            | {
                "test_loss": loss,
                "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "eval_seconds": time.perf_counter() - t0,
            },
        )
        console.result(f"{d}: {headline(metrics)}  ({metrics['videos']} test videos)")
        results.append(metrics)
    if len(results) == 1:
        return results[0]
    mean = mean_metrics(results)
    summary_path = Path(run_dir) / METRICS
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    atomic_write_json(summary_path, summary | {"mean": mean})
    console.result(f"mean over {len(results)} splits: {headline(mean)}")
    return mean
