"""The OpenCLIP family: its stored features against OpenCLIP's own model and preprocess on
frames decoded independently (family_reference.py), its names, and its weights policy. Seeded
random weights: nothing downloads."""

from __future__ import annotations

import importlib.util

import open_clip
import pytest
import torch
from family_reference import SCALED_AS_THE_LIBRARY, assert_agrees, extract, stored_and_reference
from safetensors.torch import save_file

from pipeline.errors import ConfigError
from stages.extract.config import ExtractConfig
from stages.extract.errors import WeightsError
from stages.extract.extractors import family_for

ARCH, TAG, SEED = "ViT-B-32", "openai", 5  # at its own 224 px: resize 224 bicubic, crop 224
FILE_SIZE = 128  # the weights-file test's crop (4 x 4 patches): the file is saved from a model built at it


def open_clip_reference():
    """What an OpenCLIP user writes: create_model_and_transforms with the same seed and options
    (the openai tag's QuickGELU), encode_image on the preprocess of PIL images."""
    torch.manual_seed(SEED)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None, force_quick_gelu=True)
    model.eval()
    return lambda pictures: model.encode_image(torch.stack([preprocess(p) for p in pictures])).numpy()


@pytest.fixture(scope="module")
def clip_agreement(cut_csv, tmp_path_factory):
    """(set dir, Agreement): stage one on the cut footage (T=4, seeded random weights, as the
    reference builds them) and OpenCLIP's encode_image of every row."""
    tmp = tmp_path_factory.mktemp("open_clip")
    set_dir = extract(cut_csv, tmp, f"open_clip:{ARCH}:{TAG}", "random", frames=4, seed=SEED)
    return set_dir, stored_and_reference(set_dir, lambda v: cut_csv.parent / v, open_clip_reference())


def test_an_open_clip_image_tower_stores_encode_image_on_an_independent_decode(clip_agreement):
    set_dir, agreement = clip_agreement
    assert set_dir.name.startswith(f"open_clip-{ARCH}-{TAG}-random-t4-224px-")
    assert agreement.ours.shape == (16, 512)
    assert_agrees(agreement, SCALED_AS_THE_LIBRARY)


def test_preprocessing_is_the_checkpoints():
    pre = family_for(ExtractConfig(backbone="open_clip:ViT-B-16:openai")).preprocessing()
    assert (pre.size, pre.resize, pre.interpolation, pre.mean[0]) == (224, 224, "bicubic", 0.48145466)


@pytest.mark.parametrize(
    "backbone, match",
    [
        ("open_clip:ViT-B-3:openai", "did you mean ViT-B-32"),
        ("open_clip:ViT-B-32:laion2b_s34b", "did you mean laion2b_s34b_b79k"),
        ("open_clip:ViT-B-32", "names are written"),
        pytest.param(
            "open_clip:roberta-ViT-B-32:laion2b_s12b_b32k",
            r"Hugging Face's roberta-base, which OpenCLIP builds with the transformers package: `.venv/bin/pip",
            marks=pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers"),
        ),
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


def test_a_whole_clip_state_dict_file_is_the_model_it_holds(cut_csv, tmp_path):
    """WEIGHTS=clip.safetensors (both towers, saved from an OpenCLIP model at SIZE): checked on the
    meta device, loaded, and the stored rows are that model's encode_image on OpenCLIP's preprocess."""
    torch.manual_seed(SEED + 1)
    model, _, preprocess = open_clip.create_model_and_transforms(
        ARCH, pretrained=None, force_quick_gelu=True, force_image_size=FILE_SIZE
    )
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    set_dir = extract(cut_csv, tmp_path, f"open_clip:{ARCH}:{TAG}", path, image_size=FILE_SIZE)
    assert set_dir.name.startswith(f"open_clip-{ARCH}-{TAG}-sha256-t2-{FILE_SIZE}px-")
    model.eval()
    reference = lambda pictures: model.encode_image(torch.stack([preprocess(p) for p in pictures])).numpy()
    assert_agrees(stored_and_reference(set_dir, lambda vid: cut_csv.parent / vid, reference), SCALED_AS_THE_LIBRARY)


# One checkpoint of each kind of tower: OpenAI's ViT and ModifiedResNet, timm image towers
# (ViTamin, MobileCLIP, EVA02), CoCa's with its text decoder, a ConvNeXt.
ARCHITECTURES = [
    "ViT-B-32:openai", "RN50:openai", "ViTamin-S:datacomp1b", "MobileCLIP2-S0:dfndr2b",
    "EVA02-B-16:merged2b_s8b_b131k", "coca_ViT-B-32:mscoco_finetuned_laion2b_s13b_b90k", "convnext_base:laion400m_s13b_b51k",
]  # fmt: skip


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_state_dict_of_any_architecture_is_checked_without_building_it(name, tmp_path):
    """The weights check builds the model on the meta device; OpenCLIP's create_model moves the
    model to its device at the end, which must be the meta device too. A tensor missing is named."""
    arch, tag = name.split(":")
    family = family_for(ExtractConfig(backbone=f"open_clip:{name}"))
    with torch.device("meta"):
        state = open_clip.create_model(
            arch, pretrained=None, force_quick_gelu=family.quick_gelu(), device="meta"
        ).state_dict()
    family.check_fits(state, tmp_path / "clip.pth")
    first = next(iter(state))
    with pytest.raises(WeightsError, match=rf"does not fit open_clip:{arch}:{tag}: 1 missing \(e\.g\. \['{first}'\]\)"):
        family.check_fits({k: v for k, v in state.items() if k != first}, tmp_path / "clip.pth")
