"""Metrics, reports and plots of a run; re-evaluating a checkpoint; comparing every head.

A run directory holds:

    config.json       the resolved TrainConfig, model hyper-parameters, feature set(s), split sizes
    checkpoint.pt     the best state dict (torch.load(..., weights_only=True))
    metrics.json      test top-1 / top-5 (fractions), mean class accuracy, per-class accuracy, history
    predictions.csv   one row per test video: truth, prediction, its probability, top-5
    confusion.png     row-normalised confusion matrix of the test part
    curves.png        training and validation loss and accuracy per epoch
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipeline import store

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
CONFUSION = "confusion.png"
CURVES = "curves.png"
HEADLINE = ("top1", "top5", "mean_class_acc")


# ---------------------------------------------------------------- predictions and metrics
@torch.no_grad()
def predict_part(model: torch.nn.Module, part, batch: int, autocast_dtype: torch.dtype | None
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """Class probabilities of every video of a reader source, in the source's order.

    Returns probs (N, C) float32, labels (N,) int64 and the mean cross-entropy (no smoothing).
    """
    model.eval()
    probs = labels = None
    loss_sum = torch.zeros((), dtype=torch.float64)
    for x, lengths, y, pos in part.batches(batch):
        with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model.classify(x, lengths)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").double().cpu()
        p = logits.softmax(1).cpu().numpy()
        if probs is None:
            probs = np.zeros((len(part), p.shape[1]), np.float32)
            labels = np.zeros(len(part), np.int64)
        probs[pos], labels[pos] = p, y.cpu().numpy()
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
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


# ---------------------------------------------------------------- files
def write_json(path: Path, obj) -> None:
    store.atomic_write_bytes(Path(path), json.dumps(obj, indent=1, ensure_ascii=False, default=str).encode())


def write_predictions(path: Path, video_ids: Iterable[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    """predictions.csv: video_id, label, predicted, probability, correct, top5 ("class:prob;...")."""
    top = np.argsort(-probs, axis=1)[:, :5]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "predicted", "probability", "correct", "top5"])
        for vid, y, p, t in zip(video_ids, labels, probs, top):
            w.writerow([vid, classes[y], classes[t[0]], f"{p[t[0]]:.4f}", int(t[0] == y),
                        ";".join(f"{classes[c]}:{p[c]:.4f}" for c in t)])


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
                        ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="white" if cm[i, j] > 0.5 else "black")
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


def write_report(run_dir: Path, part, probs: np.ndarray, labels: np.ndarray, classes: list[str], title: str,
                 extra: dict) -> dict:
    """metrics.json, predictions.csv and confusion.png of the test part. Returns the metrics."""
    metrics = compute_metrics(probs, labels, classes) | extra
    write_json(run_dir / METRICS, metrics)
    write_predictions(run_dir / PREDICTIONS, part.video_ids, labels, probs, classes)
    plot_confusion(run_dir / CONFUSION, labels, probs.argmax(1), classes,
                   f"{title}: top-1 {metrics['top1']:.3f}, mean class acc {metrics['mean_class_acc']:.3f}")
    return metrics


def headline(metrics: dict) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE if metrics.get(k) is not None)


def mean_metrics(runs: list[dict]) -> dict:
    """Headline metrics averaged over runs (splits), as UCF101 results are quoted."""
    return {k: float(np.mean([r[k] for r in runs])) for k in HEADLINE}


# ---------------------------------------------------------------- re-evaluation
def run_dirs(run_dir: Path) -> list[Path]:
    """The run directories under `run_dir`: itself, or its split<k>/ children for SPLIT=all."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).is_file():
        return [run_dir]
    children = sorted(d for d in run_dir.glob("split*") if (d / CHECKPOINT).is_file())
    if not children:
        raise FileNotFoundError(f"--run (RUN=): no {CHECKPOINT} in {run_dir} or its split*/ directories; "
                                f"pass the directory `make train` printed")
    return children


