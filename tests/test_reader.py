"""Stage two's reader on synthetic feature sets written with plain h5py (the documented schema).

`write_feature_set` here is also what test_train.py builds its sets with.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline import reader, store

STR = h5py.string_dtype(encoding="utf-8")


def write_feature_set(set_dir: Path, features: np.ndarray, lengths: np.ndarray, labels: np.ndarray, video_ids: list[str],
                      groups: list[str], classes: list[str], splits: dict, shard_size: int = 16,
                      identity: dict | None = None, feature_set_id: str | None = None, complete: bool = True) -> Path:
    """A feature set exactly as the README's schema describes it, written with plain h5py.

    features (N, T, D) float16, padded frames zero; lengths (N,) int32; labels (N,) int32.
    """
    set_dir.mkdir(parents=True, exist_ok=True)
    n, t, d = features.shape
    fsid = feature_set_id or set_dir.name
    config = {"dataset": "synthetic", "frames": t, "image_size": 224, "weights": "random"}
    shards = []
    for k, s in enumerate(range(0, n, shard_size)):
        e = min(n, s + shard_size)
        path = set_dir / f"shard-{k:05d}.h5"
        valid = np.arange(t)[None, :] < lengths[s:e, None]
        with h5py.File(path, "w") as f:
            f["features"] = features[s:e].astype(np.float16)
            f["lengths"] = lengths[s:e].astype(np.int32)
            f["labels"] = labels[s:e].astype(np.int32)
            f.create_dataset("video_ids", data=np.array(video_ids[s:e], dtype=object), dtype=STR)
            f.create_dataset("groups", data=np.array(groups[s:e], dtype=object), dtype=STR)
            f["frame_indices"] = np.where(valid, np.arange(t)[None, :] * 3, -1).astype(np.int32)
            f["timestamps"] = np.where(valid, np.arange(t)[None, :] * 0.12, np.nan).astype(np.float32)
            f.attrs.update({"schema_version": 1, "feature_set_id": fsid, "config": json.dumps(config), "shard_index": k})
        data = path.read_bytes()
        shards.append({"index": k, "file": path.name, "videos": e - s, "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest(), "failures": []})
    manifest = {
        "schema_version": 1, "feature_set_id": fsid, "dataset": "synthetic",
        "identity": identity or {"schema_version": 1, "dataset": "synthetic", "videos_sha256": "x", "backbone": "resnet50",
                                 "weights": "random:seed0", "sampling": {"mode": "uniform", "frames": t}, "image_size": 224},
        "config": config, "frames": t, "feature_dim": d, "classes": classes, "splits": splits, "shards": shards,
        "num_videos": n, "num_stored": n, "num_failed": 0, "num_shards": len(shards), "complete": complete,
        "created_at": "2025-01-01T00:00:00+00:00", "updated_at": "2025-01-01T00:00:00+00:00",
    }
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    return set_dir


def random_set(set_dir: Path, n: int = 60, t: int = 6, d: int = 16, classes: int = 3, groups_per_class: int = 5,
               splits: str = "ucf", seed: int = 0, offset: float = 50.0, **kw) -> Path:
    """Random features with a large common offset; UCF-like groups; 3 official splits or only "all"."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    group_no = (np.arange(n) // classes) % groups_per_class
    ids = [f"c{y}/v_c{y}_g{g:02d}_c{i:03d}.avi" for i, (y, g) in enumerate(zip(labels, group_no))]
    groups = [f"c{y}/g{g:02d}" for y, g in zip(labels, group_no)]
    lengths = rng.integers(2, t + 1, n)
    feats = (offset + rng.standard_normal((n, t, d)) * (1 + np.arange(d) / d)).astype(np.float16)
    feats[np.arange(t)[None, :] >= lengths[:, None]] = 0
    if splits == "ucf":
        split_map = {str(k): {"train": [v for v, g in zip(ids, group_no) if g != k - 1],
                              "test": [v for v, g in zip(ids, group_no) if g == k - 1]} for k in (1, 2, 3)}
    else:
        split_map = {"all": {"train": list(ids), "test": []}}
    return write_feature_set(set_dir, feats, lengths, labels, ids, groups, [f"c{k}" for k in range(classes)], split_map, **kw)


