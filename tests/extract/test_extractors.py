"""The extractor interface: every family behind it, and the feature-set ids it must keep.

The ids below are the ones the code before the interface gave for these settings on the
generated sound tree (the `sound_tree` fixture): a family moved onto the interface, or a
change to it, must not split an existing feature set in two.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.extract.config import ExtractConfig
from stages.extract.extractors import CLIPS, FRAMES, SOUND, family_for
from stages.extract.families import families
from stages.extract.logmel import summarize
from stages.extract.model_thread import ModelThread
from stages.extract.plan import make_plan

PINNED_IDS = [
    (dict(weights="random", precision="fp32"), "resnet50-random-t4-64px-8a5410ba3b8f"),
    (dict(weights="random", precision="fp32", fps=4.0), "resnet50-random-t4-64px-4fps-05e6ccb463b2"),
    (dict(weights="random", precision="fp32", decoder="ffmpeg-cli", resize=80), "resnet50-random-t4-64px-2804a36aa2d7"),
    (dict(modality="audio"), "audio-logmel-t4-605fa6159c2f"),
    (dict(modality="audio", audio_features="vggish", audio_weights="random"), "audio-vggish-random-t4-f24d00bc64d8"),
]


@pytest.mark.parametrize("settings, expected", PINNED_IDS, ids=[i for _, i in PINNED_IDS])
def test_feature_set_ids_are_the_ones_sets_were_made_with(sound_tree, tmp_path, settings, expected):
    tree, _ = sound_tree
    base = dict(dataset="ucf101", data_dir=tree, features_root=tmp_path, frames=4, device="cpu", image_size=64)
    assert make_plan(ExtractConfig(**(base | settings)), download=False).identity.id == expected


def test_each_option_value_names_one_family():
    assert family_for(ExtractConfig()).family == "resnet50"
    assert all(family_for(ExtractConfig(backbone=b)).family == f for f, b in EXAMPLE_BACKBONES.items())
    assert family_for(ExtractConfig(modality="audio")).family == "logmel"
    assert family_for(ExtractConfig(modality="audio", audio_features="vggish")).family == "vggish"
    assert {f.extractor.decodes for f in families()} == {FRAMES, CLIPS, SOUND}


# A small model of each family that names its models after a library's (--backbone LIBRARY:NAME).
EXAMPLE_BACKBONES = {
    "timm": "timm:test_vit",
    "torchvision": "torchvision:resnet18",
    "torchvision-video": "torchvision:r2plus1d_18",  # torchvision's video models are the clip family's
    "open_clip": "open_clip:ViT-B-32:openai",
}


FAMILIES = {f.name: f.extractor for f in families()}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_turns_a_batch_of_its_items_into_rows_of_its_width(name):
    """What the runner relies on: (B, *item_shape) items of item_dtype in, (B, dim) float16 out."""
    backbone = EXAMPLE_BACKBONES.get(name, "resnet50")
    cfg = ExtractConfig(
        image_size=32, backbone=backbone, modality="rgb" if FAMILIES[name].modality == "rgb" else "audio"
    )
    family = FAMILIES[name](cfg)
    weights = family.resolve_weights() if name == "logmel" else FAMILIES[name](cfg.replace(
        weights="random", audio_weights="random")).resolve_weights()  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    if family.item_dtype == torch.uint8:
        items = torch.randint(0, 256, (3, *family.item_shape()), dtype=torch.uint8, generator=gen)
    else:
        items = torch.randn((3, *family.item_shape()), generator=gen)
    rows = ModelThread(family, weights, "cpu", "fp32").extract(items)
    assert rows.shape == (3, family.dim) and rows.dtype == np.float16 and np.isfinite(rows).all()
    if name == "logmel":
        np.testing.assert_array_equal(rows, summarize(items).to(torch.float16).numpy())
