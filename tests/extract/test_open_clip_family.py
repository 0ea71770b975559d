"""The OpenCLIP family: its stored features against OpenCLIP's own model and preprocess on PIL
frames, its names, and its weights policy. Random weights, a small input size: nothing downloads."""

from __future__ import annotations

import open_clip
import pytest
import torch
from family_reference import assert_same_features, extract, stored_and_reference

from pipeline.errors import ConfigError
from stages.extract.config import ExtractConfig
from stages.extract.errors import WeightsError
from stages.extract.extractors import family_for

ARCH, TAG, SIZE, SEED = "ViT-B-32", "openai", 128, 5  # 4 x 4 patches; the 72 px frames are scaled up


def open_clip_reference():
    """What an OpenCLIP user writes: create_model_and_transforms with the same seed and options
    (the openai tag's QuickGELU), encode_image on the preprocess of PIL images."""
    torch.manual_seed(SEED)
    model, _, preprocess = open_clip.create_model_and_transforms(
        ARCH, pretrained=None, force_quick_gelu=True, force_image_size=SIZE
    )
    model.eval()
    return lambda pictures: model.encode_image(torch.stack([preprocess(p) for p in pictures])).numpy()


def test_an_open_clip_image_tower_stores_encode_image(picture_csv, tmp_path):
    set_dir = extract(picture_csv, tmp_path, f"open_clip:{ARCH}:{TAG}", "random", image_size=SIZE, seed=SEED)
    assert set_dir.name.startswith(f"open_clip-{ARCH}-{TAG}-random-t2-{SIZE}px-")
    ours, theirs = stored_and_reference(set_dir, lambda vid: picture_csv.parent / vid, open_clip_reference())
    assert ours.shape[1] == 512
    assert_same_features(ours, theirs)


def test_preprocessing_is_the_checkpoints():
    pre = family_for(ExtractConfig(backbone="open_clip:ViT-B-16:openai")).preprocessing()
    assert (pre.size, pre.resize, pre.interpolation, pre.mean[0]) == (224, 224, "bicubic", 0.48145466)


@pytest.mark.parametrize(
    "backbone, match",
    [
        ("open_clip:ViT-B-3:openai", "did you mean ViT-B-32"),
        ("open_clip:ViT-B-32:laion2b_s34b", "did you mean laion2b_s34b_b79k"),
        ("open_clip:ViT-B-32", "names are written"),
    ],
)
def test_a_wrong_name_is_an_option_error(backbone, match):
    with pytest.raises(ConfigError, match=match):
        family_for(ExtractConfig(backbone=backbone))


def test_offline_and_uncached_says_where_the_file_goes(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    family = family_for(ExtractConfig(backbone="open_clip:ViT-B-32:laion2b_s34b_b79k", weights="pretrained"))
    with pytest.raises(WeightsError, match=r"not cached at .*models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"):
        family.resolve_weights()