def test_memory_load_standardises_with_training_statistics(tmp_path):
    set_dir = random_set(tmp_path / "set")
    sets = reader.open_feature_sets([set_dir])
    index = reader.read_index(sets)
    split = reader.select_split(sets, index, "1")
    feats = reader.read_features(sets, index, split.train)
    assert feats.shape == (len(split.train), 6, 16) and feats.dtype == np.float16
    mean, std = reader.feature_stats(reader.memory_chunks(feats, np.arange(len(split.train)), index.lengths[split.train]))
    valid = np.arange(6)[None, :] < index.lengths[split.train][:, None]
    frames = feats.astype(np.float64)[valid]
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), frames.std(0, ddof=1), rtol=1e-3)
    part = reader.MemorySource(feats, np.arange(len(split.train)), index.lengths[split.train], index.labels[split.train],
                               index.video_ids[split.train], mean, std, torch.device("cpu"), torch.float32)
    x = part.features.numpy()
    assert np.abs(x[~valid]).max() == 0, "padded frames must be exactly zero after standardisation"
    np.testing.assert_allclose(x[valid].mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(x[valid].std(0), 1, atol=2e-2)


def test_feature_stats_survive_a_huge_common_component():
    """ResNet features: large shared mean, small spread. E[x^2]-E[x]^2 would cancel it away."""
    rng = np.random.default_rng(1)
    x = (2000 + rng.standard_normal((300, 4, 8)) * 8).astype(np.float32)  # float16 spacing at 2000 is 1
    chunks = [(x[i : i + 7].astype(np.float16), np.full(len(x[i : i + 7]), 4)) for i in range(0, 300, 7)]
    mean, std = reader.feature_stats(chunks)
    ref = np.concatenate([c[0] for c in chunks]).astype(np.float64).reshape(-1, 8)
    np.testing.assert_allclose(std.numpy(), ref.std(0, ddof=1), rtol=1e-3)
    np.testing.assert_allclose(mean.numpy(), ref.mean(0), rtol=1e-6)


def test_stream_yields_every_video_once_in_full_batches(tmp_path):
    set_dir = random_set(tmp_path / "set", n=70, shard_size=9)
    sets = reader.open_feature_sets([set_dir])
    index = reader.read_index(sets)
    rows = reader.select_split(sets, index, "2").train
    mean, std = torch.zeros(16), torch.ones(16)
    part = reader.StreamSource(sets, index, rows, mean, std, torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(0)
    seen, sizes = [], []
    for x, lengths, y, pos in part.batches(8, shuffle=True, generator=gen):
        sizes.append(len(y))
        seen += pos.tolist()
        np.testing.assert_array_equal(y.numpy(), index.labels[rows][pos])
        np.testing.assert_array_equal(lengths.numpy(), index.lengths[rows][pos])
    assert sorted(seen) == list(range(len(rows)))
    assert all(s == 8 for s in sizes[:-1]) and 0 < sizes[-1] <= 8
    # the same rows, read whole, give the same standardised numbers
    whole = reader.MemorySource(reader.read_features(sets, index, rows), np.arange(len(rows)), index.lengths[rows],
                                index.labels[rows], index.video_ids[rows], mean, std, torch.device("cpu"), torch.float32)
    x_stream = torch.cat([b[0] for b in sorted(((x, p) for x, _, _, p in part.batches(5)), key=lambda b: b[1][0])])
    assert torch.equal(x_stream, whole.features)


def test_a_corrupt_shard_is_refused(tmp_path):
    set_dir = random_set(tmp_path / "set")
    raw = bytearray((set_dir / "shard-00001.h5").read_bytes())
    raw[-100] ^= 0xFF
    (set_dir / "shard-00001.h5").write_bytes(bytes(raw))
    sets = reader.open_feature_sets([set_dir])
    index = reader.read_index(sets)
    with pytest.raises(store.IntegrityError, match="sha256"):
        reader.read_features(sets, index, np.arange(len(index.video_ids)))


def test_an_unlisted_shard_is_never_read(tmp_path):
    set_dir = random_set(tmp_path / "set")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    dropped = manifest["shards"].pop()  # a shard on disk that the manifest does not list (uncommitted)
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    sets = reader.open_feature_sets([set_dir])
    index = reader.read_index(sets)
    assert len(index.video_ids) == 60 - dropped["videos"]
    with pytest.raises(store.IntegrityError, match="not listed"):
        sets[0].read_shard(dropped["file"])
    split = reader.select_split(sets, index, "1")
    assert split.missing > 0  # listed in the split, not stored: counted, never read


def test_split_names():
    m = {"splits": {"1": {}, "2": {}, "3": {}}}
    assert reader.split_names(m, "all") == ["1", "2", "3"]
    assert reader.split_names(m, "2") == ["2"]
    with pytest.raises(reader.ReaderError, match="SPLIT=.*'4'.*1, 2, 3, all"):
        reader.split_names(m, "4")
    assert reader.split_names({"splits": {"all": {}}}, "1") == ["all"]
    assert reader.split_names({"splits": {"all": {}}}, "all") == ["all"]
    assert reader.split_names({"splits": {"csv": {}}}, "all") == ["csv"]


def test_missing_test_side_is_carved_by_group(tmp_path):
    set_dir = random_set(tmp_path / "set", n=90, splits="all", groups_per_class=6)
    sets = reader.open_feature_sets([set_dir])
    index = reader.read_index(sets)
    split = reader.select_split(sets, index, "all", seed=3, test_fraction=0.2)
    assert split.carved_test
    train_groups, test_groups = set(index.groups[split.train]), set(index.groups[split.test])
    assert train_groups and test_groups and not train_groups & test_groups
    assert set(index.labels[split.test]) == {0, 1, 2}  # stratified: every class on both sides
    assert 0.15 <= len(split.test) / 90 <= 0.4
    again = reader.select_split(sets, index, "all", seed=3, test_fraction=0.2)
    np.testing.assert_array_equal(again.test, split.test)


def test_validation_carving_keeps_groups_whole_and_a_group_to_learn_from(tmp_path):
    set_dir = random_set(tmp_path / "set", n=90, groups_per_class=6)
    sets = reader.open_feature_sets([set_dir])
    index = reader.read_index(sets)
    train = reader.select_split(sets, index, "1").train
    kept, held = reader.carve_by_group(train, index, 0.1, seed=0)
    assert len(kept) + len(held) == len(train) and len(held)
    assert not set(index.groups[kept]) & set(index.groups[held])
    kept, held = reader.carve_by_group(train, index, 0.02, seed=0)
    assert len(held) == 0, "holding a group of 3 out of 15 (20%) would overshoot 2% by far: none is held"
    single = train[np.isin(index.groups[train], [index.groups[train][0]])]
    kept, held = reader.carve_by_group(single, index, 0.5, seed=0)
    assert len(held) == 0, "a class with one group stays on the training side"


def test_mixing_sets_that_differ_is_refused_with_the_reason(tmp_path):
    a = random_set(tmp_path / "a", t=6)
    b = random_set(tmp_path / "b", t=8, seed=1)
    with pytest.raises(reader.ReaderError, match="T differs.*6 vs 8"):
        reader.open_feature_sets([a, b])
    c = random_set(tmp_path / "c", d=32)
    with pytest.raises(reader.ReaderError, match="D differs"):
        reader.open_feature_sets([a, c])
    ident = {"schema_version": 1, "dataset": "synthetic", "videos_sha256": "y", "backbone": "resnet50",
             "weights": "torchvision:IMAGENET1K_V2", "sampling": {"mode": "uniform", "frames": 6}, "image_size": 224}
    e = random_set(tmp_path / "e", identity=ident)
    with pytest.raises(reader.ReaderError, match="extraction config differs.*weights"):
        reader.open_feature_sets([a, e])


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
    sets = reader.open_feature_sets([a, b])
    index = reader.read_index(sets)
    assert len(index.video_ids) == 60
    split = reader.select_split(sets, index, "1")
    assert len(split.train) + len(split.test) == 60
    assert reader.read_features(sets, index, split.train).shape[0] == len(split.train)
    with pytest.raises(reader.ReaderError, match="same videos"):
        reader.read_index(reader.open_feature_sets([a, a]))


def test_resolve_feature_sets(tmp_path, monkeypatch, capsys):
    root = tmp_path / "features"
    a = random_set(root / "ds" / "set-a", complete=True)
    assert reader.resolve_feature_sets("ds", None, root) == [a]
    assert reader.resolve_feature_sets("ds", "set-a", root) == [a]
    assert reader.resolve_feature_sets("other", str(a), root) == [a]
    assert reader.resolve_feature_sets("ds", "set-", root) == [a]  # unique prefix
    with pytest.raises(reader.ReaderError, match="no feature set matches 'nope'(.|\n)*set-a"):
        reader.resolve_feature_sets("ds", "nope", root)
    with pytest.raises(reader.ReaderError, match="DATASET=.*'ucf101'.*datasets there: ds"):
        reader.resolve_feature_sets("ucf101", None, root)
    b = random_set(root / "ds" / "set-b", complete=True)
    manifest = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps(manifest | {"created_at": "2026-01-01T00:00:00+00:00"}))
    monkeypatch.setattr(reader, "default_set_dir", lambda dataset, root: None)
    assert reader.resolve_feature_sets("ds", None, root) == [b]  # the newest complete one, with a note
    assert "using the newest, set-b" in capsys.readouterr().err
    monkeypatch.setattr(reader, "default_set_dir", lambda dataset, root: root / "ds" / "set-a")
    assert reader.resolve_feature_sets("ds", None, root) == [a]  # stage one's default wins
    random_set(root / "part" / "set-c", complete=False)
    with pytest.raises(reader.ReaderError, match="none of the 1 feature set(.|\n)*set-c(.|\n)*partial"):
        reader.resolve_feature_sets("part", None, root)


def test_choose_load_streams_when_memory_is_short(monkeypatch):
    cpu = torch.device("cpu")
    assert reader.choose_load("auto", 100, 16, 2048, torch.bfloat16, cpu) == "memory"
    monkeypatch.setattr(reader, "available_bytes", lambda device: 10 << 20)
    assert reader.choose_load("auto", 100, 16, 2048, torch.bfloat16, cpu) == "stream"
    assert reader.choose_load("memory", 100, 16, 2048, torch.bfloat16, cpu) == "memory"
