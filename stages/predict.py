"""Classify one new video file with a trained run, or find its segments with a localization run:
stage one on that file, then the head.

The file is decoded and embedded with exactly the extraction settings (and weights) of the
feature set the run was trained on, as recorded in the run's config.json, so its features
live in the same space as the training features. A localization run's sets are dense
(FRAMES=all): the file's rows are computed by stage one's `extract_features` on a one-line
listing of it, into a store of its own in a temporary folder, then read as the run read its set.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline import console
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError

from . import extract, localize, train


def stage_one(run_config: dict, device: torch.device) -> Callable[[Path], tuple[np.ndarray, int, list[bool]]]:
    """A function: video path -> (features (T, D) float16 zero-padded, valid frames, present per
    modality), every modality the run was trained on computed with its feature set's settings and
    put side by side as in training. On `device` (not the one the set was made on: a set made on
    cuda:0 serves predictions on a CPU machine): on a GPU at the set's precision; on a CPU in
    fp32, within fp16 noise of the stored features either way."""
    extractors = []
    for fs in run_config["feature_sets"]:
        precision = fs["identity"].get("precision", "fp32") if device.type == "cuda" else "fp32"
        extractors.append(
            extract.config_from_manifest(fs["config"], fs["identity"], device=str(device), precision=precision)
        )

    def run(path: Path) -> tuple[np.ndarray, int, list[bool]]:
        outs = [extract.extract_video(path, cfg, spec) for cfg, spec in extractors]
        features = np.concatenate([f for f, _, _ in outs], axis=-1)
        return features, outs[0][1], [present for _, _, present in outs]

    return run


def refuse_ragged(config: dict, run_dir: Path) -> None:
    """A run trained on a ragged (dense, FRAMES=all) set is refused with the reason: predict embeds one
    clip with FRAMES=N's sampling, and the head learned from whole-video rows at a dense rate."""
    dense = [fs["id"] for fs in config["feature_sets"] if fs.get("layout") == "ragged"]
    if dense:
        raise ConfigError(
            f"--run (RUN=) {run_dir}: trained on the ragged (dense, FRAMES=all) set {dense[0]}; predict embeds a clip "
            f"with a fixed-T set's sampling only. Make the video's dense features with `make features` (a CSV "
            f"listing it) and read them with pipeline.FeatureStore, or train on a fixed-T set to predict"
        )


def predict(video_path: Path | str, run_dir: Path | str, top: int = 5, device: str = "auto") -> list[tuple[str, float]]:
    """Print and return the `top` classes of one video with their probabilities, best first.

    A SPLIT=all run holds one model per split: their probabilities are averaged.
    """
    video_path = Path(video_path)
    if not video_path.is_file():
        raise FileNotFoundError(f"VIDEO: no file at {video_path}")
    if localize.is_localization_run(Path(run_dir)):
        predict_segments(video_path, Path(run_dir), device)
        return []
    dev = resolve_device(device)
    loaded = [train.load_run(d, dev) for d in train.run_dirs(Path(run_dir))]
    config = loaded[0][1]
    refuse_ragged(config, Path(run_dir))
    features, length, present = stage_one(config, dev)(video_path)
    want = (config["model"]["frames"], config["model"]["input_dim"])
    if features.shape != want:
        raise ValueError(f"stage one gave features of shape {features.shape} for {video_path}, the run expects {want}")
    x = torch.from_numpy(np.ascontiguousarray(features))[None].to(dev)
    lengths = torch.tensor([length], device=dev)
    presence = torch.tensor([present], device=dev)  # (1, M): a clip without a sound track has no audio stream
    with torch.no_grad():
        probs = torch.stack([model(x, lengths, presence).softmax(1)[0] for model, _ in loaded]).mean(0).cpu()
    classes = config["classes"]
    values, indices = probs.topk(min(top, len(classes)))
    result = [(classes[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
    console.result(
        "\n".join(
            [
                f"{video_path} ({length} of {want[0]} frames; run {Path(run_dir)}):",
                *(f"  {rank}. {name:<32} {p:.4f}" for rank, (name, p) in enumerate(result, 1)),
            ]
        )
    )
    return result


def predict_segments(video_path: Path, run_dir: Path, device: str = "auto") -> list[dict]:
    """Print and return the segments a localization run finds in one video ({"label", "score", "segment"}),
    those scored at least SHOWN_SCORE, by start time."""
    dev = resolve_device(device)
    model, config = localize.load_run(run_dir, dev)
    with tempfile.TemporaryDirectory(prefix="vidstore-predict-") as tmp:
        listing = Path(tmp) / "list.csv"
        listing.write_text(f"path\n{video_path.resolve()}\n")
        dirs = []
        for fs in config["feature_sets"]:
            precision = fs["identity"].get("precision", "fp32") if dev.type == "cuda" else "fp32"
            cfg, _ = extract.config_from_manifest(fs["config"], fs["identity"], device=str(dev), precision=precision)
            cfg = cfg.replace(dataset="csv", data_dir=listing, name="predict", features_root=Path(tmp) / "store")
            dirs.append(extract.extract_features(cfg, quiet=True).set_dir)
        dense = localize.read_dense(dirs)
        video = next(iter(dense.videos.values()))
        lcfg = localize.LocalizeConfig(**{**config["localize"], "device": device})
        found = localize.segments_of(model, video, config["classes"], lcfg, dev)
    shown = sorted((f for f in found if f["score"] >= SHOWN_SCORE), key=lambda f: f["segment"][0])
    lines = [f"{video_path} ({video.duration:.1f} s, {video.length} rows; run {run_dir}): {len(shown)} segment(s)"]
    lines += [
        f"  {clock(f['segment'][0])} - {clock(f['segment'][1])}  {f['label']:<24} {f['score']:.4f}" for f in shown
    ]
    console.result("\n".join(lines))
    return shown


# predict prints the segments scored at least this (soft-NMS keeps faint duplicates, for mAP's sake).
SHOWN_SCORE = 0.3


def clock(seconds: float) -> str:
    """12.3 -> "0:12.3"; 3725.0 -> "1:02:05.0"."""
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"
