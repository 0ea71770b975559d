"""Reading ragged (dense) sets: the shard reader, the API's video() and items, pad_collate, and the
catalog commands, on sets written through the store's writer (tests/ragged_sets.py)."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ragged_sets import fixed_twin, ragged_set

from pipeline import FeatureStore, LengthBatchSampler, pad_collate, store
from pipeline.errors import IntegrityError, ReaderError
from stages.cli import main as cli

# Lengths that differ widely: 1 s to 40 s at STRIDE=25 on 25 fps footage (1 to 40 rows).
DURATIONS = [1.0, 40.0, 3.0, 12.0, 2.2, 25.0, 7.0, 1.5, 30.0, 4.0, 9.0, 18.0]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A ragged set (STRIDE=25, 3 shards), its fixed-T twin (T=8) and the truth, under one root."""
    root = tmp_path_factory.mktemp("ragged-store")
    ragged, truth = ragged_set(root, DURATIONS, stride=25)
    return root, ragged, fixed_twin(root, truth, 8), truth


def test_the_manifest_says_ragged_and_a_fixed_twin_says_nothing(sets):
    _, ragged, fixed, _ = sets
    assert json.loads((ragged / "manifest.json").read_text())["layout"] == "ragged"
    assert json.loads((ragged / "manifest.json").read_text())["frames"] is None
    assert "layout" not in json.loads((fixed / "manifest.json").read_text())


def test_read_shard_returns_the_rows_written(sets):
    _, ragged, _, truth = sets
    fs = store.open_feature_sets([ragged])[0]
    data = fs.read_shard(fs.manifest.shards[0].file)
    starts = store.video_offsets(data["lengths"])
    for vid, start, n in zip(data["video_ids"], starts, data["lengths"]):
        np.testing.assert_array_equal(data["features"][start : start + n], truth[vid].features)
        np.testing.assert_array_equal(data["spans"][start : start + n], truth[vid].spans)


def test_video_equals_the_rows_written_on_both_layouts(sets):
    root, ragged, fixed, truth = sets
    fs, twin = FeatureStore(root).open(str(ragged)), FeatureStore(root).open(str(fixed))
    assert fs.ragged and not twin.ragged and fs.frames is None
    for vid, v in truth.items():
        got = fs.video(vid)
        assert got["features"].dtype == np.float32 and got["features"].shape == v.features.shape
        np.testing.assert_array_equal(got["features"], v.features.astype(np.float32))
        np.testing.assert_array_equal(got["timestamps"], v.timestamps)
        np.testing.assert_array_equal(got["spans"], v.spans)
        np.testing.assert_array_equal(got["frame_indices"], v.frame_indices)
        assert (got["label"], got["fps"], got["video_id"]) == (v.label, v.fps, vid)
        assert got["duration"] == pytest.approx(v.duration, rel=1e-6)  # stored float32
        short = twin.video(vid)  # the fixed-T set: its rows up to the video's length
        n = min(8, len(v.features))
        np.testing.assert_array_equal(short["features"], v.features[:n].astype(np.float32))
        np.testing.assert_array_equal(short["frame_indices"], v.frame_indices[:n])
        if n > 1:
            assert short["fps"] == pytest.approx(25.0, rel=1e-4)
            assert (np.diff(short["spans"], axis=1) > 0).all()
    with pytest.raises(ReaderError, match="no video 'Calm/nothing.avi'"):
        fs.video("Calm/nothing.avi")


def test_dataset_and_stream_items_carry_their_own_length(sets):
    root, ragged, _, truth = sets
    fs = FeatureStore(root).open(str(ragged))
    train = fs.dataset(split=1, part="train")
    for i in range(len(train)):
        item = train[i]
        want = truth[item["video_id"]].features
        assert item["length"] == len(want) and tuple(item["features"].shape) == want.shape
        np.testing.assert_array_equal(item["features"].numpy(), want.astype(np.float32))
    streamed = {it["video_id"]: it for it in fs.stream(split=1, part="train", buffer=3)}
    assert sorted(streamed) == sorted(train[i]["video_id"] for i in range(len(train)))
    for vid, it in streamed.items():
        np.testing.assert_array_equal(it["features"].numpy(), truth[vid].features.astype(np.float32))


def test_pad_collate_pads_to_the_longest_with_a_mask(sets):
    root, ragged, _, truth = sets
    train = FeatureStore(root).open(str(ragged)).dataset(split=1, part="train")
    items = [train[i] for i in range(3)]
    batch = pad_collate(items)
    longest = max(it["length"] for it in items)
    assert batch["features"].shape == (3, longest, 8) and batch["mask"].shape == (3, longest)
    for b, it in enumerate(items):
        n = it["length"]
        assert batch["mask"][b].tolist() == [True] * n + [False] * (longest - n)
        torch.testing.assert_close(batch["features"][b, :n], it["features"], rtol=0, atol=0)
        assert not batch["features"][b, n:].any()
    assert batch["lengths"].tolist() == [it["length"] for it in items]
    assert batch["labels"].tolist() == [it["label"] for it in items]


