"""`make zeroshot`'s function: an OpenCLIP set (random ViT-B/32 weights at 64 px, T=2, on a tiny
generated CSV set) scored by the same seeded text tower; its files are a trained run's; its
scores agree with OpenCLIP's own forward and not with another seed's; a set of another
backbone, and a run without a checkpoint, stop with what to do. Nothing downloads."""

from __future__ import annotations

import csv
import json

import numpy as np
import open_clip
import pytest
import synth
import torch
from helpers import random_set

from pipeline import FeatureSetView
from pipeline.errors import ConfigError
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.train import run_dirs
from stages.train.config import TrainConfig
from stages.train.runs import CONFIG, CONFUSION, METRICS, PREDICTIONS
from stages.zeroshot import TEMPLATE_SETS, class_words, zeroshot
from stages.zeroshot.run import score, video_embeddings

ARCH, SIZE, SEED = "ViT-B-32", 64, 5
TINY = "tiny"  # a test-only template set: the first 4 of CLIP's UCF101 templates
# Folder names as UCF101, HMDB51 and a hand-made set write them
CLASSES = {"ApplyEyeMakeup": ("bars", "static"), "YoYo": ("fractal", "life"), "shoot_gun": ("box", "sunset")}


@pytest.fixture(scope="module")
def clip_set(tmp_path_factory):
    """(store root, set dir) of 6 clips (2 per class; the last of each is the test part)."""
    root = tmp_path_factory.mktemp("zeroshot")
    listing = synth.make_csv_dataset(root / "clips", CLASSES, clips_per_class=2, size=(64, 48))
    cfg = ExtractConfig(
        dataset="csv", data_dir=listing, features_root=root / "store", frames=2, device="cpu",
        backbone=f"open_clip:{ARCH}:openai", weights="random", seed=SEED, image_size=SIZE, precision="fp32",
    )  # fmt: skip
    return root, extract_features(cfg, quiet=True).set_dir


@pytest.fixture(scope="module")
def zs_run(clip_set, tmp_path_factory):
    """`make zeroshot FEATURES=<the set>` on the CPU, with CLIP's first 4 UCF101 templates only
    (TINY): the text tower of ViT-B/32 costs ~0.3 s a prompt on the shared 2-core machine."""
    root, set_dir = clip_set
    out = tmp_path_factory.mktemp("zeroshot-run") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(TEMPLATE_SETS, TINY, TEMPLATE_SETS["ucf101"][:4])
        (run,) = zeroshot(TrainConfig(features=set_dir.name, features_root=root / "store", out=out, device="cpu"), TINY)
    return run, set_dir


def reference_probs(set_dir, seed: int) -> np.ndarray:
    """What an OpenCLIP user writes: the model of that seed (the openai tag's QuickGELU), encode_text
    of every prompt, prompt ensembling, and the stored frames' mean embedding per test video."""
    torch.manual_seed(seed)
    model = open_clip.create_model(ARCH, pretrained=None, force_quick_gelu=True, force_image_size=SIZE).eval()
    tokenize = open_clip.get_tokenizer(ARCH)
    words = {"ApplyEyeMakeup": "apply eye makeup", "YoYo": "yo yo", "shoot_gun": "shoot gun"}
    view = FeatureSetView([set_dir])
    with torch.no_grad():
        text = []
        for c in view.classes:
            e = model.encode_text(tokenize([t.format(c=words[c]) for t in TEMPLATE_SETS["ucf101"][:4]]))
            e = (e / e.norm(dim=-1, keepdim=True)).mean(0)
            text.append(e / e.norm())
        rows = view.split(1).test
        feats = torch.from_numpy(view.read(rows)).float()
        videos = torch.stack(
            [(f[:n] / f[:n].norm(dim=-1, keepdim=True)).mean(0) for f, n in zip(feats, view.index.lengths[rows])]
        )
        videos = videos / videos.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * videos @ torch.stack(text).T
    return logits.softmax(1).numpy()


