"""A run directory: its files, and loading a trained model back from it.

config.json       the resolved TrainConfig, model hyper-parameters, feature set(s), split sizes
checkpoint.pt     the best state dict (torch.load(..., weights_only=True))
metrics.json      test top-1 / top-5 (fractions), mean class accuracy, per-class accuracy, history,
                  read_seconds and train_seconds
predictions.csv   one row per test video: truth, prediction, its probability, top-5
confusion.png     row-normalised confusion matrix of the test part
curves.png        training and validation loss and accuracy per epoch
FAILED            only in a run that did not finish (an error, Ctrl-C): why; evaluate and predict refuse it

A zero-shot run (`make zeroshot`, stages/zeroshot) writes config.json (its "kind" says so),
metrics.json, predictions.csv and confusion.png the same way, and no checkpoint or curves.
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
FAILED = "FAILED"
ZEROSHOT = "zeroshot"  # config.json's "kind" in a run `make zeroshot` wrote (no checkpoint)


def default_out(model: str, split: str) -> Path:
    return repo_root() / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-split{split}"


def split_dirs(out: str | Path | None, model: str, split: str, names: list[str]) -> tuple[Path, list[Path]]:
    """A run's directory (OUT=, else runs/<time>-<model>-split<k>) and each split's in it: the run's
    own for one split; for SPLIT=all (`names` several), a split<k> folder per split inside."""
    root = Path(out) if out else default_out(model, names[0] if len(names) == 1 else split)
    return root, [root if len(names) == 1 else root / f"split{name}" for name in names]


def mark_failed(run_dir: Path, error: BaseException) -> str:
    """Write FAILED into a run directory that will not be finished; returns the reason written."""
    reason = "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
    if Path(run_dir).is_dir():
        (Path(run_dir) / FAILED).write_text(reason + "\n")
    return reason


def run_dirs(run_dir: Path) -> list[Path]:
    """The run directories under `run_dir`: itself, or its split<k>/ children for SPLIT=all.
    A run (or any split of it) marked FAILED is refused with its reason."""
    run_dir = Path(run_dir)
    for d in [run_dir, *sorted(run_dir.glob("split*"))]:
        if (d / FAILED).is_file():
            raise FileNotFoundError(
                f"--run (RUN=): the run in {d} did not finish ({(d / FAILED).read_text().strip()}); "
                f"train it again, or pass another run directory"
            )
    if (run_dir / CHECKPOINT).is_file():
        return [run_dir]
    if is_zeroshot(run_dir):
        raise FileNotFoundError(
            f"--run (RUN=): {run_dir} is a zero-shot run (`make zeroshot`): it has no trained model to "
            f"evaluate or predict with; its reports are already there, and `make zeroshot` writes them again"
        )
    children = sorted(d for d in run_dir.glob("split*") if (d / CHECKPOINT).is_file())
    if not children:
        raise FileNotFoundError(
            f"--run (RUN=): no {CHECKPOINT} in {run_dir} or its split*/ directories; "
            f"pass the directory `make train` printed"
        )
    return children


def is_zeroshot(run_dir: Path) -> bool:
    """Whether `run_dir` (or its split<k>/ runs) was written by `make zeroshot` rather than trained."""
    configs = [run_dir / CONFIG, *sorted(run_dir.glob(f"split*/{CONFIG}"))]
    return any(c.is_file() and json.loads(c.read_text()).get("kind") == ZEROSHOT for c in configs)


def load_run(run_dir: Path, device: torch.device | str = "cpu") -> tuple[TemporalClassifier, dict]:
    """The trained model (eval mode, on `device`) and config.json of one run directory."""
    config = json.loads((Path(run_dir) / CONFIG).read_text())
    model = build_from_spec(config["model"])
    state = torch.load(Path(run_dir) / CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), config
