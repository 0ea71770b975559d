"""The CUDA path, against what a GPU user relies on. Skipped without CUDA (conftest.py).

Each test is built so that the race or mistake it exists for would make it fail:
more videos than frame slots (slots are reused while the GPU still reads others), a batch
size that is not a multiple of T (videos straddle batches), several videos per batch,
fp16 features compared with an independent fp32 CPU forward of the same frames and checked
finite (assert_allclose alone treats NaN as equal), a compiled model, two processes on one
GPU, and stage two's step run under CUDA's synchronisation check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import FakeExtractor, assert_fp16_close, audio_visual_sets, random_set, reference_features, stored

from pipeline import store
from stages.extract import extract_features, model_thread
from stages.extract.batching import Batcher
from stages.extract.config import ExtractConfig
from stages.extract.decode import DecodeJob, decode_video
from stages.extract.extractors.resnet50 import ResNet50, resolve_weights
from stages.extract.model_thread import ModelThread
from stages.train.config import TrainConfig

pytestmark = pytest.mark.gpu

SIZE, T, BATCH, DECODERS = 64, 4, 6, 1


@pytest.fixture(scope="module")
def gpu_cfg(ucf_tree, weights_file, tmp_path_factory) -> ExtractConfig:
    return ExtractConfig(
        dataset="ucf101",
        data_dir=ucf_tree,
        features_root=tmp_path_factory.mktemp("gpu-store"),
        weights=str(weights_file),
        image_size=SIZE,
        frames=T,
        gpu_batch=BATCH,
        workers=DECODERS,
        shard_size=5,
        device="cuda",
    )


@pytest.fixture(scope="module")
def gpu_set(gpu_cfg) -> dict:
    """video_id -> (features (T, D) float16, length, label) of a CUDA run with the fixture's settings."""
    summary = extract_features(gpu_cfg, quiet=True)
    assert summary.failed == 0 and store.load_manifest(summary.set_dir)["complete"]
    return stored(summary.set_dir)


@pytest.fixture(scope="module")
def cpu_reference(gpu_cfg, weights_file) -> dict:
    """video_id -> fp32 features (T, D) of torchvision's ResNet-50 on the CPU, on frames decoded independently."""
    from stages.extract.datasets import load_dataset

    frames = {}
    for rec in load_dataset(gpu_cfg).records:
        dec = decode_video(rec.path, DecodeJob(T, SIZE, gpu_cfg.resize_to, decoder=gpu_cfg.decoder))
        assert not dec.error, dec.error
        frames[rec.video_id] = np.ascontiguousarray(dec.frames)
    feats = reference_features(weights_file, np.concatenate(list(frames.values())))  # one forward for all
    return {vid: f for vid, f in zip(frames, feats.reshape(len(frames), T, -1))}


def test_the_run_reuses_slots_and_straddles_batches(gpu_cfg, cpu_reference):
    videos = len(cpu_reference)
    # The pool a run with the fixture's settings allocates, read from the batcher itself.
    with Batcher(FakeExtractor(), batch=BATCH, frames=T, size=SIZE, workers=DECODERS, sink=lambda *a: None) as b:
        slots = len(b.slots.arrays)
    assert slots < videos, f"the fixture must have more videos ({videos}) than frame slots ({slots})"
    assert BATCH % T != 0 and BATCH > T


def test_cuda_features_equal_an_fp32_cpu_forward(gpu_set, cpu_reference):
    assert sorted(gpu_set) == sorted(cpu_reference)
    for vid, (x, n, _) in gpu_set.items():
        assert n == T
        assert_fp16_close(x, cpu_reference[vid], vid)


