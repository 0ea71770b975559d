"""timm image models (`--backbone timm:NAME`, NAME as timm writes it, pretrained tag included):
per frame `forward_head(forward_features(x), pre_logits=True)`.

Preprocessing is timm's resolved data config for the model (input size, crop_pct,
interpolation, mean/std). Published weights come from the Hugging Face hub's cache (or
torch hub's, for the few published at a URL) and are loaded by timm itself, which adapts
them (e.g. position embeddings to --size); a local file must fit the model as built.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import ConfigError

from ..families import Family, register
from ..weights import Builders, Checkpoint, check_shapes
from .base import Preprocessing
from .hub import hf_cached, hf_download, url_cached, url_download
from .image_model import ImageModel, unknown_name

HF_FILES = ("model.safetensors", "pytorch_model.bin")


class PreLogits(torch.nn.Module):
    """A timm model's pooled, pre-classifier vector: (B, 3, S, S) -> (B, D)."""

    def __init__(self, model: Any):  # a timm model: forward_features, forward_head
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def size_kwargs(name: str, size: int | None) -> dict:
    """img_size for a model built at another size than its own (ViTs); {} where it has no such argument."""
    import timm

    if size is None:
        return {}
    try:
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, img_size=size)
    except TypeError:  # a convolutional net takes any size as it is
        return {}
    return {"img_size": size}


@functools.lru_cache(maxsize=8)
def skeleton(name: str, size: int | None) -> Any:
    """The model on the meta device: shapes, its data config and D, no memory."""
    import timm

    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, **size_kwargs(name, size))


@register(
    Family(
        name="timm",
        title="timm",
        form="timm:NAME[.TAG]",
        examples=("timm:vit_small_patch14_dinov2.lvd142m", "timm:convnext_tiny.fb_in22k"),
        help="any timm model, its pretrained tag included, as timm writes it",
        stores="`forward_head(forward_features(x), pre_logits=True)`",
        weights="Hugging Face hub cache",
        preprocessing="timm's resolved data config (input size, `crop_pct`, mean/std, interpolation)",
        batch=(256, 32),
        check=lambda value: re.fullmatch(r"timm:\w+(\.\w+)?", value) is not None,  # timm's names and tags
    )
)
class TimmImage(ImageModel):
    library = "timm"

    def check_name(self) -> None:
        import timm

        arch, _, tag = self.name.partition(".")
        if not timm.is_model(arch) or (tag and self.name not in timm.list_pretrained(f"{arch}.*")):
            known = timm.list_pretrained() if tag else timm.list_models()
            raise unknown_name("timm", self.name, known, "timm:vit_small_patch14_dinov2.lvd142m")

    def built_size(self) -> int | None:
        """The input size the model is built at: its own unless --size says another."""
        own = self.published().size
        return self.cfg.image_size if self.cfg.image_size not in (None, own) else None

    def published(self) -> Preprocessing:
        import timm

        config = timm.data.resolve_model_data_config(skeleton(self.name, None))
        if config.get("crop_mode", "center") != "center":
            raise ConfigError(
                f"--backbone timm:{self.name}: crop mode {config['crop_mode']!r}; only centre crops are made"
            )
        size = config["input_size"][-1]
        resize = int(size / config["crop_pct"])  # timm's eval transform: floor(size / crop_pct)
        return Preprocessing(
            size, resize, "center", tuple(config["mean"]), tuple(config["std"]), config["interpolation"]
        )

    def feature_dim(self) -> int:
        size = self.preprocessing().size
        model = skeleton(self.name, self.built_size())
        return PreLogits(model)(torch.empty(1, 3, size, size, device="meta")).shape[-1]

    def pretrained_cfg(self) -> dict:
        return dict(skeleton(self.name, None).pretrained_cfg)

    def checkpoint(self) -> Checkpoint:
        cfg = self.pretrained_cfg()
        repo, url = cfg.get("hf_hub_id"), cfg.get("url")

        def cache_path() -> Path:
            if repo:
                return hf_cached(repo, HF_FILES)
            if url:
                return url_cached(url)
            raise ConfigError(
                f"--backbone timm:{self.name}: timm publishes no weights for it; say WEIGHTS=random or a file"
            )

        def download() -> None:
            if repo:
                hf_download(repo, HF_FILES)
            elif url:
                url_download(url)

        return Checkpoint(
            name=f"timm {self.name}",
            file_hint="model.safetensors",
            pretrained="pretrained",
            identity=f"timm:{repo or url}",
            cache_path=cache_path,
            download=download,
            check=self.check_fits,
            what=f"timm {self.name} features",
        )

    def check_fits(self, state: dict, path: Path) -> None:
        """Every tensor of the model as built, with its shape; the classifier's may be absent."""
        model = skeleton(self.name, self.built_size())
        classifier = model.pretrained_cfg.get("classifier") or "head"
        heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        optional = tuple(k for k in expected if k.startswith(tuple(f"{h}." for h in heads)))
        check_shapes(expected, state, path, "--weights (WEIGHTS=)", f"timm:{self.name}", optional)

    def builders(self) -> Builders:
        import timm

        kw = size_kwargs(self.name, self.built_size())

        def random() -> torch.nn.Module:
            return timm.create_model(self.name, pretrained=False, **kw)

        def from_state(state: dict) -> torch.nn.Module:
            model = random()
            model.load_state_dict(state, strict=False)
            return model

        def published(path: Path) -> torch.nn.Module:
            # timm loads its own published file, adapting it to the size it is built at
            return timm.create_model(self.name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kw)

        return Builders(random, from_state, published)

    def features_of(self, model: torch.nn.Module) -> torch.nn.Module:
        return PreLogits(model)
