"""The torchvision image family: its stored features against torchvision's own model and
`weights.transforms()` on PIL frames, its names, and its weights policy. Nothing downloads."""

from __future__ import annotations

import pytest
import torch
import torchvision
from family_reference import assert_same_features, extract, stored_and_reference

from pipeline.errors import ConfigError
from stages.extract.config import ExtractConfig
from stages.extract.errors import WeightsError
from stages.extract.extractors import family_for

NAME = "convnext_tiny"  # classifier: LayerNorm2d, Flatten, Linear(768, 1000)


def write_weights(path, name: str, seed: int):
    torch.manual_seed(seed)
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
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


def test_a_torchvision_model_stores_the_input_of_its_final_linear(picture_csv, tmp_path):
    """Its own preprocessing (resize 236, crop 224, bilinear, ImageNet mean/std) by default."""
    weights = write_weights(tmp_path / f"{NAME}.pth", NAME, seed=1)
    set_dir = extract(picture_csv, tmp_path, f"torchvision:{NAME}", weights)
    assert set_dir.name.startswith(f"torchvision-{NAME}-sha256-t2-224px-")
    ours, theirs = stored_and_reference(
        set_dir, lambda vid: picture_csv.parent / vid, torchvision_reference(NAME, weights)
    )
    assert ours.shape[1] == 768
    assert_same_features(ours, theirs)


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
