"""Stage two: train a temporal head straight from a feature set and write the run directory.

train(cfg) -> TrainResult      one split, or SPLIT=all: each official split and the mean
load_data(cfg, ...)            the set(s), index and split(s), read once (compare shares it)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import FeatureSetView, console, store
from pipeline.devices import resolve_device, training_precision
from pipeline.errors import ConfigError
from pipeline.files import atomic_write_json
from pipeline.store.stats import feature_stats

from . import evaluate
from .config import TrainConfig
from .fusion import ENCODER_HEADS, effective_fusion
from .loop import auto_batch, cpu_threads, fit, seed_everything
from .models import LSTM_BUFFERS, TemporalClassifier, count_parameters
from .runs import CHECKPOINT, CONFIG, CURVES, FAILED, mark_failed, split_dirs
from .sources import (
    MemorySource,
    RaggedSource,
    Source,
    StreamSource,
    choose_load,
    flat_rows,
    memory_chunks,
    ragged_chunks,
)
from .spec import build_from_spec, model_spec


@dataclass
class LoadedFeatures:
    """The feature set(s) and splits a run reads, loaded once (shared by `compare`).

    view: the set(s), opened through the store's reader (pipeline.FeatureSetView);
    store_features (M, T, D) float16 holds every video of the selected splits when
    mode == "memory" (None when streaming; a ragged set's are store_videos instead, M
    arrays (T_i, D) float16); position (N,) maps an index row to its place in it (-1: not loaded).
    """

    view: FeatureSetView
    splits: dict[str, store.Split]
    mode: str
    store_features: np.ndarray | None = None
    store_videos: list[np.ndarray] | None = None
    position: np.ndarray | None = None
    read_seconds: float = 0.0

    @property
    def index(self) -> store.Index:
        return self.view.index


def feature_dirs(cfg: TrainConfig) -> list[Path]:
    """FEATURES= as given, else the default set for DATASET= of each of MODALITIES= (rgb alone by default)."""
    if cfg.features:
        return store.resolve_feature_sets(cfg.store_dataset, cfg.features, cfg.features_root)
    return [
        d
        for m in cfg.modalities or ("rgb",)
        for d in store.resolve_feature_sets(cfg.store_dataset, None, cfg.features_root, m, cfg.dataset_words)
    ]


def open_view(cfg: TrainConfig) -> FeatureSetView:
    """The set(s) a run reads, joined on video id; MODALITIES= beside FEATURES= must name the sets' modalities.
    An unlabelled set (no classes) is refused: stage two's runs are classifiers."""
    view = FeatureSetView(feature_dirs(cfg))
    if not view.classes:
        raise ConfigError(
            f"{', '.join(store.display(fs.set_dir) for m in view.modalities for fs in view.sets[m])}: the feature set "
            f"has no labels (its CSV list has no label column), so no classifier can be trained or scored on it. "
            f"Add a label column to the CSV (path,label[,split][,group]) and run make features again for a "
            f"labelled set, or read these features from your own code (pipeline.FeatureStore, docs/api.md)"
        )
    if cfg.features and cfg.modalities and sorted(cfg.modalities) != sorted(view.modalities):
        raise ConfigError(
            f"--modalities (MODALITIES=) {','.join(cfg.modalities)}: the sets FEATURES= names hold "
            f"{','.join(view.modalities)}; leave MODALITIES= out when FEATURES= names the sets"
        )
    return view


def load_data(cfg: TrainConfig, device: torch.device, dtype: torch.dtype) -> LoadedFeatures:
    """Resolve FEATURES=/DATASET=/MODALITIES=, open the set(s), select the split(s), read features if they fit."""
    t0 = time.perf_counter()
    view = open_view(cfg)
    for fs in (fs for m in view.modalities for fs in view.sets[m]):
        if not fs.manifest.complete:
            console.say(
                f"warning: feature set {store.display(fs.set_dir)} is incomplete ({fs.manifest.num_stored} of "
                f"{fs.manifest.num_videos} videos committed); training on what is there"
            )
    splits = {n: view.split(n, cfg.seed, cfg.test_fraction) for n in view.split_names(cfg.split)}
    rows = np.unique(np.concatenate([np.concatenate([s.train, s.test]) for s in splits.values()]))
    # a ragged set's size is its rows: as many videos of one frame each
    size = (int(view.index.lengths[rows].sum()), 1) if view.ragged else (len(rows), view.frames or 0)
    mode = choose_load(cfg.load, *size, view.feature_dim, dtype, device)
    data = LoadedFeatures(view, splits, mode)
    if mode == "memory":
        if view.ragged:
            data.store_videos = view.read_videos(rows)
        else:
            data.store_features = view.read(rows)
        data.position = np.full(view.num_videos, -1, np.int64)
        data.position[rows] = np.arange(len(rows))
    data.read_seconds = time.perf_counter() - t0
    return data


