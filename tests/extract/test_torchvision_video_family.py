"""The torchvision video family: its stored clip features against torchvision's own model and
`weights.transforms()` on clips of frames decoded independently (family_reference.py), the
frames each clip holds, its names and its weights policy. Written random weights: nothing downloads."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
import torchvision
from family_reference import assert_agrees, extract, stored_and_reference
from torchvision.transforms.functional import pil_to_tensor

from pipeline import store
from pipeline.errors import ConfigError
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.extract.errors import WeightsError
from stages.extract.extractors import CLIPS, family_for
from stages.extract.plan import make_plan


def write_weights(path, name: str, seed: int):
    """A randomly initialised model's weights. Batch norms keep the statistics of one seeded clip
    of noise of the model's shape instead of their initial 0 and 1: with those, S3D's features
    vanish (norms near 1e-5) and the least change of a pixel turns them around."""
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    for m in norms:
        m.momentum = None  # the running statistics become those of the one batch
    if norms:  # the video ResNets and S3D; MViT and Swin3D normalise by layer
        family = family_for(ExtractConfig(backbone=f"torchvision:{name}"))
        size = family.preprocessing().size
        with torch.no_grad():
            model.train()(torch.randn(1, 3, family.clip().length, size, size))
    torch.save(model.state_dict(), path)
    return path


def without_head(name: str, model: torch.nn.Module):
    """What a torchvision user writes to get the vector the classifier reads."""
    if name == "s3d":  # a 1x1x1 convolution, then the mean over time and space: average what it reads
        return lambda x: model.avgpool(model.features(x)).mean(dim=(2, 3, 4))
    if name.startswith("mvit"):
        model.head[-1] = torch.nn.Identity()
    elif name.startswith("swin3d"):
        model.head = torch.nn.Identity()
    else:  # the video ResNets
        model.fc = torch.nn.Identity()
    return model


def video_reference(name: str, weights_path):
    """torchvision's model with those weights, and the default weights' transforms applied to
    each clip as a (K, 3, H, W) uint8 tensor of the full-size decoded frames."""
    model = torchvision.models.get_model(name, weights=None)
    model.load_state_dict(torch.load(weights_path, weights_only=True))
    forward = without_head(name, model.eval())
    transform = torchvision.models.get_model_weights(name).DEFAULT.transforms()

    def reference(clips):
        x = torch.stack([transform(torch.stack([pil_to_tensor(p) for p in clip])) for clip in clips])
        return forward(x).numpy()

    return reference


def expected_clips(path, frames: int, length: int, stride: int) -> np.ndarray:
    """(T, K): T segment centres of the video's frames, each with K frames `stride` apart around it."""
    with av.open(str(path)) as container:
        count = sum(1 for _ in container.decode(video=0))
    centres = np.floor((np.arange(frames) + 0.5) * count / frames).astype(int)
    return np.clip(centres[:, None] + stride * (np.arange(length) - length // 2), 0, count - 1)


def stored_frame_indices(set_dir) -> dict[str, np.ndarray]:
    out = {}
    for s in store.load_manifest(set_dir)["shards"]:
        data = store.read_shard(set_dir / s["file"], s["sha256"])
        out |= dict(zip(data["video_ids"], data["frame_indices"]))
    return out


def agreement_with_torchvision(cut_csv, tmp_path, name: str, stride: int):
    """Stage one with written random weights (T=2) on the cut footage: (set dir, Agreement of every
    stored clip with torchvision's forward of the same frames decoded by ffmpeg). Each video's
    clips are first checked to be the ones expected at `stride`."""
    weights = write_weights(tmp_path / f"{name}.pth", name, seed=1)
    set_dir = extract(cut_csv, tmp_path, f"torchvision:{name}", weights)
    length = family_for(ExtractConfig(backbone=f"torchvision:{name}")).clip().length
    for vid, idx in stored_frame_indices(set_dir).items():  # every frame of every clip, as sampled
        assert idx.shape == (2, length)
        np.testing.assert_array_equal(idx, expected_clips(cut_csv.parent / vid, 2, length, stride))
    reference = video_reference(name, weights)
    return set_dir, stored_and_reference(set_dir, lambda vid: cut_csv.parent / vid, reference)


@pytest.fixture(scope="module")
def r2plus1d(cut_csv, tmp_path_factory):
    return agreement_with_torchvision(cut_csv, tmp_path_factory.mktemp("r2plus1d"), "r2plus1d_18", stride=2)


def test_r2plus1d_stores_per_clip_what_torchvision_computes_on_an_independent_decode(r2plus1d):
    """Its own clips (16 frames trained at 15 frames/s: every 2nd frame, across the scene cuts)
    and preprocessing (resize to 128 x 171, crop 112, Kinetics mean/std) by default; every clip
    against ffmpeg's decode of its frames at the bar, in both containers, portrait included."""
    set_dir, agreement = r2plus1d
    assert set_dir.name.startswith("torchvision-r2plus1d_18-sha256-t2-112px-")
    identity = store.load_manifest(set_dir)["identity"]
    assert identity["sampling"]["clip"] == {"frames": 16, "frame_rate": 15.0}
    assert identity["resize"] == [128, 171]
    assert agreement.ours.shape == (8, 512)
    assert_agrees(agreement)


@pytest.mark.slow
@pytest.mark.parametrize("name, dim, stride", [("s3d", 1024, 2), ("mvit_v2_s", 768, 4), ("swin3d_t", 768, 2)])
def test_the_heavier_video_models_store_what_torchvision_computes_on_an_independent_decode(
    cut_csv, tmp_path, name, dim, stride
):
    """At their own sizes (224 px) and clips: S3D's 128 frames, MViT's 16 trained at 7.5 frames/s
    (every 4th frame here), Swin3D's 32."""
    _, agreement = agreement_with_torchvision(cut_csv, tmp_path, name, stride)
    assert agreement.ours.shape == (8, dim)
    assert_agrees(agreement)


def test_a_clip_set_of_the_same_videos_copies_its_rows_frames_and_all(cut_csv, tmp_path):
    """Reuse across sets (another --name, the same files and settings) copies every row, the
    (T, K) frame indices of its clips with it."""
    cfg = ExtractConfig(
        dataset="csv", data_dir=cut_csv, features_root=tmp_path, frames=2, device="cpu", image_size=32,
        backbone="torchvision:r2plus1d_18", weights="random", precision="fp32",
    )  # fmt: skip
    first = extract_features(cfg, quiet=True)
    again = extract_features(cfg.replace(name="clips-again"), quiet=True)
    assert (first.computed, again.computed, again.copied) == (4, 0, 4)
    before, after = stored_frame_indices(first.set_dir), stored_frame_indices(again.set_dir)
    assert before.keys() == after.keys() and all(after[v].shape == (2, 16) for v in after)
    assert all((before[v] == after[v]).all() for v in before)


def test_the_family_reads_the_weights_clip_and_transforms():
    family = family_for(ExtractConfig(backbone="torchvision:r2plus1d_18"))
    pre = family.preprocessing()
    assert family.decodes == CLIPS and family.dim == 512
    assert (pre.size, pre.resize, pre.interpolation) == (112, (128, 171), "bilinear")
    assert family.item_shape() == (16, 112, 112, 3)
    small = family_for(ExtractConfig(backbone="torchvision:r2plus1d_18", image_size=56)).preprocessing()
    assert (small.size, small.resize) == (56, (64, 86))  # the published (H, W), scaled as the crop
    own = family_for(ExtractConfig(backbone="torchvision:r2plus1d_18", image_size=56, resize=60)).preprocessing()
    assert own.resize == 60  # --resize: the shorter side
    clips = {n: family_for(ExtractConfig(backbone=f"torchvision:{n}")).clip() for n in ("s3d", "mvit_v2_s", "swin3d_t")}
    assert {n: (c.length, c.frame_rate) for n, c in clips.items()} == {
        "s3d": (128, 15.0),
        "mvit_v2_s": (16, 7.5),
        "swin3d_t": (32, 15.0),
    }


def test_a_clip_batch_holds_as_many_frames_as_resnet50s_batch():
    family = family_for(ExtractConfig(backbone="torchvision:r2plus1d_18"))
    assert family.batch_size(torch.device("cuda")) == 128 and family.batch_size(torch.device("cpu")) == 8
    s3d = family_for(ExtractConfig(backbone="torchvision:s3d"))
    assert s3d.batch_size(torch.device("cuda")) == 4 and s3d.batch_size(torch.device("cpu")) == 1
    assert family_for(ExtractConfig(backbone="torchvision:s3d", gpu_batch=3)).batch_size(torch.device("cuda")) == 3


def test_a_size_the_model_cannot_take_is_an_option_error():
    with pytest.raises(ConfigError, match="mvit_v2_s cannot take clips of 16 frames of 64 px"):
        family_for(ExtractConfig(backbone="torchvision:mvit_v2_s", image_size=64))


def test_the_id_names_the_clip(cut_csv, tmp_path):
    """Another clip is another set: the clip is part of the sampling the id hashes."""
    base = dict(dataset="csv", data_dir=cut_csv, features_root=tmp_path, frames=2, weights="random")
    r2 = make_plan(ExtractConfig(**base, backbone="torchvision:r2plus1d_18"), download=False).identity
    r3 = make_plan(ExtractConfig(**base, backbone="torchvision:r3d_18"), download=False).identity
    assert r2.id.startswith("torchvision-r2plus1d_18-random-t2-112px-") and r2.sampling["clip"]["frames"] == 16
    assert r2.id.split("-")[-1] != r3.id.split("-")[-1]


def test_a_file_that_does_not_fit_is_named(tmp_path):
    wrong = write_weights(tmp_path / "r3d_18.pth", "mc3_18", seed=0)
    with pytest.raises(WeightsError, match="does not fit torchvision:r2plus1d_18"):
        family_for(ExtractConfig(backbone="torchvision:r2plus1d_18", weights=str(wrong))).resolve_weights()


def test_s3d_weights_without_their_classifier_fit(tmp_path):
    """S3D's classifier is a convolution (classifier.1): a file may lack it, as a Linear head may be absent."""
    state = torchvision.models.get_model("s3d", weights=None).state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("classifier.")}, tmp_path / "s3d.pth")
    spec = family_for(ExtractConfig(backbone="torchvision:s3d", weights=str(tmp_path / "s3d.pth"))).resolve_weights()
    assert spec.kind == "file"


def test_offline_and_uncached_says_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    weights_type = torchvision.models.get_model_weights("r2plus1d_18")

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights_type, "get_state_dict", offline, raising=False)
    with pytest.raises(WeightsError, match=rf"not cached at {tmp_path}/hub/checkpoints/r2plus1d_18-.*\.pth"):
        family_for(ExtractConfig(backbone="torchvision:r2plus1d_18", weights="pretrained")).resolve_weights()
