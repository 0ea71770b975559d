"""The README's other-backbone commands through make: a timm DINOv2 ViT-S/14 from a local
.safetensors file on a CSV set, and a torchvision video model; each listed with its
backbone, an LSTM trained on that set, and a prediction with that run."""

from __future__ import annotations

import json
import re

import h5py
import pytest
import synth
import timm
import torch
from make_runs import REPO, run_make
from safetensors.torch import save_file

pytestmark = pytest.mark.acceptance

NAME = "vit_small_patch14_dinov2.lvd142m"
# Its own size is 518 px (37 x 37 patches): too slow for this tier on a CPU; 112 px is 8 x 8.
SIZE = 112


def test_dinov2_features_from_a_safetensors_file_then_an_lstm(tmp_path, venv_ready):
    """WEIGHTS=model.safetensors, written from a randomly initialised model of that architecture
    (LayerScale set to 1, as a trained model's is far from its near-zero init)."""
    csv = synth.make_csv_dataset(tmp_path / "data" / "clips", size=(96, 72))
    torch.manual_seed(0)
    model = timm.create_model(NAME, pretrained=False, img_size=SIZE)
    state = {k: torch.ones_like(v) if k.endswith(".gamma") else v for k, v in model.state_dict().items()}
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))

    where = ("DATASET=csv", f"DATA_DIR={csv}")
    features = run_make(
        tmp_path, "features", f"BACKBONE=timm:{NAME}", f"WEIGHTS={weights}", f"SIZE={SIZE}", "FRAMES=4", *where
    )
    assert features.returncode == 0, features.stderr[-3000:]
    (set_dir,) = (tmp_path / "data" / "features").glob(f"*/timm-{NAME}-sha256-t4-{SIZE}px-*")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["identity"]["backbone"] == f"timm:{NAME}" and manifest["feature_dim"] == 384

    listing = run_make(tmp_path, "store-list")
    assert listing.returncode == 0 and f"timm:{NAME}" in listing.stdout, listing.stdout

    train = run_make(tmp_path, "train", "MODEL=lstm", "EPOCHS=2", *where)
    assert train.returncode == 0, train.stderr[-3000:]
    (run,) = (tmp_path / "runs").glob("*lstm*")
    assert (run / "metrics.json").is_file()

    # predict embeds a new video with the run's backbone and weights file, as the set was made
    clip = csv.parent / "videos" / "wave_00.avi"
    predict = run_make(tmp_path, "predict", f"VIDEO={clip}", f"RUN={run}", "TOP=3")
    assert predict.returncode == 0, predict.stderr[-3000:]
    ranked = re.findall(r"^  (\d)\. (\w+) +(\d\.\d{4})$", predict.stdout, re.M)
    assert {r[1] for r in ranked} == {"wave", "clap", "run"}, predict.stdout


def test_a_torchvision_video_model_then_an_lstm_and_a_prediction(tmp_path, venv_ready):
    """R(2+1)D with seeded random weights at 32 px: one 512-d row per clip of 16 frames, the shards
    recording every frame of every clip; listed with its backbone, trained on, predicted with."""
    csv = synth.make_csv_dataset(tmp_path / "data" / "clips", size=(96, 72))
    where = ("DATASET=csv", f"DATA_DIR={csv}")
    features = run_make(
        tmp_path, "features", "BACKBONE=torchvision:r2plus1d_18", "WEIGHTS=random", "SIZE=32", "FRAMES=3", *where
    )
    assert features.returncode == 0, features.stderr[-3000:]
    (set_dir,) = (tmp_path / "data" / "features").glob("*/torchvision-r2plus1d_18-random-t3-32px-*")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["feature_dim"] == 512 and manifest["identity"]["sampling"]["clip"]["frames"] == 16
    with h5py.File(set_dir / manifest["shards"][0]["file"]) as f:
        assert f["features"].shape[1:] == (3, 512) and f["frame_indices"].shape[1:] == (3, 16)

    listing = run_make(tmp_path, "store-list")
    assert listing.returncode == 0 and "torchvision:r2plus1d_18/random:seed0" in listing.stdout, listing.stdout

    train = run_make(tmp_path, "train", "MODEL=lstm", "EPOCHS=2", *where)
    assert train.returncode == 0, train.stderr[-3000:]
    (run,) = (tmp_path / "runs").glob("*lstm*")
    clip = csv.parent / "videos" / "wave_00.avi"
    predict = run_make(tmp_path, "predict", f"VIDEO={clip}", f"RUN={run}", "TOP=3")
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert len(re.findall(r"^  \d\. \w+ +\d\.\d{4}$", predict.stdout, re.M)) == 3, predict.stdout


def test_make_backbones_lists_every_family_and_prints_the_readme_table(tmp_path, venv_ready):
    """`make backbones`: each family with how it is written and what it stores, on stdout;
    `MARKDOWN=readme`: the README's own family table, as it stands in README.md."""
    listed = run_make(tmp_path, "backbones")
    assert listed.returncode == 0, listed
    for words in ("ResNet-50: resnet50 (the default)", "timm: timm:NAME[.TAG]", "OpenCLIP: open_clip:ARCH:PRETRAINED",
                  "torchvision video: torchvision:NAME", "stores per clip", "AUDIO_FEATURES="):  # fmt: skip
        assert words in listed.stdout, listed
    table = run_make(tmp_path, "backbones", "MARKDOWN=readme")
    assert table.returncode == 0, table
    assert table.stdout.strip() and table.stdout.strip() in (REPO / "README.md").read_text(), table