@dataclass
class SplitSources:
    """Train / validation / test sources of one split, standardised with training statistics."""

    train: Source
    val: Source | None  # None: too few groups per class to carve a validation part
    test: Source
    mean: torch.Tensor  # (D,) float32
    std: torch.Tensor  # (D,) float32
    sizes: dict


def make_parts(
    data: LoadedFeatures, split: store.Split, cfg: TrainConfig, device: torch.device, dtype: torch.dtype
) -> SplitSources:
    """Carve validation from the training side by group, compute statistics, build the sources."""
    train_rows, val_rows = store.carve_by_group(split.train, data.index, cfg.val_fraction, cfg.seed)
    idx = data.index
    presence = data.view.presence
    source: Callable[[np.ndarray], Source]
    if data.view.ragged:
        mean, std, source = ragged_parts(data, train_rows, device, dtype)
    elif data.mode == "memory":
        # load_data fills both in memory mode
        assert data.store_features is not None and data.position is not None
        features, position = data.store_features, data.position
        pos = lambda rows: position[rows]
        mean, std = feature_stats(
            memory_chunks(features, pos(train_rows), idx.lengths[train_rows], presence[train_rows]),
            device,
            list(data.view.dims.values()),
        )
        source = lambda rows: MemorySource.of_rows(data.view, features, pos(rows), rows, mean, std, device, dtype)
    else:
        mean, std = data.view.stats(train_rows, device)
        source = lambda rows: StreamSource(data.view, rows, mean, std, device, dtype)
    sizes = {
        "train": len(train_rows),
        "val": len(val_rows),
        "test": len(split.test),
        "carved_test": split.carved_test,
        "missing": split.missing,
    }
    return SplitSources(
        source(train_rows), source(val_rows) if len(val_rows) else None, source(split.test), mean, std, sizes
    )


def ragged_parts(
    data: LoadedFeatures, train_rows: np.ndarray, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, Callable[[np.ndarray], Source]]:
    """A ragged set's training statistics (every stored row of the training part counts once) and
    its sources (RaggedSource: in memory from the videos read once, or streamed)."""
    view, dims = data.view, list(data.view.dims.values())
    if data.mode != "memory":
        mean, std = view.stats(train_rows, device)
        return mean, std, lambda rows: RaggedSource(view, rows, mean, std, device, dtype, "stream")
    assert data.store_videos is not None and data.position is not None  # load_data fills both in memory mode
    videos, position = data.store_videos, data.position
    part = lambda rows: [videos[p] for p in position[rows]]
    flat, _, lengths = flat_rows(part(train_rows), view.feature_dim)
    mean, std = feature_stats(ragged_chunks(flat, view.presence[train_rows], lengths), device, dims)
    del flat
    return mean, std, lambda rows: RaggedSource(view, rows, mean, std, device, dtype, "memory", part(rows))


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


def train_split(cfg: TrainConfig, data: LoadedFeatures, name: str, run_dir: Path, device: torch.device) -> RunResult:
    """Train and evaluate on one split; write the run directory, marked FAILED if it is not finished."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / FAILED).unlink(missing_ok=True)  # OUT= reused after a failure
    try:
        return build_and_fit(cfg, data, name, run_dir, device)
    except BaseException as e:  # Ctrl-C too: a directory without its results must say it has none
        console.say(f"run directory {run_dir} marked {FAILED}: {mark_failed(run_dir, e)}")
        raise


def build_and_fit(cfg: TrainConfig, data: LoadedFeatures, name: str, run_dir: Path, device: torch.device) -> RunResult:
    """Carve the parts, build the model, record config.json, fit and report."""
    autocast_dtype, data_dtype = training_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    parts = make_parts(data, data.splits[name], cfg, device, data_dtype)
    spec = model_spec(cfg, data.view)
    model = build_from_spec(spec, parts.mean, parts.std).to(device)
    batch = auto_batch(cfg.batch, len(parts.train))
    params = count_parameters(model)
    atomic_write_json(
        run_dir / CONFIG,
        {
            "train": cfg.to_json(),
            "model": spec,
            "split": name,
            "parts": parts.sizes,
            "batch": batch,
            "device": str(device),
            "precision": str(autocast_dtype or torch.float32).replace("torch.", ""),
            "load": data.mode,
            "params": params,
            "classes": data.view.classes,
            "torch": torch.__version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "feature_sets": feature_sets_record(data.view),
        },
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(device, batch, max(cfg.hidden, spec["proj"])))
    try:
        return fit_and_report(cfg, data, name, run_dir, device, model, parts, batch, params, autocast_dtype)
    finally:
        torch.set_num_threads(threads)
        LSTM_BUFFERS.clear()


def feature_sets_record(view: FeatureSetView) -> list[dict]:
    """The set(s) a run read, as its config.json records them: where, which, and how they were made
    (what evaluate, predict and `make zeroshot` rebuild from)."""
    return [
        {
            "dir": store.display(store.absolute(s.set_dir)),
            "id": s.id,
            "dataset": s.manifest.dataset,
            "modality": m,
            "frames": s.frames,
            "layout": s.manifest.layout,
            "feature_dim": s.feature_dim,
            "config": s.manifest.config,
            "identity": s.manifest.identity,
        }
        for m in view.modalities
        for s in view.sets[m]
    ]


def modality_note(cfg: TrainConfig, view: FeatureSetView) -> str:
    """The end of the run's summary line with several modalities: fusion, absent streams, modality dropout."""
    if len(view.modalities) == 1:
        return ""
    fusion = effective_fusion(cfg.model, cfg.fusion)
    missing = {m: int((~view.presence[:, k]).sum()) for k, m in enumerate(view.modalities)}
    absent = ", ".join(f"{n} of {view.num_videos} videos without {m}" for m, n in missing.items() if n)
    why = (
        f" (FUSION={cfg.fusion} applies to {', '.join(ENCODER_HEADS)}; {cfg.model} reads the early input)"
        if fusion != cfg.fusion
        else ""
    )
    return (
        f"; {'+'.join(view.modalities)}, {fusion} fusion{why}, {absent or 'every video has every stream'}, "
        f"modality dropout {cfg.modality_dropout:g}"
    )


