"""Both stages, pictures and sound: on a generated audio-visual set in which neither modality alone
can name the class, the fused LSTM does, far above each modality alone.

The set (synth.make_av_dataset): 4 classes = 2 scenes (bars, life: the pictures) x 2
orders of a low and a high tone (low->high, high->low: the sound), 6 groups x 2 clips of 2 s
each, MP3 in AVI. The pictures tell the scene only (chance within it: ~50%), the sound tells the
order only, and only to a model that reads time (both orders hold the same two tones: ~50%);
the two together name the class. Stage one makes a visual set (random ResNet-50 weights, 64 px,
T=8) and an audio set (the log-mel summary) of it; stage two trains the same LSTM on each alone
and on both, joined on video id.
"""

from __future__ import annotations

import pytest
import synth
import torch

from pipeline import store
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.train import train
from stages.train.config import TrainConfig


@pytest.fixture(scope="module")
def av_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("av")
    synth.make_av_dataset(root / "av")
    base = dict(
        dataset="ucf101",
        data_dir=root / "av",
        name="av",
        features_root=root / "store",
        frames=8,
        device="cpu",
        workers=2,
    )
    rgb = extract_features(ExtractConfig(**base, weights="random", image_size=64), quiet=True).set_dir
    audio = extract_features(ExtractConfig(**base, modality="audio"), quiet=True).set_dir
    return root, rgb, audio


def top1(root, features: str, name: str, seed: int = 0) -> float:
    cfg = TrainConfig(
        dataset="av",
        features=features,
        model="lstm",
        epochs=30,
        hidden=64,
        proj=32,
        layers=1,
        device="cpu",
        progress=False,
        seed=seed,
        out=root / f"run-{name}-{seed}",
    )
    return train(cfg).runs[0].metrics["top1"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: a second thread only waits on the first
    yield
    torch.set_num_threads(before)


def test_the_sets_are_one_dataset_in_two_modalities(av_sets):
    _, rgb, audio = av_sets
    a, b = store.load_manifest(rgb), store.load_manifest(audio)
    assert (a["modality"], b["modality"]) == ("rgb", "audio") and a["num_stored"] == b["num_stored"] == 48
    assert a["splits"] == b["splits"] and a["classes"] == b["classes"]


def test_the_fused_lstm_names_the_class_where_each_modality_alone_cannot(av_sets):
    root, rgb, audio = av_sets
    alone = {"rgb": top1(root, str(rgb), "rgb"), "audio": top1(root, str(audio), "audio")}
    fused = top1(root, f"{rgb},{audio}", "fused")
    # Measured (seed 0 and 1): rgb 0.44 and 0.56, audio 0.63 and 0.56, fused 1.00 and 1.00; chance 0.25.
    assert fused >= 0.9, (fused, alone)
    assert all(v <= 0.7 for v in alone.values()), alone
    assert fused - max(alone.values()) >= 0.25, (fused, alone)


def test_predict_computes_every_modality_of_a_fused_run(av_sets, capsys):
    """`predict` on a clip: stage one for the pictures and for the sound, with each set's settings,
    side by side as in training; the fused run then names the clip's class."""
    from stages.predict import predict

    root, rgb, audio = av_sets
    top1(root, f"{rgb},{audio}", "predict")
    m = store.load_manifest(rgb)
    clip = m["splits"]["1"]["test"][0]
    best = predict(root / "av" / "UCF-101" / clip, root / "run-predict-0", top=2, device="cpu")[0][0]
    assert best == clip.split("/")[0]
    assert f"{clip.split('/')[-1]} (8 of 8 frames" in capsys.readouterr().out