def test_the_same_frames_give_the_same_bits_wherever_they_sit_in_a_batch(weights_file):
    """One extractor, one shape (partial batches padded), kernels chosen once by the warm-up:
    five copies of one clip at five different batch offsets (the last batch partial) must
    give bit-identical features."""
    spec = resolve_weights(str(weights_file))
    ext = ModelThread(ResNet50(ExtractConfig(image_size=SIZE)), spec, "cuda", "fp16", warm_up=BATCH)
    frames = np.random.default_rng(0).integers(0, 256, (T, SIZE, SIZE, 3), dtype=np.uint8)
    got: dict[int, np.ndarray] = {}

    def sink(owner, first, feats, last):
        got.setdefault(owner, np.zeros((T, 2048), np.float16))[first : first + len(feats)] = feats

    with Batcher(ext, batch=BATCH, frames=T, workers=1, sink=sink) as batcher:
        for video in range(5):  # 20 frames in batches of 6: offsets 0, 4, 2, 0, 4; the last batch has 2 rows
            slot = batcher.slots.acquire()
            batcher.slots.arrays[slot][:] = frames
            batcher.add(slot, T, video)
    assert batcher.timings["batches"] == 4
    for video in range(1, 5):
        np.testing.assert_array_equal(got[video], got[0], err_msg=f"copy {video} differs from copy 0")
    assert np.isfinite(got[0].astype(np.float32)).all()
    ext.close()


def test_two_processes_on_one_gpu_give_the_same_set(gpu_cfg, gpu_set, cpu_reference, tmp_path):
    summary = extract_features(
        gpu_cfg.replace(features_root=tmp_path, devices=("cuda:0", "cuda:0"), workers=2), quiet=True
    )
    manifest = store.load_manifest(summary.set_dir)
    assert manifest["complete"] and manifest["num_stored"] == len(gpu_set)
    assert summary.set_dir.name == next(iter(stored_dirs(gpu_cfg))).name  # same settings, same id
    got = stored(summary.set_dir)
    assert sorted(got) == sorted(gpu_set)
    for vid, (x, n, _) in got.items():
        assert_fp16_close(x, cpu_reference[vid], f"{vid} (DEVICES=cuda:0,cuda:0)")


def stored_dirs(cfg: ExtractConfig):
    return (cfg.store_root / cfg.dataset_name).iterdir()


@pytest.mark.parametrize("fusion", [None, "early", "gated"])
def test_training_steps_never_wait_for_the_gpu(tmp_path, fusion):
    """Stage two's step, under torch.cuda.set_sync_debug_mode("error"): any host<->device
    synchronisation in the batch indexing, the forward, the backward or the optimiser raises.
    fusion: one modality (None), or rgb+audio with absent sound tracks and modality dropout."""
    from pipeline.devices import training_precision
    from stages.train import loop, trainer
    from stages.train.spec import build_from_spec, model_spec

    if fusion is None:
        features = str(random_set(tmp_path / "set", n=96, t=8, d=64, classes=4))
    else:
        features = ",".join(str(d) for d in audio_visual_sets(tmp_path))
    device = torch.device("cuda")
    cfg = TrainConfig(
        features=features,
        fusion=fusion or "gated",
        model="lstm",
        hidden=32,
        proj=16,
        epochs=1,
        device="cuda",
        out=tmp_path / "run",
        progress=False,
        clip_grad=1.0,
    )
    autocast_dtype, data_dtype = training_precision("auto", device)
    data = trainer.load_data(cfg, device, data_dtype)
    parts = trainer.make_parts(data, data.splits["1"], cfg, device, data_dtype)
    model = build_from_spec(model_spec(cfg, data.view), parts.mean, parts.std).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = loop.make_optimizer(model, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    generator = torch.Generator().manual_seed(0)
    model.train()
    batches = list(parts.train.batches(16, shuffle=True, generator=generator))
    for b in batches[:2]:  # first steps: cuDNN plans, lazy state
        loop.train_step(model, params, b, opt, sched, scaler, cfg, autocast_dtype)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for b in parts.train.batches(16, shuffle=True, generator=generator):
            loss, hits = loop.train_step(model, params, b, opt, sched, scaler, cfg, autocast_dtype)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(loss).item()


def test_a_compiled_backbone_on_a_small_batch(gpu_cfg, cpu_reference, tmp_path, monkeypatch):
    """--compile: every batch padded to one shape; the numbers stay those of the fp32 forward.
    Compiled in inductor's default mode (the product's max-autotune takes minutes)."""
    monkeypatch.setattr(model_thread, "COMPILE_MODE", "default")
    summary = extract_features(gpu_cfg.replace(features_root=tmp_path, compile=True, gpu_batch=8), quiet=True)
    got = stored(summary.set_dir)
    assert sorted(got) == sorted(cpu_reference)
    for vid, (x, _, _) in got.items():
        assert_fp16_close(x, cpu_reference[vid], f"{vid} (compiled)")
