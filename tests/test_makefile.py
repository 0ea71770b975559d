"""The Make variables the README tells users to set reach the CLI as the matching options
(`make -n`: the command lines make would run, nothing run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def command_line(target: str, *assignments: str) -> str:
    """The `python -m stages ...` line `make -n <target> <assignments>` prints."""
    out = subprocess.run(
        ["make", "-n", target, *assignments], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    (line,) = [ln for ln in out.splitlines() if " -m stages " in ln]
    return " ".join(line.split())


@pytest.mark.parametrize("target", ["train", "compare"])
def test_stage_two_variables(target):
    line = command_line(
        target,
        "DATASET=folder",
        "DATA_DIR=/clips",
        "NAME=mine",
        "SEED=3",
        "VAL_FRACTION=0.2",
        "TEST_FRACTION=0.3",
        "MODALITY_DROPOUT=0.05",
        "NO_PROGRESS=1",
    )
    for option in (
        '--dataset "folder"',
        '--data-dir "/clips"',
        '--name "mine"',
        '--seed "3"',
        '--val-fraction "0.2"',
        '--test-fraction "0.3"',
        '--modality-dropout "0.05"',
        "--no-progress",
    ):
        assert option in line, line


def test_features_predict_and_store_info_variables():
    line = command_line("features", "DATASET=folder", "DATA_DIR=/clips", "NAME=mine", "SEED=3")
    assert all(o in line for o in ('--data-dir "/clips"', '--name "mine"', '--seed "3"')), line
    line = command_line("predict", "VIDEO=a.avi", "RUN=runs/x", "TOP=2", "DEVICE=cpu")
    assert line.endswith('predict "a.avi" --run "runs/x" --top "2" --device "cpu"'), line
    assert command_line("store-info").endswith("store info")  # no ID=: no empty id argument


def test_zeroshot_variables():
    line = command_line(
        "zeroshot", "FEATURES=open_clip-x", "DATASET=csv", "DATA_DIR=/l.csv", "SPLIT=all", "TEMPLATES=kinetics", "OUT=r"
    )
    assert line.endswith(
        'zeroshot --features "open_clip-x" --dataset "csv" --data-dir "/l.csv" --split "all" --templates "kinetics" --out "r"'
    ), line


def test_bench_backbone_and_weights():
    out = subprocess.run(
        ["make", "-n", "bench", "BACKBONE=open_clip:ViT-B-16:openai", "WEIGHTS=random"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    line = " ".join(out.replace("\\\n", " ").split())  # the recipe's continued lines as one
    assert '-m stages bench --backbone "open_clip:ViT-B-16:openai" --weights "random"' in line, line
