"""OpenCLIP image towers (`--backbone open_clip:ARCH:PRETRAINED`, as `open_clip.create_model`
and `list_pretrained()` name them): per frame `encode_image(x)`, not normalised.

Preprocessing is OpenCLIP's for that checkpoint: the tower's input size, the pretrained
config's mean/std and interpolation, the shorter side resized to the size and centre
cropped (resize_mode 'shortest'). Published weights come from the Hugging Face hub's
cache (or OpenCLIP's URL); a local file is a whole CLIP state dict, checked against the
model's shapes. The pretrained tag also says how the model is built (QuickGELU).
"""

from __future__ import annotations

import functools
import importlib.util
import posixpath
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import ConfigError

from ..errors import WeightsError
from ..families import Family, register
from ..weights import Builders, Checkpoint, WeightsSpec, build_model, check_shapes
from .base import Preprocessing
from .hub import hf_cached, hf_download, url_cached, url_download
from .image_model import ImageModel, unknown_name


class ImageTower(torch.nn.Module):
    """A CLIP model's image embedding: (B, 3, S, S) -> (B, embed_dim), not normalised."""

    def __init__(self, model: Any):  # an open_clip model: encode_image
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x, normalize=False)


@functools.lru_cache(maxsize=8)
def skeleton(arch: str, quick_gelu: bool, size: int | None) -> Any:
    """The whole CLIP model on the meta device: shapes only. create_model ends by moving the model
    to its `device` argument (the CPU by default), which a meta tensor cannot be copied to."""
    import open_clip

    with torch.device("meta"):
        return open_clip.create_model(
            arch, pretrained=None, force_quick_gelu=quick_gelu, force_image_size=size, device="meta"
        )


@register(
    Family(
        name="open_clip",
        title="OpenCLIP",
        form="open_clip:ARCH:PRETRAINED",
        examples=("open_clip:ViT-B-16:openai", "open_clip:ViT-B-32:laion2b_s34b_b79k"),
        help="an OpenCLIP image tower, as open_clip.list_pretrained() names it",
        stores="`encode_image(x)`, not normalised (the image tower only)",
        weights="Hugging Face hub cache",
        preprocessing="the checkpoint's preprocess config (tower size, mean/std, interpolation; `shortest` resize)",
        batch=(256, 32),
        gpu_check=True,
    )
)
class OpenClipImage(ImageModel):
    library = "open_clip"

    @property
    def arch(self) -> str:
        return self.name.split(":")[0]

    @property
    def tag(self) -> str:
        return self.name.split(":")[1]

    def check_name(self) -> None:
        import open_clip

        if self.arch not in open_clip.list_models():
            raise unknown_name("open_clip", self.arch, open_clip.list_models(), "open_clip:ViT-B-16:openai")
        tags = open_clip.list_pretrained_tags_by_model(self.arch)
        if self.tag not in tags:
            raise unknown_name(f"open_clip {self.arch}", self.tag, tags, f"open_clip:{self.arch}:{(tags or ['?'])[0]}")
        hf_text = open_clip.get_model_config(self.arch).get("text_cfg", {}).get("hf_model_name")
        if hf_text and importlib.util.find_spec("transformers") is None:
            raise ConfigError(
                f"--backbone open_clip:{self.name}: its text tower is Hugging Face's {hf_text}, which OpenCLIP builds "
                "with the transformers package: `.venv/bin/pip install transformers`, or choose an architecture "
                "whose towers are OpenCLIP's own (open_clip:ViT-B-16:openai)"
            )

    def pretrained_cfg(self) -> dict:
        import open_clip

        return dict(open_clip.get_pretrained_cfg(self.arch, self.tag))

    def quick_gelu(self) -> bool:
        return bool(self.pretrained_cfg().get("quick_gelu", False))

    def built_size(self) -> int | None:
        own = self.published().size
        return self.cfg.image_size if self.cfg.image_size not in (None, own) else None

    def published(self) -> Preprocessing:
        import open_clip
        from open_clip.transform import PreprocessCfg

        size = open_clip.get_model_config(self.arch)["vision_cfg"]["image_size"]
        default, cfg = PreprocessCfg(), self.pretrained_cfg()
        if cfg.get("resize_mode", "shortest") != "shortest":
            raise ConfigError(
                f"--backbone open_clip:{self.name}: resize mode {cfg['resize_mode']!r}; only centre crops are made"
            )
        size = size if isinstance(size, int) else size[0]
        mean, std = tuple(cfg.get("mean", default.mean)), tuple(cfg.get("std", default.std))
        return Preprocessing(size, size, "center", mean, std, cfg.get("interpolation", default.interpolation))

    def feature_dim(self) -> int:
        import open_clip

        return int(open_clip.get_model_config(self.arch)["embed_dim"])

    def checkpoint(self) -> Checkpoint:
        import open_clip.constants as oc

        cfg = self.pretrained_cfg()
        hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
        repo, filename = posixpath.split(hub)  # 'org/model/' (its default files) or 'org/model/file'
        files = (filename,) if filename else (oc.HF_SAFE_WEIGHTS_NAME, oc.HF_WEIGHTS_NAME)
        return Checkpoint(
            name=f"OpenCLIP {self.name}",
            file_hint=files[-1],
            pretrained="pretrained",
            identity=f"open_clip:{self.arch}:{self.tag}",
            cache_path=lambda: hf_cached(repo, files) if hub else url_cached(url),
            download=lambda: hf_download(repo, files) if hub else url_download(url),
            check=self.check_fits,
            what=f"OpenCLIP {self.name} features",
        )

    def check_fits(self, state: dict, path: Path) -> None:
        model = skeleton(self.arch, self.quick_gelu(), self.built_size())
        expected = {k: v.shape for k, v in model.state_dict().items()}
        check_shapes(expected, state, path, "--weights (WEIGHTS=)", f"open_clip:{self.name}")

    def builders(self) -> Builders:
        import open_clip

        kw = dict(force_quick_gelu=self.quick_gelu(), force_image_size=self.built_size())

        def random() -> Any:
            return open_clip.create_model(self.arch, pretrained=None, **kw)

        def from_state(state: dict) -> Any:  # a whole CLIP state dict: both towers
            model = random()
            model.load_state_dict(state)
            return model

        def published(path: Path) -> Any:  # OpenCLIP loads its own file (a local path as `pretrained`)
            return open_clip.create_model(self.arch, pretrained=str(path), **kw)

        return Builders(random, from_state, published)

    def features_of(self, model: torch.nn.Module) -> torch.nn.Module:
        return ImageTower(model)

    def build_clip(self, weights: WeightsSpec) -> Any:
        """The whole CLIP model (both towers) on the CPU, in eval mode: the image tower stage one
        runs, and the text tower `make zeroshot` names the classes with. `random` weights seed
        both towers as one model, so the same seed gives the same pair."""
        return build_model(weights, self.checkpoint(), self.builders()).eval()

    def tokenizer(self) -> Any:
        """OpenCLIP's tokenizer of the architecture: list[str] -> (n, context) token ids. Most ship
        their vocabulary inside open_clip; a Hugging Face tokenizer comes from the hub's cache."""
        import open_clip

        try:
            return open_clip.get_tokenizer(self.arch)
        except OSError as e:  # a hub tokenizer, offline and not cached
            raise WeightsError(
                f"the text tokenizer of open_clip:{self.arch} is not cached and could not be downloaded "
                f"({type(e).__name__}: {e}); run once where the Hugging Face hub is reachable"
            ) from None
