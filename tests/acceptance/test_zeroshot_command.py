"""The README's `make zeroshot FEATURES=<open_clip set>` through make, on a terminal: an OpenCLIP
set (random weights, offline) classified without training, with a trained run's files and
summary line; a ResNet-50 set refused with the BACKBONE to use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import synth
from make_runs import run_make

from stages.train.runs import CONFIG, CONFUSION, METRICS, PREDICTIONS

pytestmark = pytest.mark.acceptance

# Two classes: ViT-B/32's text tower costs ~0.3 s per prompt on the 2-core machine (48 per class).
CLASSES = {"ApplyEyeMakeup": ("bars", "static"), "shoot_gun": ("box", "sunset")}
WHERE = ("DATASET=csv",)
LINE = re.compile(
    r"^zeroshot split 1: top1 (\d\.\d{4})  top5 \d\.\d{4}  mean_class_acc \d\.\d{4}  "
    r"\((\d+) test videos, no training\)  -> (\S+)$",
    re.M,
)


def set_id(home: Path, prefix: str) -> str:
    (set_dir,) = (home / "data" / "features").glob(f"*/{prefix}-*")
    return set_dir.name


def test_make_zeroshot_on_an_open_clip_set(tmp_path, venv_ready):
    listing = synth.make_csv_dataset(tmp_path / "data" / "clips", CLASSES, clips_per_class=2, size=(64, 48))
    where = (*WHERE, f"DATA_DIR={listing}")
    made = run_make(
        tmp_path, "features", "BACKBONE=open_clip:ViT-B-32:openai", "WEIGHTS=random", "SIZE=64", "FRAMES=2", *where
    )
    assert made.returncode == 0, made
    features = set_id(tmp_path, "open_clip-ViT-B-32-openai-random")

    out = run_make(tmp_path, "zeroshot", f"FEATURES={features}", *where)
    assert out.returncode == 0, out
    (found,) = LINE.findall(out.stdout)
    top1, videos, run = float(found[0]), int(found[1]), Path(found[2])
    assert videos == 2 and run.parent == tmp_path / "runs" and run.name.endswith("-zeroshot-split1"), out
    assert all((run / f).is_file() for f in (CONFIG, METRICS, PREDICTIONS, CONFUSION)), sorted(run.iterdir())
    metrics = json.loads((run / METRICS).read_text())
    assert metrics["top1"] == pytest.approx(top1, abs=1e-4) and metrics["zeroshot"]["templates"] == "ucf101"
    assert "2 classes x 48 ucf101 prompts embedded by its text tower" in out.stderr, out

    resnet = run_make(tmp_path, "features", "WEIGHTS=random", "SIZE=32", "FRAMES=2", *where)
    assert resnet.returncode == 0, resnet
    refused = run_make(tmp_path, "zeroshot", f"FEATURES={set_id(tmp_path, 'resnet50-random')}", *where)
    assert refused.returncode == 2 and "BACKBONE=open_clip:ViT-B-16:openai" in refused.stderr, refused
