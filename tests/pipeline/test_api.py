"""The Python API other teams read the store with (pipeline.api), on a set stage one made."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import random_set, stored

from pipeline import FeatureStore, store
from pipeline.errors import IntegrityError, ReaderError
from stages.cli import main as cli
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.train import trainer

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def made(ucf_tree, tmp_path_factory):
    """A store holding one UCF101-layout set made by stage one (32 px, T=4, 2 shards)."""
    root = tmp_path_factory.mktemp("api-store")
    cfg = ExtractConfig(
        dataset="ucf101",
        data_dir=ucf_tree,
        features_root=root,
        weights="random",
        image_size=32,
        frames=4,
        shard_size=10,
        device="cpu",
        workers=2,
    )
    return root, extract_features(cfg, quiet=True).set_dir


def test_the_contract_as_written(made):
    root, set_dir = made
    fstore = FeatureStore(root)
    assert [r["id"] for r in fstore.list()] == [set_dir.name]
    fs = fstore.open("ucf101")
    m = store.load_manifest(set_dir)
    assert (fs.classes, fs.frames, fs.feature_dim, fs.num_videos) == (m["classes"], 4, 2048, m["num_stored"])
    train = fs.dataset(split=1, part="train")
    assert len(train) == len(m["splits"]["1"]["train"])
    rows = stored(set_dir)  # plain h5py
    for i in range(len(train)):
        item = train[i]
        x, n, y = rows[item["video_id"]]
        assert item["features"].dtype == torch.float32 and item["features"].shape == (4, 2048)
        np.testing.assert_array_equal(item["features"].numpy(), x.astype(np.float32))
        assert (item["length"], item["label"]) == (n, y)
    assert sorted(
        fs.dataset(split=1, part="test")[i]["video_id"] for i in range(len(m["splits"]["1"]["test"]))
    ) == sorted(m["splits"]["1"]["test"])


def test_a_dataloader_with_two_workers_gives_every_item_once(made):
    root, set_dir = made
    train = FeatureStore(root).open("ucf101").dataset(split=1, part="train")
    loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, num_workers=2)
    rows, seen = stored(set_dir), []
    for batch in loader:
        assert batch["features"].shape[1:] == (4, 2048)
        for vid, x, n, y in zip(batch["video_id"], batch["features"], batch["length"], batch["label"]):
            np.testing.assert_array_equal(x.numpy(), rows[vid][0].astype(np.float32))
            assert (int(n), int(y)) == rows[vid][1:]
            seen.append(vid)
    assert sorted(seen) == sorted(store.load_manifest(set_dir)["splits"]["1"]["train"])


def test_open_by_id_prefix_directory_and_dataset_slash_id(made):
    root, set_dir = made
    fstore = FeatureStore(root)
    for ref in (set_dir.name, set_dir.name[:14], str(set_dir), f"ucf101/{set_dir.name}"):
        assert fstore.open(ref).ids == [set_dir.name], ref
    with pytest.raises(ReaderError, match="no feature set matches 'nope'"):
        fstore.open("nope")


def test_a_flipped_byte_is_an_integrity_error_here_and_in_workers(made, tmp_path):
    root, set_dir = made
    copy = tmp_path / "store" / "ucf101" / set_dir.name
    shutil.copytree(set_dir, copy)
    shard = copy / store.load_manifest(copy)["shards"][0]["file"]
    with h5py.File(shard, "r") as f:  # a byte inside the features of the first video
        offset = f["features"].id.get_offset()
    data = bytearray(shard.read_bytes())
    data[offset + 100] ^= 0x01
    shard.write_bytes(bytes(data))
    fs = FeatureStore(tmp_path / "store").open("ucf101")
    ds = fs.dataset(split=1, part="train")
    first_shard = [i for i in range(len(ds)) if fs.index.shard[ds.rows[i]] == 0][0]
    with pytest.raises(IntegrityError, match=re.escape(shard.name)):
        ds[first_shard]
    fresh = fs.dataset(split=1, part="train")
    with pytest.raises(IntegrityError, match=re.escape(shard.name)):
        for _ in torch.utils.data.DataLoader(fresh, batch_size=4, num_workers=2):
            pass
    with pytest.raises(IntegrityError, match=re.escape(shard.name)):
        fs.arrays(split=1, part="train")


def test_arrays_standardisation_and_validation_carve_are_stage_twos(made):
    root, set_dir = made
    fs = FeatureStore(root).open("ucf101")
    from stages.train.config import TrainConfig

    cfg = TrainConfig(dataset="ucf101", features_root=root, val_fraction=0.34, seed=3, device="cpu", load="memory")
    data = trainer.load_data(cfg, torch.device("cpu"), torch.float32)
    parts = trainer.make_parts(data, data.splits["1"], cfg, torch.device("cpu"), torch.float32)
    train = fs.arrays(split=1, part="train", standardize=True, val_fraction=0.34, seed=3)
    val = fs.arrays(split=1, part="val", val_fraction=0.34, seed=3)
    assert len(val["video_ids"]) == len(parts.val) > 0
    assert sorted(train["video_ids"]) == sorted(parts.train.video_ids)
    assert sorted(val["video_ids"]) == sorted(parts.val.video_ids)
    assert not set(train["video_ids"]) & set(val["video_ids"])
    mean, std = fs.training_stats(split=1, val_fraction=0.34, seed=3)
    np.testing.assert_allclose(mean.numpy(), parts.mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), parts.std.numpy(), rtol=1e-6)
    order = np.argsort(train["video_ids"])
    ours = train["features"][order]
    theirs = parts.train.features.numpy()[np.argsort(parts.train.video_ids)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    item = fs.dataset(split=1, part="train", standardize=True, val_fraction=0.34, seed=3)[0]
    k = list(train["video_ids"]).index(item["video_id"])
    np.testing.assert_allclose(item["features"].numpy(), train["features"][k], rtol=1e-5, atol=1e-5)


def test_the_stream_reads_each_shard_once_and_gives_every_item_once(made):
    root, set_dir = made
    fs = FeatureStore(root).open("ucf101")
    stream = fs.stream(split=1, part="train", buffer=3)
    rows = stored(set_dir)
    for workers in (0, 2):
        seen = []
        for batch in torch.utils.data.DataLoader(stream, batch_size=4, num_workers=workers):
            for vid, x in zip(batch["video_id"], batch["features"]):
                np.testing.assert_array_equal(x.numpy(), rows[vid][0].astype(np.float32))
                seen.append(vid)
        assert sorted(seen) == sorted(store.load_manifest(set_dir)["splits"]["1"]["train"])
    first = [item["video_id"] for item in stream]
    assert first != [item["video_id"] for item in stream]  # a new order each epoch


def test_modalities_of_one_dataset_are_joined_on_video_id(tmp_path):
    random_set(tmp_path / "ds" / "rgb-set", n=30, d=8)
    heard = np.arange(30) % 4 != 1
    random_set(tmp_path / "ds" / "audio-set", n=30, d=4, seed=5, modality="audio", has_audio=heard)
    fs = FeatureStore(tmp_path).open(["audio-set", "rgb-set"])
    assert fs.modalities == ["rgb", "audio"] and fs.dims == {"rgb": 8, "audio": 4} and fs.feature_dim == 12
    assert fs.presence.shape == (30, 2) and fs.presence[:, 0].all() and np.array_equal(fs.presence[:, 1], heard)
    train = fs.dataset(split=1, part="train")
    item = train[0]
    assert item["features"]["rgb"].shape == (6, 8) and item["features"]["audio"].shape == (6, 4)
    assert all(it["present"] == {"rgb": True, "audio": bool(heard[int(r)])} for it, r in zip(train, train.rows))
    streamed = {it["video_id"]: it["present"] for it in fs.stream(split=1, part="train")}
    assert streamed == {it["video_id"]: it["present"] for it in train}
    arrays = fs.arrays(split=1, part="train")
    assert arrays["features"].shape[-1] == 12 and np.array_equal(arrays["present"], fs.presence[train.rows])
    assert "present" not in FeatureStore(tmp_path).open("rgb-set").dataset(split=1, part="train")[0]
    assert FeatureStore(tmp_path).open("ds").ids == ["rgb-set"]  # a dataset name: its rgb set
    random_set(tmp_path / "ds" / "audio-fewer", n=27, d=4, modality="audio")
    with pytest.raises(ReaderError, match="has no features in .*audio-fewer"):
        FeatureStore(tmp_path).open("rgb-set,audio-fewer")


def test_features_root_from_the_environment_for_every_command(made, tmp_path, monkeypatch):
    root, set_dir = made
    monkeypatch.setenv("FEATURES_ROOT", str(root))
    assert FeatureStore().root == root
    runner = CliRunner()
    listed = runner.invoke(cli, ["store", "list"])
    assert listed.exit_code == 0 and set_dir.name in listed.output, listed.output
    info = runner.invoke(cli, ["store", "info", set_dir.name[:14]])  # an error would list the ids too
    assert info.exit_code == 0 and f"feature set {set_dir.name}\n  directory:  {set_dir}\n" in info.output, info.output
    assert runner.invoke(cli, ["store", "verify"]).exit_code == 0
    gc = runner.invoke(cli, ["store", "gc", "--dry-run"])
    assert gc.exit_code == 0 and "would free" in gc.output, gc.output
    out = tmp_path / "run"
    trained = runner.invoke(
        cli,
        [
            "train",
            "--dataset",
            "ucf101",
            "--model",
            "mean",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert trained.exit_code == 0 and (out / "metrics.json").is_file(), trained.output
    # an explicit option still wins
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert "no feature sets under" in runner.invoke(cli, ["store", "list", "--features-root", str(empty)]).output
    proc = subprocess.run(
        [sys.executable, "-m", "stages", "store", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ | {"FEATURES_ROOT": str(root)},
        timeout=120,
    )
    assert set_dir.name in proc.stdout, proc.stdout + proc.stderr


def test_the_readme_example_runs_as_written(sample_tree, tmp_path):
    """The README's API example, on a store holding a set of the sample dataset (as after `make demo`,
    made here at 32 px to keep the test short: the example works with any set of the sample)."""
    root = tmp_path / "features"
    extract_features(
        ExtractConfig(
            dataset="sample", data_dir=sample_tree, features_root=root, image_size=32, device="cpu", weights="random"
        ),
        quiet=True,
    )
    readme = (REPO / "README.md").read_text()
    example = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", readme, re.S).group(1)
    proc = subprocess.run(
        [sys.executable, "-c", example],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        env=os.environ | {"FEATURES_ROOT": str(root)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"test accuracy \d\.\d\d on 12 clips", proc.stdout), proc.stdout
