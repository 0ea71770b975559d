"""Issue 3's acceptance test, end to end: videos -> stage one -> stage two.

The classes of `temporal_tree` hold the same three scenes in different orders, so the
temporal mean of a clip's frame features carries (almost) nothing about its class:
recurrent heads must reach >= 90% while mean pooling stays near chance (25%).
"""

import pytest

from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.train import train
from stages.train.config import TrainConfig


@pytest.fixture(scope="module")
def temporal_features(temporal_tree, tmp_path_factory):
    # Random seeded weights and 64 px keep ResNet-50 cheap on a CPU; T=8 spans the three scenes.
    cfg = ExtractConfig(
        dataset="ucf101",
        data_dir=temporal_tree,
        name="temporal",
        weights="random",
        image_size=64,
        frames=8,
        features_root=tmp_path_factory.mktemp("store"),
        device="cpu",
    )
    return extract_features(cfg, quiet=True).set_dir


def run(set_dir, out, model):
    cfg = TrainConfig(
        dataset="temporal",
        features=str(set_dir),
        model=model,
        split="1",
        epochs=25,
        hidden=128,
        proj=64,
        out=out,
        progress=False,
        seed=0,
        device="cpu",
    )
    return train(cfg).runs[0].metrics


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_recurrent_heads_separate_scene_orders_from_real_stage_one_features(temporal_features, tmp_path, model):
    assert run(temporal_features, tmp_path / model, model)["top1"] >= 0.9


def test_mean_pooling_stays_near_chance_on_the_same_features(temporal_features, tmp_path):
    assert run(temporal_features, tmp_path / "mean", "mean")["top1"] <= 0.5
