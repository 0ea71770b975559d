"""`make features ... WEIGHTS=<file>` for each family, as the README offers offline: a state dict
the test writes (seeded random weights of the model's architecture), named in the set's id by
its content; the OpenCLIP set (a whole CLIP state dict, both towers) then classified by
`make zeroshot`, whose text tower comes from the same file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import open_clip
import pytest
import synth
import timm
import torch
import torchvision
from make_runs import run_make
from safetensors.torch import save_file

from pipeline import store
from stages.extract.weights import file_identity

pytestmark = pytest.mark.acceptance

# Two classes of two small clips: the zeroshot split tests one video of each.
CLASSES = {"ApplyEyeMakeup": ("bars", "static"), "shoot_gun": ("box", "sunset")}
SIZE = 64  # px; the ViTs' files are saved from models built at this size (their position embeddings)
ZEROSHOT = re.compile(r"^zeroshot split 1: top1 \d\.\d{4} .*\((\d+) test videos, no training\)", re.M)


def torch_file(model: torch.nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path)


def safetensors_file(model: torch.nn.Module, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def clip_file(model: torch.nn.Module, path: Path) -> None:
    """A whole CLIP state dict in fp16, as OpenAI's own checkpoints hold it."""
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)


# BACKBONE=, the weights file's name, the model it is written from, how, the stored D, FRAMES=
CASES: dict[str, tuple[str, str, Callable[[], torch.nn.Module], Callable, int, int]] = {
    "resnet50": ("resnet50", "resnet50.pth", torchvision.models.resnet50, torch_file, 2048, 4),
    "torchvision image": (
        "torchvision:mobilenet_v3_small", "mobilenet.pth", torchvision.models.mobilenet_v3_small, torch_file, 1024, 4,
    ),
    "torchvision video": (
        "torchvision:r2plus1d_18", "r2plus1d.pth", torchvision.models.video.r2plus1d_18, torch_file, 512, 2,
    ),
    "timm": ("timm:test_vit", "model.safetensors", lambda: timm.create_model("test_vit", img_size=SIZE), safetensors_file, 64, 4),
    "open_clip": (
        "open_clip:ViT-B-32:openai", "clip.pth",
        lambda: open_clip.create_model("ViT-B-32", force_quick_gelu=True, force_image_size=SIZE), clip_file, 512, 2,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def home(tmp_path_factory, venv_ready) -> Path:
    """One VIDSTORE_HOME for every family: the clips once, each family's set beside the others."""
    root = tmp_path_factory.mktemp("weights-files")
    synth.make_csv_dataset(root / "data" / "clips", CLASSES, clips_per_class=2, size=(64, 48))
    return root


@pytest.mark.parametrize("family", list(CASES))
def test_make_features_takes_each_familys_weights_file(home, family):
    backbone, name, model, write, dim, frames = CASES[family]
    torch.manual_seed(0)
    path = home / name
    write(model(), path)
    where = ("DATASET=csv", f"DATA_DIR={home / 'data' / 'clips' / 'list.csv'}")
    made = run_make(
        home, "features", f"BACKBONE={backbone}", f"WEIGHTS={path}", f"SIZE={SIZE}", f"FRAMES={frames}", *where
    )
    assert made.returncode == 0, made
    prefix = f"{backbone.replace(':', '-')}-sha256-t{frames}-{SIZE}px-"
    (set_dir,) = (home / "data" / "features").glob(f"*/{prefix}*")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["identity"]["weights"] == file_identity(path) and manifest["feature_dim"] == dim, manifest
    assert manifest["complete"] and store.read_manifest(set_dir).failures() == [], manifest
    if family == "open_clip":
        zeroshot = run_make(home, "zeroshot", f"FEATURES={set_dir.name}", *where)
        assert zeroshot.returncode == 0, zeroshot
        assert [int(n) for n in ZEROSHOT.findall(zeroshot.stdout)] == [2], zeroshot
    path.unlink()  # the OpenCLIP file is 300 MB
