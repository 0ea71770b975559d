"""The ResNet-50 family: weights resolution, and its numbers against a plain torchvision forward."""

import shutil
import sys
import threading

import numpy as np
import pytest
import torch
import torchvision
from helpers import reference_features

from pipeline.errors import ConfigError
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.extract.errors import WeightsError
from stages.extract.extractors.resnet50 import ResNet50, imagenet_cache_path, resolve_weights
from stages.extract.model_thread import ModelThread

RESNET50 = ResNet50(ExtractConfig())


def test_features_equal_a_direct_torchvision_forward(weights_file):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    spec = resolve_weights(str(weights_file))
    ours = ModelThread(RESNET50, spec, device="cpu").extract(torch.from_numpy(frames))
    assert ours.shape == (3, 2048) and ours.dtype == np.float16
    np.testing.assert_allclose(ours.astype(np.float32), reference_features(weights_file, frames), rtol=2e-3, atol=2e-3)


def test_the_cached_imagenet_file_is_what_resnet50_loads(weights_file, monkeypatch, tmp_path):
    """WEIGHTS=imagenet with the checkpoint in torch hub's cache (no network): named by torchvision's
    weights, built by torchvision's own loader from that file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = imagenet_cache_path()
    cached.parent.mkdir(parents=True)
    shutil.copy(weights_file, cached)
    spec = resolve_weights("imagenet")
    assert (spec.kind, spec.identity, spec.path) == ("imagenet", "torchvision:IMAGENET1K_V2", cached)
    frames = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    ours = ModelThread(RESNET50, spec, device="cpu").extract(torch.from_numpy(frames))
    np.testing.assert_allclose(ours.astype(np.float32), reference_features(weights_file, frames), rtol=2e-3, atol=2e-3)


def test_weights_file_identity_is_its_sha256(weights_file):
    spec = resolve_weights(str(weights_file))
    assert spec.kind == "file" and spec.identity.startswith("sha256:") and len(spec.identity) == 7 + 16


def test_random_weights_are_seeded_and_named():
    a, b = resolve_weights("random", seed=3), resolve_weights("random", seed=4)
    assert a.identity == "random:seed3" and a.identity != b.identity
    frames = torch.zeros((1, 32, 32, 3), dtype=torch.uint8)
    x1 = ModelThread(RESNET50, a, device="cpu").extract(frames)
    x2 = ModelThread(RESNET50, resolve_weights("random", seed=3), device="cpu").extract(frames)
    np.testing.assert_array_equal(x1, x2)


def test_weights_that_do_not_fit_resnet50_are_named(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit ResNet-50"):
        ModelThread(RESNET50, resolve_weights(str(path)), device="cpu")


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="WEIGHTS"):
        resolve_weights(str(tmp_path / "nope.pth"))


def test_offline_imagenet_is_an_actionable_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache

    def offline(*a, **k):
        sys.stdout.write('Downloading: "https://download.pytorch.org/..." to ...\n')  # as torch.hub does
        raise OSError("network is unreachable")

    monkeypatch.setattr(
        torchvision.models.ResNet50_Weights.IMAGENET1K_V2.__class__, "get_state_dict", offline, raising=False
    )
    with pytest.raises(WeightsError, match="WEIGHTS=/path/to/resnet50.pth, or WEIGHTS=random"):
        resolve_weights("imagenet")
    spec = resolve_weights("imagenet", fallback_to_random=True)
    assert spec.kind == "random" and spec.identity == "random:seed0"
    out, err = capsys.readouterr()
    assert out == "" and "Downloading:" in err  # stdout holds only results


def test_the_build_and_every_batch_of_a_run_share_one_thread(ucf_tree, weights_file, tmp_path, monkeypatch):
    """cuDNN caches its kernel search per thread: the warm-up's search only serves the
    batches if they run on the thread that built and warmed the model, across shards."""
    threads = {"build": set(), "forward": set()}
    build, forward = ModelThread.build, ModelThread.forward

    def build_here(self, *args):
        threads["build"].add(threading.get_ident())
        return build(self, *args)

    def forward_here(self, x):
        threads["forward"].add(threading.get_ident())
        return forward(self, x)

    monkeypatch.setattr(ModelThread, "build", build_here)
    monkeypatch.setattr(ModelThread, "forward", forward_here)
    cfg = ExtractConfig(
        dataset="ucf101",
        data_dir=ucf_tree,
        features_root=tmp_path,
        weights=str(weights_file),
        image_size=32,
        frames=4,
        shard_size=4,  # several shards, one extractor
        gpu_batch=6,  # not a multiple of T: batches straddle videos
        workers=2,
        device="cpu",
    )
    summary = extract_features(cfg, quiet=True)
    assert summary.computed > 4 and len(threads["build"]) == 1
    assert threads["forward"] == threads["build"] and threading.get_ident() not in threads["build"]
