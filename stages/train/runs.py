"""A run directory: its files, and loading a trained model back from it.

config.json       the resolved TrainConfig, model hyper-parameters, feature set(s), split sizes
checkpoint.pt     the best state dict (torch.load(..., weights_only=True))
metrics.json      test top-1 / top-5 (fractions), mean class accuracy, per-class accuracy, history
predictions.csv   one row per test video: truth, prediction, its probability, top-5
confusion.png     row-normalised confusion matrix of the test part
curves.png        training and validation loss and accuracy per epoch
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from pipeline.config import repo_root

from .models import TemporalClassifier
from .spec import build_from_spec

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
CONFUSION = "confusion.png"
CURVES = "curves.png"


def default_out(model: str, split: str) -> Path:
    return repo_root() / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-split{split}"


def run_dirs(run_dir: Path) -> list[Path]:
    """The run directories under `run_dir`: itself, or its split<k>/ children for SPLIT=all."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).is_file():
        return [run_dir]
    children = sorted(d for d in run_dir.glob("split*") if (d / CHECKPOINT).is_file())
    if not children:
        raise FileNotFoundError(
            f"--run (RUN=): no {CHECKPOINT} in {run_dir} or its split*/ directories; "
            f"pass the directory `make train` printed"
        )
    return children


def load_run(run_dir: Path, device: torch.device | str = "cpu") -> tuple[TemporalClassifier, dict]:
    """The trained model (eval mode, on `device`) and config.json of one run directory."""
    config = json.loads((Path(run_dir) / CONFIG).read_text())
    model = build_from_spec(config["model"])
    state = torch.load(Path(run_dir) / CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), config