def test_a_dataloader_with_length_buckets_sees_every_video_once_padded_little(sets):
    root, ragged, _, truth = sets
    train = FeatureStore(root).open(str(ragged)).dataset(split=1, part="train")
    loader = torch.utils.data.DataLoader(train, batch_sampler=LengthBatchSampler(train, 2), collate_fn=pad_collate)
    seen, padded = [], 0
    for batch in loader:
        seen += batch["video_ids"]
        padded += int((~batch["mask"]).sum())
    assert sorted(seen) == sorted(train[i]["video_id"] for i in range(len(train)))
    lengths = sorted(len(truth[v].features) for v in seen)
    # sorted pairs pad least: the buckets must do no worse than pairing neighbours in length order
    assert padded == sum(b - a for a, b in zip(lengths[::2], lengths[1::2]))


def test_a_fixed_t_reader_refuses_a_ragged_set_with_a_reason(sets):
    root, ragged, _, _ = sets
    fs = FeatureStore(root).open(str(ragged))
    with pytest.raises(ReaderError, match="ragged set"):
        fs.read(np.arange(2))


def test_store_info_shows_rows_per_video_and_list_the_sampling(sets):
    root, ragged, _, truth = sets
    out = CliRunner().invoke(cli, ["store", "info", ragged.name, "--features-root", str(root)])
    assert out.exit_code == 0, out.output
    lengths = sorted(len(v.features) for v in truth.values())
    assert (
        f"rows:       {sum(lengths):,} in all, per video min {lengths[0]} / median {np.median(lengths):g} / max {lengths[-1]}"
        in out.output
    )
    assert "layout:     ragged, all/s25" in out.output
    listed = CliRunner().invoke(cli, ["store", "list", "--features-root", str(root)])
    assert listed.exit_code == 0 and "all/s25" in listed.output and " 8 " in listed.output


def rewrite_lengths(path, lengths):
    """The shard at `path` with another `lengths`, written back whole (as a buggy writer would)."""
    buf = io.BytesIO(path.read_bytes())
    with h5py.File(buf, "r+") as f:
        f["lengths"][...] = lengths
    path.write_bytes(buf.getvalue())


def test_verify_catches_an_inconsistent_ragged_shard_with_a_valid_checksum(tmp_path):
    set_dir, _ = ragged_set(tmp_path, [2.0, 3.0, 1.0], stride=25)
    assert CliRunner().invoke(cli, ["store", "verify", "--features-root", str(tmp_path)]).exit_code == 0
    shard = set_dir / "shard-00000.h5"
    rewrite_lengths(shard, [2, 3, 2])  # one row more than features holds
    m = store.load_manifest(set_dir)  # the manifest re-recorded to match: only the layout is wrong
    blob = shard.read_bytes()
    m["shards"][0] |= {"bytes": len(blob), "sha256": __import__("hashlib").sha256(blob).hexdigest()}
    store.write_manifest(set_dir, m)
    out = CliRunner().invoke(cli, ["store", "verify", "--features-root", str(tmp_path)])
    assert out.exit_code == 1
    assert "inconsistent ragged shard: sum(lengths) = 7 != 6 rows of features" in out.output
    with pytest.raises(IntegrityError, match="sum\\(lengths\\) = 7"):
        FeatureStore(tmp_path).open(str(set_dir)).video("Calm/v_Calm_g00_c00.avi")


def test_a_picture_and_a_sound_set_of_the_same_rows_join_side_by_side(tmp_path):
    rgb, truth = ragged_set(tmp_path, DURATIONS[:6], stride=25)
    audio, sound = ragged_set(tmp_path, DURATIONS[:6], dim=4, stride=25, modality="audio", seed=1)
    fs = FeatureStore(tmp_path).open([str(rgb), str(audio)])
    assert fs.ragged and fs.modalities == ["rgb", "audio"] and fs.feature_dim == 12
    for vid in truth:
        want = np.concatenate([truth[vid].features, sound[vid].features], axis=1).astype(np.float32)
        np.testing.assert_array_equal(fs.video(vid)["features"], want)
    item = fs.dataset(split=1, part="train")[0]
    assert item["features"]["audio"].shape == (item["length"], 4)
    other, _ = ragged_set(tmp_path / "other", DURATIONS[:6], dim=4, rate=2.0, modality="audio")
    with pytest.raises(ReaderError, match="has another number of rows in each"):
        FeatureStore(tmp_path).open([str(rgb), str(other)])
