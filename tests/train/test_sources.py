"""Stage two's batch sources on feature sets written with plain h5py (the documented schema)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import audio_visual_sets, random_set

from pipeline import FeatureSetView, store
from pipeline.store.stats import feature_stats
from stages.train import evaluate, sources


def test_memory_load_standardises_with_training_statistics(tmp_path):
    set_dir = random_set(tmp_path / "set")
    sets = store.open_feature_sets([set_dir])
    index = store.read_index(sets)
    split = store.select_split(sets, index, "1")
    feats = store.read_features(sets, index, split.train)
    assert feats.shape == (len(split.train), 6, 16) and feats.dtype == np.float16
    present = np.ones((len(split.train), 1), bool)
    mean, std = feature_stats(
        sources.memory_chunks(feats, np.arange(len(split.train)), index.lengths[split.train], present)
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
    for b in part.batches(8, shuffle=True, generator=gen):
        sizes.append(len(b.labels))
        seen += b.positions.tolist()
        np.testing.assert_array_equal(b.labels.numpy(), index.labels[rows][b.positions])
        np.testing.assert_array_equal(b.lengths.numpy(), index.lengths[rows][b.positions])
        assert b.present.shape == (len(b.labels), 1) and b.present.all()
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
    x_stream = torch.cat([b.x for b in sorted(part.batches(5), key=lambda b: b.positions[0])])
    assert torch.equal(x_stream, whole.features)


def test_choose_load_streams_when_memory_is_short(monkeypatch):
    cpu = torch.device("cpu")
    assert sources.choose_load("auto", 100, 16, 2048, torch.bfloat16, cpu) == "memory"
    monkeypatch.setattr(sources, "available_bytes", lambda device: 10 << 20)
    assert sources.choose_load("auto", 100, 16, 2048, torch.bfloat16, cpu) == "stream"
    assert sources.choose_load("memory", 100, 16, 2048, torch.bfloat16, cpu) == "memory"


@pytest.mark.parametrize("load", ["memory", "stream"])
def test_batches_carry_each_video_presence_per_modality(tmp_path, load):
    """A joined view's batches: the modalities side by side along D, present (B, 2) from the audio set's has_audio."""
    view = FeatureSetView(list(audio_visual_sets(tmp_path)))
    rows = view.split("1").test
    mean, std = view.stats(rows)
    cpu = torch.device("cpu")
    if load == "stream":
        part = sources.StreamSource(view, rows, mean, std, cpu, torch.float32)
    else:
        part = evaluate.test_source(view, rows, mean, std, cpu, torch.float32)  # small: whole in memory
        assert isinstance(part, sources.MemorySource)
    batches = list(part.batches(5))
    present = torch.cat([b.present for b in batches])
    positions = np.concatenate([b.positions for b in batches])
    assert isinstance(batches[0], sources.Batch) and batches[0].x.shape[1:] == (8, 24)
    np.testing.assert_array_equal(present.numpy(), view.presence[rows][positions])
    assert present.dtype == torch.bool and (~present[:, 1]).sum() == 2 and present[:, 0].all()
