"""`make demo`: the main job end to end on the embedded sample, as a new user would run it.

Stage one on the sample dataset (generated with ffmpeg on first use) with the product's
defaults, so the feature set it leaves is the one `make features` and `make train` use;
then stage two trains the LSTM and the mean-pooling baseline on split 1, and the trained
LSTM classifies one held-out clip.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import console, store
from stages.extract.config import ExtractConfig
from stages.train.config import TrainConfig

from .extract import extract_features
from .predict import predict
from .train import train


def say(msg: str) -> None:
    console.say(f"\n==> {msg}")


def run_demo(cfg: ExtractConfig, epochs: int = 30, runs_root: Path | None = None) -> dict:
    """Stage one, stage two (lstm and mean), one prediction. Returns {model: RunResult}."""
    say(f"stage one on the {cfg.dataset} dataset ({cfg.root})")
    summary = extract_features(cfg)
    manifest = store.read_manifest(summary.set_dir)
    runs = {}
    for model in ("lstm", "mean"):
        say(f"stage two: {model} on split 1")
        out = runs_root / f"demo-{model}" if runs_root else None
        tcfg = TrainConfig(
            dataset=cfg.dataset_name,
            features=str(summary.set_dir),
            features_root=cfg.features_root,
            model=model,
            split="1",
            epochs=epochs,
            out=out,
            progress=sys.stderr.isatty(),
        )
        runs[model] = train(tcfg).runs[0]  # train() itself prints the result line
    clip = manifest.splits["1"]["test"][0]
    say(f"predict: held-out clip {clip} with the lstm run")
    predict(Path(manifest.video_root or cfg.root) / clip, runs["lstm"].run_dir)
    return runs
