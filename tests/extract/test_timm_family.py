"""The timm family: its stored features against timm's own model and preprocessing on frames
decoded independently (family_reference.py), its names, and its weights policy. Small models
and written weights: nothing downloads."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from family_reference import SCALED_AS_THE_LIBRARY, assert_agrees, extract, stored_and_reference
from safetensors.torch import save_file

from pipeline.errors import ConfigError
from stages.extract.config import ExtractConfig
from stages.extract.errors import WeightsError
from stages.extract.extractors import family_for


def write_weights(path, name: str, seed: int, **kw):
    """A randomly initialised timm model's weights as .safetensors; LayerScale gammas set to 1
    (initialised near zero, they would leave a random ViT blind to its input)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kw)
    state = {
        k: (torch.ones_like(v) if k.endswith((".ls1.gamma", ".ls2.gamma")) else v)
        for k, v in model.state_dict().items()
    }
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def timm_reference(name: str, weights_path, **kw):
    """timm's own model with those weights and its own eval transform on PIL images
    (resolve_model_data_config + create_transform; at img_size where the model is built at
    another size than its own, as a timm user says it)."""
    from safetensors.torch import load_file

    model = timm.create_model(name, pretrained=False, **kw).eval()
    model.load_state_dict(load_file(str(weights_path)))
    size = {"input_size": (3, kw["img_size"], kw["img_size"])} if "img_size" in kw else {}
    config = timm.data.resolve_model_data_config(model, args=size)
    transform = timm.data.create_transform(**config, is_training=False)

    def forward(pictures):
        x = torch.stack([transform(p) for p in pictures])
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()

    return forward


# (timm name, stage one's --size, what it is): test_vit at its own 160 px with crop_pct 0.95
# (resize 168); the ViT-S/14 DINOv2 architecture built at 112 px (its own is 518).
VITS = {"test_vit": (None, 64), "vit_small_patch14_dinov2.lvd142m": (112, 384)}


@pytest.fixture(scope="module", params=list(VITS))
def vit_agreement(request, cut_csv, tmp_path_factory):
    """(set dir, Agreement): stage one on the cut footage (T=4) and timm's own forward of every row."""
    name, (size, _) = request.param, VITS[request.param]
    tmp = tmp_path_factory.mktemp("timm")
    kw = {"img_size": size} if size else {}
    weights = write_weights(tmp / "vit.safetensors", name, seed=1, **kw)
    set_dir = extract(cut_csv, tmp, f"timm:{name}", weights, frames=4, **({"image_size": size} if size else {}))
    return (
        name,
        set_dir,
        stored_and_reference(set_dir, lambda v: cut_csv.parent / v, timm_reference(name, weights, **kw)),
    )


def test_a_timm_vit_stores_what_timm_computes_on_an_independent_decode(vit_agreement):
    """Every row against ffmpeg's decode of its frame, timm's transform and model: at the bar
    in both containers and every size, portrait included; the id names backbone, size, weights."""
    name, set_dir, agreement = vit_agreement
    size, dim = VITS[name]
    assert set_dir.name.startswith(f"timm-{name}-sha256-t4-{size or 160}px-")
    assert agreement.ours.shape == (16, dim)
    assert_agrees(agreement, SCALED_AS_THE_LIBRARY)


def test_preprocessing_is_timms_data_config_and_size_overrides_it():
    own = family_for(ExtractConfig(backbone="timm:vit_small_patch14_dinov2.lvd142m")).preprocessing()
    assert (own.size, own.resize, own.interpolation, own.mean) == (518, 518, "bicubic", (0.485, 0.456, 0.406))
    vit = family_for(ExtractConfig(backbone="timm:test_vit", image_size=80)).preprocessing()
    assert (vit.size, vit.resize, vit.mean) == (80, 84, (0.5, 0.5, 0.5))  # crop_pct 0.95 kept


@pytest.mark.parametrize(
    "backbone, match",
    [
        ("timm:vit_smal_patch14_dinov2", "did you mean vit_small_patch14_dinov2"),
        ("timm:vit_small_patch14_dinov2.lvd14", "did you mean vit_small_patch14_dinov2.lvd142m"),
        ("timm", "names are written"),
        ("keras:resnet50", "names are written"),
    ],
)
def test_a_wrong_name_is_an_option_error_with_close_matches(backbone, match):
    with pytest.raises(ConfigError, match=match):
        family_for(ExtractConfig(backbone=backbone))


def test_a_file_that_does_not_fit_is_named_before_any_work(tmp_path):
    wrong = write_weights(tmp_path / "vit2.safetensors", "test_vit2", seed=0)
    with pytest.raises(WeightsError, match="does not fit timm:test_vit"):
        family_for(ExtractConfig(backbone="timm:test_vit", weights=str(wrong))).resolve_weights()


def test_offline_and_uncached_says_where_the_file_goes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(
        WeightsError, match=r"not cached at .*models--timm--test_vit.r160_in1k.*WEIGHTS=/path/to/model.safetensors"
    ):
        family_for(ExtractConfig(backbone="timm:test_vit", weights="pretrained")).resolve_weights()


def test_random_weights_are_seeded_and_named():
    family = family_for(ExtractConfig(backbone="timm:test_vit", weights="random", seed=3))
    spec = family.resolve_weights()
    assert spec.identity == "random:seed3"
    x = torch.randint(0, 256, (2, 160, 160, 3), dtype=torch.uint8)
    a, b = (family.load(spec, torch.device("cpu"), torch.float32) for _ in range(2))
    with torch.no_grad():
        np.testing.assert_array_equal(a.model(a.prepare(x)).numpy(), b.model(b.prepare(x)).numpy())