def test_an_open_clip_set_gets_a_trained_runs_files(zs_run):
    run, set_dir = zs_run
    out = run.run_dir
    assert all((out / f).is_file() for f in (CONFIG, METRICS, PREDICTIONS, CONFUSION))
    metrics = json.loads((out / METRICS).read_text())
    assert {"top1", "top5", "mean_class_acc", "per_class", "videos", "test_loss"} <= metrics.keys()
    assert metrics["videos"] == 3 and set(metrics["per_class"]) == set(CLASSES)
    with open(out / PREDICTIONS, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["video_id"] for r in rows) == sorted(f"videos/{c}_01.avi" for c in CLASSES)
    assert all(abs(float(r["probability"]) - run.probs[k].max()) < 1e-4 for k, r in enumerate(rows))
    config = json.loads((out / CONFIG).read_text())
    assert config["kind"] == "zeroshot" and config["feature_sets"][0]["id"] == set_dir.name
    assert config["model"]["class_words"] == ["apply eye makeup", "yo yo", "shoot gun"]
    assert config["model"]["prompts"] == list(TEMPLATE_SETS["ucf101"][:4])
    # no checkpoint: evaluate and predict say what the run is instead of "no checkpoint.pt"
    with pytest.raises(FileNotFoundError, match="is a zero-shot run"):
        run_dirs(out)


def test_the_scores_are_open_clips_with_the_sets_own_weights(zs_run):
    run, set_dir = zs_run
    same, other = reference_probs(set_dir, SEED), reference_probs(set_dir, SEED + 1)
    err = np.abs(run.probs - same).max()
    assert err < 1e-4, f"zero-shot vs OpenCLIP's own forward: max |dp| {err:.2e}"
    # the control: another seed's text tower scores the same videos otherwise
    assert np.abs(run.probs - other).max() > 100 * max(err, 1e-6), np.abs(run.probs - other).max()


def test_a_set_of_another_backbone_names_the_one_to_use(tmp_path):
    set_dir = random_set(tmp_path / "store" / "synthetic" / "resnet50-random-x")
    cfg = TrainConfig(features=str(set_dir), device="cpu", out=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"made with BACKBONE=resnet50.*BACKBONE=open_clip:ViT-B-16:openai"):
        zeroshot(cfg)
    assert not (tmp_path / "run").exists()  # refused before any run directory is made


def test_scores_read_each_videos_own_frames_only():
    """A video whose valid frames carry its class's embedding is that class, whatever its padding holds."""
    gen = torch.Generator().manual_seed(0)
    classes = torch.nn.functional.normalize(torch.randn(4, 32, generator=gen), dim=-1)
    labels = np.array([0, 1, 2, 3, 2, 1])
    lengths = np.array([1, 2, 3, 4, 2, 3])
    feats = 100 * classes[labels][:, None, :].repeat(1, 4, 1) + 0.3 * torch.randn(6, 4, 32, generator=gen)
    feats[torch.arange(4)[None, :] >= torch.from_numpy(lengths)[:, None]] = 50 * classes[(labels + 1) % 4][0]
    logits = score(video_embeddings(feats.numpy().astype(np.float16), lengths), classes, 100.0)
    assert logits.argmax(1).tolist() == labels.tolist()
    # and the padding is what would have won, had it been read
    assert score(video_embeddings(feats.numpy(), np.full(6, 4)), classes, 100.0).argmax(1).tolist() != labels.tolist()


@pytest.mark.parametrize(
    "folder, words",
    [
        ("ApplyEyeMakeup", "apply eye makeup"),
        ("apply_eye_makeup", "apply eye makeup"),
        ("YoYo", "yo yo"),
        ("PlayingDhol", "playing dhol"),
        ("brush_hair", "brush hair"),
        ("playing bagpipes", "playing bagpipes"),
        ("TVNews", "tv news"),
    ],
)
def test_class_folders_become_words(folder, words):
    assert class_words(folder) == words


def test_the_templates_are_clips_for_action_datasets():
    ucf, kinetics = TEMPLATE_SETS["ucf101"], TEMPLATE_SETS["kinetics"]
    assert len(ucf) == len(set(ucf)) == 48 and len(kinetics) == len(set(kinetics)) == 28
    assert ucf[:5] == (
        "a photo of a person {c}.",
        "a video of a person {c}.",
        "a example of a person {c}.",
        "a demonstration of a person {c}.",
        "a photo of the person {c}.",
    )
    assert "a demonstration of the person practicing {c}." == ucf[-1]
    assert {"a video of a person using {c}.", "a photo of the person during {c}."} <= set(ucf)
    assert kinetics[:3] == ("a photo of {c}.", "a photo of a person {c}.", "a photo of a person using {c}.")
