"""Training, reports, re-evaluation, compare and predict, on synthetic feature sets.

The temporal-order set mimics what stage one produces for classes that share their scenes
and differ only in the order of them: a large component common to every frame (as with
ResNet features), one vector per scene, a per-group offset (same actor / background),
and noise. Scene segments get equal shares of each video's valid frames in a random
assignment, so the mean over frames carries no class information at all.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_set, write_feature_set

from pipeline.devices import cpu_has_native_bf16
from pipeline.errors import ConfigError
from stages import bench, predict
from stages.train import compare, evaluate_run, loop, train, trainer
from stages.train.config import TrainConfig

ORDERS = ((0, 1, 2), (2, 1, 0), (1, 2, 0), (0, 2, 1))  # class k shows scenes A, B, C in this order


@pytest.fixture(autouse=True)
def one_thread():
    """Small models gain nothing from a second thread, and on a busy 2-core machine every
    parallel element-wise kernel waits for a descheduled peer (seen: 15x slower steps)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def temporal_order_set(
    set_dir: Path, groups: int = 8, clips: int = 6, t: int = 16, d: int = 2048, seed: int = 0
) -> Path:
    """4 classes x `groups` groups x `clips` clips; the last 2 groups of each class are the test side of split 1."""
    rng = np.random.default_rng(seed)
    common = np.abs(rng.standard_normal(d)) * 5  # dominates: cosine similarity of unrelated videos ~0.99
    scenes = rng.standard_normal((3, d)) * 0.5
    feats, lengths, labels, ids, grps = [], [], [], [], []
    for y, order in enumerate(ORDERS):
        for g in range(groups):
            group_vec = rng.standard_normal(d) * 0.3
            for c in range(clips):
                n = int(rng.integers(10, t + 1))  # some videos are shorter than T: padded
                shares = rng.permutation([n // 3 + (1 if i < n % 3 else 0) for i in range(3)])
                x = np.zeros((t, d), np.float32)
                x[:n] = common + group_vec + scenes[np.repeat(order, shares)] + rng.standard_normal((n, d)) * 0.3
                feats.append(x)
                lengths.append(n)
                labels.append(y)
                ids.append(f"order{y}/v_order{y}_g{g:02d}_c{c:02d}.avi")
                grps.append(f"order{y}/g{g:02d}")
    test = {v for v, grp in zip(ids, grps) if int(grp[-2:]) >= groups - 2}
    split = {"1": {"train": [v for v in ids if v not in test], "test": sorted(test)}}
    return write_feature_set(
        set_dir,
        np.stack(feats).astype(np.float16),
        np.array(lengths),
        np.array(labels),
        ids,
        grps,
        [f"order{k}" for k in range(len(ORDERS))],
        split,
        shard_size=64,
    )


@pytest.fixture(scope="module")
def temporal_set(tmp_path_factory) -> Path:
    return temporal_order_set(tmp_path_factory.mktemp("temporal") / "features" / "temporal" / "set")


def quick(set_dir: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(
        **(
            {
                "features": str(set_dir),
                "out": out,
                "epochs": 12,
                "hidden": 128,
                "proj": 64,
                "progress": False,
                "device": "cpu",
            }
            | kw
        )
    )


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_recurrent_heads_learn_temporal_order(temporal_set, tmp_path, model):
    result = train(quick(temporal_set, tmp_path / model, model=model))
    assert result.runs[0].metrics["top1"] >= 0.9, result.runs[0].metrics


def test_mean_pooling_cannot_see_temporal_order(temporal_set, tmp_path):
    result = train(quick(temporal_set, tmp_path / "mean", model="mean"))
    assert result.runs[0].metrics["top1"] <= 0.5, "chance is 0.25: the mean of the frames is the same for every class"


def test_run_directory_holds_every_output_and_evaluate_reproduces_it(tmp_path):
    set_dir = random_set(tmp_path / "features" / "ds" / "set", n=60, t=6, d=16)
    out = tmp_path / "run"
    result = train(
        TrainConfig(
            features=str(set_dir),
            model="attention",
            out=out,
            epochs=3,
            hidden=16,
            proj=8,
            val_fraction=0.25,
            device="cpu",
            progress=False,
        )
    )  # groups of 4 in classes of 16: one group each
    for name in ("config.json", "metrics.json", "predictions.csv", "confusion.png", "curves.png", "checkpoint.pt"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and set(metrics["per_class"]) == {"c0", "c1", "c2"}
    assert metrics["mean_class_acc"] == pytest.approx(
        np.mean([v for v in metrics["per_class"].values() if v is not None])
    )
    assert len(metrics["history"]) == 3 and metrics["best_epoch"] == result.runs[0].best_epoch
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["name"] == "attention" and config["feature_sets"][0]["id"] == "set"
    assert (
        config["parts"]["val"] > 0 and config["parts"]["train"] + config["parts"]["val"] == 60 - config["parts"]["test"]
    )
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == metrics["videos"] and {"video_id", "label", "predicted", "probability", "top5"} <= set(rows[0])
    assert sum(int(r["correct"]) for r in rows) / len(rows) == pytest.approx(metrics["top1"])
    again = evaluate_run(out, device="cpu")
    assert again["top1"] == pytest.approx(metrics["top1"]) and again["top5"] == pytest.approx(metrics["top5"])
    assert json.loads((out / "metrics.json").read_text())["history"] == metrics["history"]  # kept on re-evaluation


def test_split_all_trains_each_official_split_and_reports_the_mean(tmp_path):
    set_dir = random_set(tmp_path / "set", n=60, t=5, d=8)
    out = tmp_path / "run"
    result = train(
        TrainConfig(features=str(set_dir), model="mean", split="all", out=out, epochs=2, device="cpu", progress=False)
    )
    assert [r.split for r in result.runs] == ["1", "2", "3"]
    assert all((out / f"split{k}" / "metrics.json").is_file() for k in (1, 2, 3))
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["mean"]["top1"] == pytest.approx(np.mean([r.metrics["top1"] for r in result.runs]))
    assert evaluate_run(out, device="cpu")["top1"] == pytest.approx(summary["mean"]["top1"])


def test_validation_is_carved_by_group(tmp_path):
    set_dir = random_set(tmp_path / "set", n=90, t=5, d=8, groups_per_class=6)
    cfg = TrainConfig(
        features=str(set_dir),
        model="mean",
        out=tmp_path / "run",
        epochs=1,
        val_fraction=0.2,
        device="cpu",
        progress=False,
    )
    device = torch.device("cpu")
    data = trainer.load_data(cfg, device, torch.float32)
    parts = trainer.make_parts(data, data.splits["1"], cfg, device, torch.float32)
    group_of = dict(zip(data.index.video_ids, data.index.groups))
    train_groups = {group_of[v] for v in parts.train.video_ids}
    val_groups = {group_of[v] for v in parts.val.video_ids}
    assert val_groups and not train_groups & val_groups


def test_same_seed_same_run(tmp_path):
    set_dir = random_set(tmp_path / "set", n=60, t=6, d=16)
    runs = [
        train(
            TrainConfig(
                features=str(set_dir),
                model="lstm",
                out=tmp_path / f"r{k}",
                epochs=3,
                hidden=16,
                proj=8,
                seed=7,
                device="cpu",
                progress=False,
            )
        )
        for k in range(2)
    ]
    a, b = (torch.load(r.run_dir / "checkpoint.pt", weights_only=True) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].runs[0].metrics["history"][-1]["train_loss"] == runs[1].runs[0].metrics["history"][-1]["train_loss"]


@pytest.mark.parametrize("load, precision", [("memory", "fp32"), ("stream", "auto")])
def test_memory_and_streaming_loads_and_precisions(tmp_path, load, precision):
    set_dir = random_set(tmp_path / "set", n=60, t=6, d=16, shard_size=7)
    result = train(
        TrainConfig(
            features=str(set_dir),
            model="lstm",
            out=tmp_path / "run",
            epochs=2,
            hidden=16,
            proj=8,
            load=load,
            precision=precision,
            device="cpu",
            progress=False,
        )
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    want = (
        "bfloat16" if precision == "auto" and cpu_has_native_bf16() else "float32"
    )  # auto on a CPU: bf16 where native
    assert config["load"] == load and config["precision"] == want
    assert result.runs[0].metrics["videos"] == 12  # group 0 of each class


def test_dataset_without_test_split_gets_one_carved_by_group(tmp_path):
    set_dir = random_set(tmp_path / "set", n=60, t=5, d=8, splits="all", groups_per_class=5)
    result = train(
        TrainConfig(features=str(set_dir), model="mean", out=tmp_path / "run", epochs=2, device="cpu", progress=False)
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["split"] == "all" and config["parts"]["carved_test"] and result.runs[0].metrics["videos"] > 0


def test_compare_prints_and_writes_the_table(tmp_path, capsys):
    set_dir = random_set(tmp_path / "set", n=45, t=5, d=8)
    cfg = TrainConfig(
        features=str(set_dir), out=tmp_path / "cmp", epochs=1, hidden=8, layers=1, proj=4, device="cpu", progress=False
    )
    rows = compare(cfg)
    assert [r["model"] for r in rows] == ["mean", "lstm", "gru", "attention", "fusion", "tcn", "transformer"]
    table = (tmp_path / "cmp" / "compare.txt").read_text()
    assert table.splitlines()[0].split() == ["model", "params", "train_s", "top1", "top5", "mean_class_acc"]
    assert "transformer" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(tmp_path / "cmp" / "compare.csv")))) == 7


def test_predict_runs_stage_one_on_the_clip_and_prints_the_top_classes(temporal_set, tmp_path, monkeypatch, capsys):
    import h5py

    from stages import extract

    out = tmp_path / "run"
    train(quick(temporal_set, out, model="lstm"))
    with h5py.File(temporal_set / "shard-00002.h5") as f:  # a test video of class order2, as stage one computed it
        pick = int(np.flatnonzero(f["labels"][()] == 2)[-1])
        clip, length = f["features"][pick], int(f["lengths"][pick])
    video = tmp_path / "clip.avi"
    video.write_bytes(b"stand-in: stage one is replaced below")
    seen = {}
    # Stage one itself (ffmpeg + ResNet-50) is exercised end to end by the stage-one tests;
    # here: predict hands it the run's recorded extraction settings and the file.
    asked = {}

    def fake_config_from_manifest(config, identity, **overrides):
        asked.update(overrides)
        return config, "weights-spec"

    monkeypatch.setattr(extract, "config_from_manifest", fake_config_from_manifest)

    def fake_extract_video(path, cfg, spec):
        seen.update(path=path, cfg=cfg, spec=spec)
        return clip, length, True

    monkeypatch.setattr(extract, "extract_video", fake_extract_video)
    top = predict.predict(video, out, top=3, device="cpu")
    manifest = json.loads((temporal_set / "manifest.json").read_text())
    assert seen == {"path": video, "cfg": manifest["config"], "spec": "weights-spec"}
    assert asked == {"device": "cpu", "precision": "fp32"}  # predict's own device, not the one the set was made on
    assert [name for name, _ in top][0] == "order2" and len(top) == 3
    assert sum(p for _, p in top) <= 1 + 1e-6 and top[0][1] >= top[1][1] >= top[2][1]
    assert "1. order2" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="VIDEO"):
        predict.predict(tmp_path / "missing.avi", out, device="cpu")


def test_time_training_measures_a_run_from_shards(tmp_path):
    seconds = bench.time_training(
        n=40, n_test=10, t=4, d=16, epochs=2, classes=3, device="cpu", workdir=tmp_path, hidden=8, proj=4
    )
    assert seconds > 0 and not list(tmp_path.iterdir()), "the synthetic set is removed afterwards"


def test_warmup_then_cosine():
    lr = [loop.warmup_cosine(s, 10, 100) for s in range(100)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == 1.0 and max(lr) == 1.0
    assert lr[10] > lr[50] > lr[99] >= 0 and lr[55] == pytest.approx(0.5, abs=0.02)


def test_bad_options_name_themselves():
    with pytest.raises(ConfigError, match="MODEL=.*'cnn'"):
        TrainConfig(model="cnn")
    with pytest.raises(ConfigError, match="SPLIT=.*'7a'"):
        TrainConfig(split="7a")
    with pytest.raises(ConfigError, match="--epochs.*0"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="--dropout"):
        TrainConfig(dropout=1.5)
    assert loop.auto_batch(0, 9537) == 256 and loop.auto_batch(0, 40) == 8 and loop.auto_batch(32, 40) == 32
    assert not math.isnan(loop.warmup_cosine(0, 0, 1))


@pytest.mark.slow
def test_fifty_lstm_epochs_on_ucf101_sized_features_run_on_cpu(tmp_path, one_thread):
    """The stage-two timing run, on the CPU: all 50 epochs of UCF101-sized data go through
    (time_training raises otherwise). How long they take is the benchmark's to report
    (`make bench`), not a test's to judge."""
    torch.set_num_threads(os.cpu_count() or 1)  # undo the one-thread fixture: time the real setting
    assert bench.time_training(n=9537, t=16, d=2048, epochs=50, device="cpu", workdir=tmp_path) > 0


@pytest.mark.gpu
def test_fifty_lstm_epochs_on_ucf101_sized_features_run_on_a_gpu(tmp_path):
    """The same on CUDA (its time: `make gpu-check`, docs/bench.md)."""
    assert bench.time_training(n=9537, t=16, d=2048, epochs=50, device="cuda", workdir=tmp_path) > 0


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["lstm", "gru", "attention", "transformer"])
def test_heads_learn_temporal_order_on_a_gpu(temporal_set, tmp_path, model):
    result = train(quick(temporal_set, tmp_path / model, model=model, device="cuda", epochs=20))
    assert result.runs[0].metrics["top1"] >= (0.9 if model != "transformer" else 0.5), result.runs[0].metrics
    assert result.runs[0].epochs_run >= 2 and math.isfinite(result.runs[0].metrics["test_loss"])
