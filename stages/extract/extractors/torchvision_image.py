"""torchvision image classification models (`--backbone torchvision:NAME`, NAME as
`torchvision.models.get_model` takes it): per frame the input of the model's final Linear.

Preprocessing is what the architecture's default weights publish (`weights.transforms()`:
resize of the shorter side, centre crop, mean/std, interpolation). Published weights come
from torch hub's cache and are loaded by torchvision itself (with the options they need);
a local file must fit the model, its final Linear excepted (it is replaced).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
import torchvision

from pipeline.errors import ConfigError

from ..families import Family, register
from ..weights import Builders, Checkpoint, check_shapes
from .base import Preprocessing
from .hub import url_cached
from .image_model import ImageModel, unknown_name


def image_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def final_linear(model: torch.nn.Module) -> tuple[str, torch.nn.Linear]:
    """The last Linear of the model (its classifier): (its dotted name, the layer)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ConfigError(f"--backbone: {type(model).__name__} has no Linear classifier whose input could be stored")
    return linears[-1]


def without_classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The model with its final Linear replaced by Identity: it returns that Linear's input."""
    name, _ = final_linear(model)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, torch.nn.Identity())
    return model


def size_kwargs(name: str, size: int | None) -> dict:
    """image_size for a model built for one input size (the ViTs) at another; {} for the rest."""
    if size is None:
        return {}
    try:
        with torch.device("meta"):
            torchvision.models.get_model(name, weights=None, image_size=size)
    except TypeError:  # a convolutional net takes any size as it is
        return {}
    return {"image_size": size}


@functools.lru_cache(maxsize=8)
def skeleton(name: str, size: int | None) -> Any:
    """The model on the meta device: its shapes and classifier, no memory."""
    with torch.device("meta"):
        return torchvision.models.get_model(name, weights=None, **size_kwargs(name, size))


@register(
    Family(
        name="torchvision",
        title="torchvision",
        form="torchvision:NAME",
        examples=("torchvision:convnext_tiny", "torchvision:vit_b_16"),
        help="an image classifier of torchvision.models.list_models()",
        stores="the input of the final `Linear`",
        weights="torch hub cache",
        preprocessing="its default weights' `transforms()`",
        batch=(256, 32),
    )
)
class TorchvisionImage(ImageModel):
    library = "torchvision"

    def check_name(self) -> None:
        if self.name not in image_models():
            known = image_models() + torchvision.models.list_models(module=torchvision.models.video)
            raise unknown_name("torchvision", self.name, known, "torchvision:convnext_tiny")

    def default_weights(self) -> Any:
        return torchvision.models.get_model_weights(self.name).DEFAULT

    def built_size(self) -> int | None:
        own = self.published().size
        return self.cfg.image_size if self.cfg.image_size not in (None, own) else None

    def size_kwargs(self) -> dict:
        """What the builder needs to build the model at --size (a ViT's image_size)."""
        return size_kwargs(self.name, self.built_size())

    def skeleton(self) -> Any:
        return skeleton(self.name, self.built_size())

    def head(self, model: torch.nn.Module) -> str:
        """The state-dict prefix of the classifier the stored vector is the input of."""
        return final_linear(model)[0] + "."

    def trunk(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model without that classifier: it returns what the classifier reads."""
        return without_classifier(model)

    def published(self) -> Preprocessing:
        t = self.default_weights().transforms()
        return Preprocessing(
            t.crop_size[0], t.resize_size[0], "center", tuple(t.mean), tuple(t.std), t.interpolation.value
        )

    def feature_dim(self) -> int:
        return final_linear(self.skeleton())[1].in_features

    def checkpoint(self) -> Checkpoint:
        weights = self.default_weights()
        return Checkpoint(
            name=f"torchvision {weights}",
            file_hint=f"{self.name}.pth",
            pretrained="pretrained",
            identity=f"torchvision:{weights}",
            cache_path=lambda: url_cached(weights.url),
            download=lambda: weights.get_state_dict(progress=True, check_hash=True),
            check=self.check_fits,
            what=f"{weights} features",
        )

    def check_fits(self, state: dict, path: Path) -> None:
        """Every tensor of the model as built, with its shape; the classifier's may differ or be absent."""
        model = self.skeleton()
        head = self.head(model)
        expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith(head)}
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        check_shapes(expected, state, path, "--weights (WEIGHTS=)", self.label())

    def label(self) -> str:
        """The model in messages."""
        return f"torchvision:{self.name}"

    def builders(self) -> Builders:
        kw = self.size_kwargs()

        def random() -> torch.nn.Module:
            return torchvision.models.get_model(self.name, weights=None, **kw)

        def from_state(state: dict) -> torch.nn.Module:
            model = random()
            head = self.head(model)
            model.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)}, strict=False)
            return model

        def published(path: Path) -> torch.nn.Module:
            # torchvision's builder: the file is in its cache, and it sets the options the weights need
            return torchvision.models.get_model(self.name, weights=self.default_weights(), **kw)

        return Builders(random, from_state, published)

    def features_of(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.trunk(model)