def load_run(run_dir: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The trained model (eval mode, on `device`) and config.json of one run directory."""
    from .models import build_from_spec

    config = json.loads((Path(run_dir) / CONFIG).read_text())
    model = build_from_spec(config["model"])
    state = torch.load(Path(run_dir) / CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), config


def evaluate_run(run_dir: Path, device: str = "auto", batch: int = 256) -> dict:
    """Re-evaluate the checkpoint(s) of a run on its test part; rewrite the reports.

    The feature set and split are the ones in config.json, and the features are
    standardised with the statistics saved in the checkpoint. For a SPLIT=all run, every
    split is re-evaluated and the mean is rewritten too. Returns the (mean) metrics.
    """
    from pipeline import reader

    from .backbone import resolve_device
    from .train import resolve_precision

    dev = resolve_device(device)
    results = []
    for d in run_dirs(run_dir):
        model, config = load_run(d, dev)
        autocast_dtype, data_dtype = resolve_precision(config["train"].get("precision", "auto"), dev)
        sets = reader.open_feature_sets([Path(s["dir"]) for s in config["feature_sets"]])
        for fs, recorded in zip(sets, config["feature_sets"]):
            if fs.id != recorded["id"]:
                raise reader.ReaderError(f"{fs.set_dir} now holds feature set {fs.id}, the run was trained on {recorded['id']}")
        index = reader.read_index(sets)
        split = reader.select_split(sets, index, config["split"], config["train"]["seed"], config["train"]["test_fraction"])
        norm = model.norm
        stream = reader.choose_load("auto", len(split.test), sets[0].frames, sets[0].feature_dim, data_dtype, dev) == "stream"
        if stream:
            part = reader.StreamSource(sets, index, split.test, norm.mean, norm.std, dev, data_dtype)
        else:
            feats = reader.read_features(sets, index, split.test)
            part = reader.MemorySource(feats, np.arange(len(split.test)), index.lengths[split.test], index.labels[split.test],
                                       index.video_ids[split.test], norm.mean, norm.std, dev, data_dtype)
        t0 = time.perf_counter()
        probs, labels, loss = predict_part(model, part, batch, autocast_dtype)
        old = json.loads((d / METRICS).read_text()) if (d / METRICS).is_file() else {}
        keep = {k: old[k] for k in ("history", "params", "train_seconds", "best_epoch", "epochs_run") if k in old}
        title = f"{config['model']['name']} split {config['split']}"
        metrics = write_report(d, part, probs, labels, sets[0].classes, title,
                               keep | {"test_loss": loss, "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                       "eval_seconds": time.perf_counter() - t0})
        print(f"{d}: {headline(metrics)}  ({metrics['videos']} test videos)", flush=True)
        results.append(metrics)
    if len(results) == 1:
        return results[0]
    mean = mean_metrics(results)
    summary_path = Path(run_dir) / METRICS
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    write_json(summary_path, summary | {"mean": mean})
    print(f"mean over {len(results)} splits: {headline(mean)}", flush=True)
    return mean


# ---------------------------------------------------------------- comparing heads
COMPARE_COLUMNS = ("model", "params", "train_s", "top1", "top5", "mean_class_acc")


def format_table(rows: list[dict], columns: tuple[str, ...] = COMPARE_COLUMNS) -> str:
    """A plain-text table: right-aligned numbers, one row per model."""
    def cell(column: str, v) -> str:
        if column in HEADLINE:
            return f"{v:.4f}"  # fractions
        if isinstance(v, float):
            return f"{v:.1f}"  # seconds
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [[cell(c, r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(columns), "  ".join("-" * w for w in widths), *map(line, cells)])


def compare(cfg, models: tuple[str, ...] | None = None) -> list[dict]:
    """Train every head on the same split(s) and data; print and write the table.

    Writes compare.json, compare.csv and compare.txt into cfg.out (default
    runs/<time>-compare-split<k>/), one run directory per head inside it. With SPLIT=all
    the metrics are means over the splits and train_s the total.
    """
    from .models import HEADS
    from .backbone import resolve_device
    from .train import default_out, load_data, resolve_precision, train

    out = Path(cfg.out) if cfg.out else default_out("compare", cfg.split)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(cfg.device)
    data = load_data(cfg, dev, resolve_precision(cfg.precision, dev)[1])  # read once, shared by every head
    rows = []
    for name in models or HEADS:
        result = train(cfg.replace(model=name, out=out / name), data=data)
        rows.append({"model": name, "params": result.runs[0].params, "train_s": sum(r.train_seconds for r in result.runs)}
                    | result.mean | {"run_dir": str(result.run_dir)})
    table = format_table(rows)
    print(f"\n{table}\n", flush=True)
    (out / "compare.txt").write_text(table + "\n")
    write_json(out / "compare.json", {"split": cfg.split, "rows": rows, "config": cfg.to_json()})
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*COMPARE_COLUMNS, "run_dir"])
        w.writeheader()
        w.writerows(rows)
    print(f"compare table: {out / 'compare.txt'}", flush=True)
    return rows

