"""Stage two's batch sources on feature sets written with plain h5py (the documented schema)."""

from __future__ import annotations

import numpy as np
import torch

from helpers import random_set
from pipeline import FeatureSetView, store
from stages.train import sources


def test_memory_load_standardises_with_training_statistics(tmp_path):
    set_dir = random_set(tmp_path / "set")
    sets = store.open_feature_sets([set_dir])
    index = store.read_index(sets)
    split = store.select_split(sets, index, "1")
    feats = store.read_features(sets, index, split.train)
    assert feats.shape == (len(split.train), 6, 16) and feats.dtype == np.float16
    mean, std = store.feature_stats(
        sources.memory_chunks(feats, np.arange(len(split.train)), index.lengths[split.train])
    )
    valid = np.arange(6)[None, :] < index.lengths[split.train][:, None]
    frames = feats.astype(np.float64)[valid]
    np.testing.assert_allclose(mean.numpy(), frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), frames.std(0, ddof=1), rtol=1e-3)
    part = sources.MemorySource(
        feats,
        np.arange(len(split.train)),
        index.lengths[split.train],
        index.labels[split.train],
        index.video_ids[split.train],
        mean,
        std,
        torch.device("cpu"),
        torch.float32,
    )
    x = part.features.numpy()
    assert np.abs(x[~valid]).max() == 0, "padded frames must be exactly zero after standardisation"
    np.testing.assert_allclose(x[valid].mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(x[valid].std(0), 1, atol=2e-2)


def test_stream_yields_every_video_once_in_full_batches(tmp_path):
    set_dir = random_set(tmp_path / "set", n=70, shard_size=9)
    view = FeatureSetView([set_dir])
    sets, index = view.sets["rgb"], view.index
    rows = view.split("2").train
    mean, std = torch.zeros(16), torch.ones(16)
    part = sources.StreamSource(view, rows, mean, std, torch.device("cpu"), torch.float32)
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
    whole = sources.MemorySource(
        store.read_features(sets, index, rows),
        np.arange(len(rows)),
        index.lengths[rows],
        index.labels[rows],
        index.video_ids[rows],
        mean,
        std,
        torch.device("cpu"),
        torch.float32,
    )
    x_stream = torch.cat([b[0] for b in sorted(((x, p) for x, _, _, p in part.batches(5)), key=lambda b: b[1][0])])
    assert torch.equal(x_stream, whole.features)


def test_choose_load_streams_when_memory_is_short(monkeypatch):
    cpu = torch.device("cpu")
    assert sources.choose_load("auto", 100, 16, 2048, torch.bfloat16, cpu) == "memory"
    monkeypatch.setattr(sources, "available_bytes", lambda device: 10 << 20)
    assert sources.choose_load("auto", 100, 16, 2048, torch.bfloat16, cpu) == "stream"
    assert sources.choose_load("memory", 100, 16, 2048, torch.bfloat16, cpu) == "memory"
