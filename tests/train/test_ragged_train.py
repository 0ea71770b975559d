"""Stage two on a ragged (dense) set: per-video labels, batches of videos of similar length padded
only to their longest, the rows held flat (never (N, T_max, D)), memory and stream alike."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from ragged_sets import CLASSES, ragged_set

from pipeline import FeatureSetView
from pipeline.errors import ConfigError
from stages import predict
from stages.train import evaluate_run, train
from stages.train.config import TrainConfig
from stages.train.sources import RaggedSource

# 1 to 24 rows per video (STRIDE=25 on 25 fps footage): lengths that differ widely.
DURATIONS = [1.0 + (7 * k) % 24 for k in range(24)]


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    root = tmp_path_factory.mktemp("ragged-train")
    set_dir, truth = ragged_set(root, DURATIONS, dim=8, stride=25, shard_size=6)
    return set_dir, truth


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cfg(set_dir, out, **kw) -> TrainConfig:
    return TrainConfig(
        **(
            {
                "features": str(set_dir),
                "out": out,
                "epochs": 6,
                "hidden": 16,
                "proj": 8,
                "val_fraction": 0.0,
                "device": "cpu",
                "progress": False,
                "lr": 1e-2,
            }
            | kw
        )
    )


@pytest.mark.parametrize("load", ["memory", "stream"])
def test_a_head_trains_on_a_ragged_set_with_per_video_labels(ragged, tmp_path, load):
    set_dir, truth = ragged
    result = train(cfg(set_dir, tmp_path / "run", load=load))
    (run,) = result.runs
    assert run.metrics["top1"] == 1.0, run.metrics  # the classes differ in their mean: an easy set
    with open(tmp_path / "run" / "predictions.csv") as f:  # each test video scored against its own label
        scored = {r["video_id"]: r for r in csv.DictReader(f)}
    assert scored and all(r["label"] == CLASSES[truth[v].label] == r["predicted"] for v, r in scored.items())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["load"] == load and config["model"]["layout"] == "ragged"
    assert config["model"]["frames"] == max(len(np.arange(0, int(d * 25), 25)) for d in DURATIONS)
    assert evaluate_run(tmp_path / "run", device="cpu")["top1"] == 1.0
    with pytest.raises(ConfigError, match="ragged"):
        predict.predict(__file__, tmp_path / "run", device="cpu")


def test_the_transformer_trains_on_a_ragged_set(ragged, tmp_path):
    set_dir, _ = ragged
    (run,) = train(cfg(set_dir, tmp_path / "run", model="transformer", epochs=3)).runs
    assert 0 <= run.metrics["top1"] <= 1 and run.epochs_run == 3


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_batches_hold_videos_of_similar_length_padded_to_their_own_longest(ragged, mode):
    set_dir, truth = ragged
    view = FeatureSetView([set_dir])
    rows = np.arange(view.num_videos)
    mean, std = torch.zeros(8), torch.ones(8)
    source = RaggedSource(view, rows, mean, std, torch.device("cpu"), torch.float32, mode)
    if mode == "memory":  # the rows flat: R x D, not N x T_max x D
        assert tuple(source.features.shape) == (int(view.index.lengths.sum()), 8)
    seen, padded = [], 0
    for b in source.batches(4, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert b.x.shape[1] == int(b.lengths.max())  # only to the batch's longest
        padded += int((b.x.shape[1] - b.lengths).sum())
        for x, n, p, y in zip(b.x, b.lengths.tolist(), b.positions, b.labels.tolist()):
            v = truth[view.index.video_ids[rows[p]]]
            np.testing.assert_array_equal(x[:n].numpy(), v.features.astype(np.float32))
            assert not x[n:].any() and y == v.label
            seen.append(int(p))
    assert sorted(seen) == list(range(len(rows)))
    # batches in a random order pad about as much as padding every video to the set's longest; by
    # length, far less (streamed: sorted within each shard of 6 only)
    naive = int((view.index.lengths.max() - view.index.lengths).sum())
    assert padded < naive * (0.2 if mode == "memory" else 0.5), (padded, naive)