# The words of --precision (PRECISION=), for the run's summary line: autocast dtype -> name.
PRECISION_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def fit_and_report(
    cfg: TrainConfig,
    data: LoadedFeatures,
    name: str,
    run_dir: Path,
    device: torch.device,
    model: TemporalClassifier,
    parts: SplitSources,
    batch: int,
    params: int,
    autocast_dtype: torch.dtype | None,
) -> RunResult:
    """Fit, keep the best weights, evaluate on the test part and write the reports."""
    label = f"{cfg.model} split {name}"
    if parts.val is None and cfg.val_fraction:
        console.say(
            f"{label}: no validation part (too few groups per class to carve {cfg.val_fraction:.0%} by group): "
            f"no early stopping, the last epoch is kept"
        )
    console.say(
        f"{label}: {parts.sizes['train']} train / {parts.sizes['val']} validation (by group) / {parts.sizes['test']} test "
        f"videos{' (test carved by group: the dataset has no test split)' if parts.sizes['carved_test'] else ''}, "
        f"{params:,} parameters, batch {batch}, {device} {PRECISION_NAMES[autocast_dtype] if autocast_dtype else 'fp32'}, "
        f"data {data.mode}{modality_note(cfg, data.view)}"
    )
    result = fit(model, parts.train, parts.val, cfg, batch, device, autocast_dtype, label)
    torch.save(model.state_dict(), run_dir / CHECKPOINT)
    probs, labels, test_loss = evaluate.predict_part(model, parts.test, batch, autocast_dtype)
    evaluate.plot_curves(run_dir / CURVES, result.history, label)
    metrics = evaluate.write_report(
        run_dir,
        parts.test.video_ids,
        probs,
        labels,
        data.view.classes,
        label,
        {
            "test_loss": test_loss,
            "params": params,
            "train_seconds": result.seconds,
            "read_seconds": data.read_seconds,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "history": result.history,
        },
    )
    return RunResult(run_dir, cfg.model, name, params, result.seconds, result.best_epoch, len(result.history), metrics)


def train(cfg: TrainConfig, data: LoadedFeatures | None = None) -> TrainResult:
    """Train and evaluate `cfg.model` on split `cfg.split` (all: each official split, and the mean).

    Says in one line what it trains on first (the full config goes to config.json), and
    gives the headline metrics and the run directory last. `data` (from load_data) lets
    several runs share one read of the features.
    """
    device = resolve_device(cfg.device)
    if data is None:
        data = load_data(cfg, device, training_precision(cfg.precision, device)[1])
        console.say(
            f"stage two: {cfg.model} on split{'s' if len(data.splits) > 1 else ''} {', '.join(data.splits)} of "
            f"{', '.join(data.view.ids)}: "
            f"{len(data.index.video_ids)} videos in {len(data.index.shards)} shard(s), features {data.mode} "
            f"({data.read_seconds:.1f} s to read); the full config goes to the run's {CONFIG}"
        )
    names = list(data.splits)
    out, dirs = split_dirs(cfg.out, cfg.model, cfg.split, names)
    runs = [train_split(cfg, data, n, d, device) for n, d in zip(names, dirs, strict=True)]
    evaluate.report_splits(
        cfg.model,
        out,
        {r.split: r.metrics for r in runs},
        {r.split: f"best epoch {r.best_epoch}/{r.epochs_run}, {r.train_seconds:.1f} s" for r in runs},
        [r.run_dir for r in runs],
    )
    return TrainResult(out, runs)
