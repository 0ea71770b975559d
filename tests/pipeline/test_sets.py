"""Opening feature sets written with plain h5py (the documented schema): index, splits,
carving, mixing, statistics, verified reads, and which set a dataset name picks."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
from helpers import STR, random_set

from pipeline import store
from pipeline.errors import ConfigError
from pipeline.store.stats import feature_stats


def test_feature_stats_survive_a_huge_common_component():
    """ResNet features: large shared mean, small spread. E[x^2]-E[x]^2 would cancel it away."""
    rng = np.random.default_rng(1)
    x = (2000 + rng.standard_normal((300, 4, 8)) * 8).astype(np.float32)  # float16 spacing at 2000 is 1
    chunks = [(x[i : i + 7].astype(np.float16), np.full(len(x[i : i + 7]), 4)) for i in range(0, 300, 7)]
    mean, std = feature_stats(chunks)
    ref = np.concatenate([c[0] for c in chunks]).astype(np.float64).reshape(-1, 8)
    np.testing.assert_allclose(std.numpy(), ref.std(0, ddof=1), rtol=1e-3)
    np.testing.assert_allclose(mean.numpy(), ref.mean(0), rtol=1e-6)


def test_a_corrupt_shard_is_refused(tmp_path):
    set_dir = random_set(tmp_path / "set")
    raw = bytearray((set_dir / "shard-00001.h5").read_bytes())
    raw[-100] ^= 0xFF
    (set_dir / "shard-00001.h5").write_bytes(bytes(raw))
    sets = store.open_feature_sets([set_dir])
    index = store.read_index(sets)
    with pytest.raises(store.IntegrityError, match="sha256"):
        store.read_features(sets, index, np.arange(len(index.video_ids)))


def test_an_unlisted_shard_is_never_read(tmp_path):
    set_dir = random_set(tmp_path / "set")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    dropped = manifest["shards"].pop()  # a shard on disk that the manifest does not list (uncommitted)
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    sets = store.open_feature_sets([set_dir])
    index = store.read_index(sets)
    assert len(index.video_ids) == 60 - dropped["videos"]
    with pytest.raises(store.IntegrityError, match="not listed"):
        sets[0].read_shard(dropped["file"])
    split = store.select_split(sets, index, "1")
    assert split.missing > 0  # listed in the split, not stored: counted, never read


def test_split_names():
    m = {"1": {}, "2": {}, "3": {}}
    assert store.split_names(m, "all") == ["1", "2", "3"]
    assert store.split_names(m, "2") == ["2"]
    with pytest.raises(ConfigError, match="SPLIT=.*'4'.*choose one of 1, 2, 3, all$"):
        store.split_names(m, "4")
    for single in ("1", "all", "csv"):  # a folder/csv set; before it was named 1: all, or csv
        with pytest.raises(ConfigError, match="SPLIT=.*'4'.*choose one of 1, all$"):
            store.split_names({single: {}}, "4")
    assert store.split_names({"all": {}}, "1") == ["all"]
    assert store.split_names({"all": {}}, "all") == ["all"]
    assert store.split_names({"csv": {}}, "all") == ["csv"]


def test_missing_test_side_is_carved_by_group(tmp_path):
    set_dir = random_set(tmp_path / "set", n=90, splits="all", groups_per_class=6)
    sets = store.open_feature_sets([set_dir])
    index = store.read_index(sets)
    split = store.select_split(sets, index, "all", seed=3, test_fraction=0.2)
    assert split.carved_test
    train_groups, test_groups = set(index.groups[split.train]), set(index.groups[split.test])
    assert train_groups and test_groups and not train_groups & test_groups
    assert set(index.labels[split.test]) == {0, 1, 2}  # stratified: every class on both sides
    assert 0.15 <= len(split.test) / 90 <= 0.4
    again = store.select_split(sets, index, "all", seed=3, test_fraction=0.2)
    np.testing.assert_array_equal(again.test, split.test)


def test_validation_carving_keeps_groups_whole_and_a_group_to_learn_from(tmp_path):
    set_dir = random_set(tmp_path / "set", n=90, groups_per_class=6)
    sets = store.open_feature_sets([set_dir])
    index = store.read_index(sets)
    train = store.select_split(sets, index, "1").train
    kept, held = store.carve_by_group(train, index, 0.1, seed=0)
    assert len(kept) + len(held) == len(train) and len(held)
    assert not set(index.groups[kept]) & set(index.groups[held])
    kept, held = store.carve_by_group(train, index, 0.02, seed=0)
    assert len(held) == 0, "holding a group of 3 out of 15 (20%) would overshoot 2% by far: none is held"
    single = train[np.isin(index.groups[train], [index.groups[train][0]])]
    kept, held = store.carve_by_group(single, index, 0.5, seed=0)
    assert len(held) == 0, "a class with one group stays on the training side"


def test_mixing_sets_that_differ_is_refused_with_the_reason(tmp_path):
    a = random_set(tmp_path / "a", t=6)
    b = random_set(tmp_path / "b", t=8, seed=1)
    with pytest.raises(store.ReaderError, match="T differs.*6 vs 8"):
        store.open_feature_sets([a, b])
    c = random_set(tmp_path / "c", d=32)
    with pytest.raises(store.ReaderError, match="D differs"):
        store.open_feature_sets([a, c])
    ident = {
        "schema_version": 1,
        "dataset": "synthetic",
        "videos_sha256": "y",
        "backbone": "resnet50",
        "weights": "torchvision:IMAGENET1K_V2",
        "sampling": {"mode": "uniform", "frames": 6},
        "image_size": 224,
    }
    e = random_set(tmp_path / "e", identity=ident)
    with pytest.raises(store.ReaderError, match="extraction config differs.*weights"):
        store.open_feature_sets([a, e])


def test_mixing_like_sets_reads_them_as_one(tmp_path):
    ids = lambda prefix: {"feature_set_id": prefix}
    a = random_set(tmp_path / "a", n=30, **ids("a"))
    # same settings, other videos: rename the ids of the second set's copy
    b = random_set(tmp_path / "b", n=30, seed=2, **ids("b"))
    for shard in sorted(b.glob("shard-*.h5")):
        with h5py.File(shard, "a") as f:
            vids = [f"other/{v}" for v in f["video_ids"].asstr()[()]]
            del f["video_ids"]
            f.create_dataset("video_ids", data=np.array(vids, dtype=object), dtype=STR)
    m = json.loads((b / "manifest.json").read_text())
    for s in m["shards"]:
        data = (b / s["file"]).read_bytes()
        s["bytes"], s["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    m["splits"] = {k: {p: [f"other/{v}" for v in ids_] for p, ids_ in v.items()} for k, v in m["splits"].items()}
    (b / "manifest.json").write_text(json.dumps(m))
    sets = store.open_feature_sets([a, b])
    index = store.read_index(sets)
    assert len(index.video_ids) == 60
    split = store.select_split(sets, index, "1")
    assert len(split.train) + len(split.test) == 60
    assert store.read_features(sets, index, split.train).shape[0] == len(split.train)
    with pytest.raises(store.ReaderError, match="same videos"):
        store.read_index(store.open_feature_sets([a, a]))


def test_resolve_feature_sets(tmp_path, monkeypatch, capsys):
    root = tmp_path / "features"
    a = random_set(root / "ds" / "set-a", complete=True)
    assert store.resolve_feature_sets("ds", None, root) == [a]
    assert store.resolve_feature_sets("ds", "set-a", root) == [a]
    assert store.resolve_feature_sets("other", str(a), root) == [a]
    assert store.resolve_feature_sets("ds", "set-", root) == [a]  # unique prefix
    with pytest.raises(store.ReaderError, match="no feature set matches 'nope'(.|\n)*set-a"):
        store.resolve_feature_sets("ds", "nope", root)
    with pytest.raises(
        store.ReaderError,
        match="DATASET=.*'ucf101'.*`make features DATASET=ucf101 FEATURES_ROOT=\\S+`.*\n  `make train DATASET=ds FEATURES_ROOT=\\S+`",
    ):
        store.resolve_feature_sets("ucf101", None, root)
    b = random_set(root / "ds" / "set-b", complete=True)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps(manifest | {"created_at": "2026-01-01T00:00:00+00:00"}))
    assert store.resolve_feature_sets("ds", None, root) == [b]  # the newest complete one, with a note
    assert "using the newest, set-b" in capsys.readouterr().err
    manifest = json.loads((a / "manifest.json").read_text())
    (a / "manifest.json").write_text(json.dumps(manifest | {"default_settings": True}))
    assert store.resolve_feature_sets("ds", None, root) == [a]  # made with stage one's defaults: it wins
    assert "using the newest made with the default settings, set-a" in capsys.readouterr().err
    random_set(root / "part" / "set-c", complete=False)
    with pytest.raises(store.ReaderError, match="none of the 1 feature set(.|\n)*set-c(.|\n)*partial"):
        store.resolve_feature_sets("part", None, root)


def test_a_modality_picks_among_its_own_sets_only(tmp_path):
    root = tmp_path / "features"
    rgb = random_set(root / "ds" / "rgb-set", n=30, d=8)  # no "modality" key: rgb
    audio = random_set(root / "ds" / "audio-set", n=30, d=4, modality="audio")
    assert store.resolve_feature_sets("ds", None, root, "rgb") == [rgb]
    assert store.resolve_feature_sets("ds", None, root, "audio") == [audio]
    with pytest.raises(store.ReaderError, match=r"--modalities \(MODALITIES=\): no audio feature set for 'other'"):
        random_set(root / "other" / "v", n=30, d=8)
        store.resolve_feature_sets("other", None, root, "audio")


def test_the_index_reads_has_audio_and_statistics_leave_absent_streams_out(tmp_path):
    heard = np.arange(30) % 5 != 0
    audio = random_set(tmp_path / "audio", n=30, d=4, modality="audio", has_audio=heard, shard_size=7)
    sets = store.open_feature_sets([audio])
    index = store.read_index(sets)
    assert index.present.dtype == bool and np.array_equal(index.present, heard)
    assert store.read_index(store.open_feature_sets([random_set(tmp_path / "rgb", n=30)])).present.all()
    feats = store.read_features(sets, index, np.arange(30))
    feats[~heard] = -4.6  # silence: must not count as sound
    rgb = np.ones((30, 6, 2), np.float16) * np.arange(30)[:, None, None]
    chunks = [
        (
            np.concatenate([rgb, feats], -1)[s : s + 9],
            index.lengths[s : s + 9],
            np.stack([np.ones(30, bool), heard], 1)[s : s + 9],
        )
        for s in range(0, 30, 9)
    ]
    mean, std = feature_stats(chunks, dims=[2, 4])
    valid = np.arange(6)[None, :] < index.lengths[:, None]
    sound = feats.astype(np.float64)[valid & heard[:, None]]
    np.testing.assert_allclose(mean[2:].numpy(), sound.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std[2:].numpy(), sound.std(0, ddof=1), rtol=1e-4)
    np.testing.assert_allclose(mean[:2].numpy(), rgb.astype(np.float64)[valid].mean(0), rtol=1e-6)  # every video
