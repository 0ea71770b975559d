"""The torchvision image family: its stored features against torchvision's own model and
`weights.transforms()` on frames decoded independently (family_reference.py), its names, and its weights policy. Nothing downloads."""

from __future__ import annotations

import pytest
import torch
import torchvision
from family_reference import SCALED_AS_THE_LIBRARY, assert_agrees, extract, stored_and_reference

from pipeline.errors import ConfigError
from stages.extract.config import ExtractConfig
from stages.extract.errors import WeightsError
from stages.extract.extractors import family_for

NAME = "convnext_tiny"  # classifier: LayerNorm2d, Flatten, Linear(768, 1000)


def write_weights(path, name: str, seed: int):
    """A randomly initialised model's weights; ConvNeXt's LayerScale set to 1 (initialised at
    1e-6, it would leave the blocks' output out of the features, as trained weights do not)."""
    torch.manual_seed(seed)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    torch.save({k: torch.ones_like(v) if k.endswith(".layer_scale") else v for k, v in state.items()}, path)
    return path


def torchvision_reference(name: str, weights_path):
    """What a torchvision user writes: the model with those weights, its last classifier layer
    dropped by hand, and the default weights' transforms on PIL images."""
    model = torchvision.models.get_model(name, weights=None)
    model.load_state_dict(torch.load(weights_path, weights_only=True))
    model.classifier[-1] = torch.nn.Identity()
    model.eval()
    transform = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    return lambda pictures: model(torch.stack([transform(p) for p in pictures])).numpy()


@pytest.fixture(scope="module")
def convnext(cut_csv, tmp_path_factory):
    """(set dir, Agreement): stage one on the cut footage (T=4) and torchvision's forward of every row."""
    tmp = tmp_path_factory.mktemp("torchvision")
    weights = write_weights(tmp / f"{NAME}.pth", NAME, seed=1)
    set_dir = extract(cut_csv, tmp, f"torchvision:{NAME}", weights, frames=4)
    return set_dir, stored_and_reference(set_dir, lambda v: cut_csv.parent / v, torchvision_reference(NAME, weights))


def test_a_torchvision_model_stores_what_torchvision_computes_on_an_independent_decode(convnext):
    """The input of its final Linear, with its own preprocessing (resize 236, crop 224, bilinear,
    ImageNet mean/std), against ffmpeg's decode of each row's frame: at the bar in both
    containers and every size, portrait included."""
    set_dir, agreement = convnext
    assert set_dir.name.startswith(f"torchvision-{NAME}-sha256-t4-224px-")
    assert agreement.ours.shape == (16, 768)
    assert_agrees(agreement, SCALED_AS_THE_LIBRARY)


def test_preprocessing_is_the_weights_transforms():
    pre = family_for(ExtractConfig(backbone="torchvision:convnext_tiny")).preprocessing()
    assert (pre.size, pre.resize, pre.interpolation) == (224, 236, "bilinear")
    small = family_for(ExtractConfig(backbone="torchvision:convnext_tiny", image_size=112)).preprocessing()
    assert (small.size, small.resize) == (112, 118)
    assert family_for(ExtractConfig(backbone="torchvision:convnext_tiny")).dim == 768


@pytest.mark.parametrize(
    "backbone, match",
    [
        ("torchvision:convnext_tin", "did you mean convnext_tiny"),
        ("torchvision:r2plus1d", "did you mean r2plus1d_18"),  # the video models are torchvision's names too
    ],
)
def test_a_wrong_name_is_an_option_error(backbone, match):
    with pytest.raises(ConfigError, match=match):
        family_for(ExtractConfig(backbone=backbone))


def test_a_file_that_does_not_fit_is_named(tmp_path):
    wrong = write_weights(tmp_path / "resnet18.pth", "resnet18", seed=0)
    with pytest.raises(WeightsError, match=f"does not fit torchvision:{NAME}"):
        family_for(ExtractConfig(backbone=f"torchvision:{NAME}", weights=str(wrong))).resolve_weights()


def test_offline_and_uncached_says_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    weights_type = torchvision.models.get_model_weights(NAME)

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(weights_type, "get_state_dict", offline, raising=False)
    with pytest.raises(WeightsError, match=rf"not cached at {tmp_path}/hub/checkpoints/convnext_tiny-.*\.pth"):
        family_for(ExtractConfig(backbone=f"torchvision:{NAME}", weights="pretrained")).resolve_weights()
