"""ResNet-50 (`--backbone resnet50`, the default): torchvision's resnet50 as a torchvision image
family, under the name every existing ResNet-50 set was made with.

It is `torchvision:resnet50` with the hooks that keep those sets' ids and bytes: the shorter
side scaled by 256/224 of the crop (torchvision publishes 232 for IMAGENET1K_V2), an identity
whose backbone is `resnet50` and whose normalisation is mean/std only, its published weights
named `imagenet` (torchvision's IMAGENET1K_V2, identity `torchvision:IMAGENET1K_V2`) and a
batch of 512 on CUDA (the H100 stopped gaining there, bench.md) and 32 on a CPU
(docs/allocator.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torchvision

from ..families import Family, register
from ..weights import Checkpoint, WeightsSpec, build_model
from .base import Preprocessing
from .torchvision_image import TorchvisionImage

IMAGENET_WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
RESIZE_RATIO = 256 / 224  # the shorter side over the crop, as its sets have always been scaled


def imagenet_cache_path() -> Path:
    """Where torchvision's weights API caches the ImageNet checkpoint (TORCH_HOME aware)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


@register(
    Family(
        name="resnet50",
        title="ResNet-50",
        form="resnet50",
        examples=("resnet50",),
        help="torchvision's ResNet-50, ImageNet weights",
        stores="the global average pool",
        weights="torch hub cache (`WEIGHTS=imagenet`)",
        preprocessing="shorter side to 256/224 of the crop (256 -> 224), ImageNet mean/std, bilinear",
        batch=(512, 32),
        dim=2048,
        gpu_check=True,
    )
)
class ResNet50(TorchvisionImage):
    """uint8 (B, S, S, 3) centre crops -> (B, 2048) pooled ResNet-50 features."""

    def model_name(self) -> str:
        return "resnet50"

    def check_name(self) -> None:
        """Always torchvision's resnet50."""

    def label(self) -> str:
        return "ResNet-50"

    def default_weights(self) -> torchvision.models.WeightsEnum:
        return IMAGENET_WEIGHTS

    def published(self) -> Preprocessing:
        pub = super().published()  # 224 px, ImageNet mean/std, bilinear
        return dataclasses.replace(pub, resize=round(pub.size * RESIZE_RATIO))

    def preprocessing(self) -> Preprocessing:
        """The torchvision family's, scaled as its sets always were: FFmpeg's one-pass YUV scale,
        not RGB first (rgb_first False keeps every ResNet-50 id and byte)."""
        return dataclasses.replace(super().preprocessing(), rgb_first=False)

    def normalisation(self, pre: Preprocessing) -> dict:
        """Mean/std only: its sets were identified before the interpolation and scaler were."""
        return {"mean": pre.mean, "std": pre.std}

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            name="ImageNet",
            file_hint="resnet50.pth",
            pretrained="imagenet",
            identity=f"torchvision:{IMAGENET_WEIGHTS.name}",
            cache_path=imagenet_cache_path,
            download=lambda: IMAGENET_WEIGHTS.get_state_dict(progress=True, check_hash=True),
            check=self.check_fits,
            what="ImageNet features",
        )

    def describe(self, weights: WeightsSpec | None, device: torch.device, precision: str) -> str:
        return f"on {device} ({precision})"


def resolve_weights(
    weights: str, seed: int = 0, fallback_to_random: bool = False, download_timeout: float = 20.0
) -> WeightsSpec:
    """WEIGHTS=: imagenet (torchvision's IMAGENET1K_V2, downloaded once into the torch hub cache), a
    path to a state dict, or random (seeded). With `fallback_to_random` (the embedded sample only),
    an unreachable download falls back to random weights, loudly; anywhere else it is an error."""
    from ..config import ExtractConfig

    return ResNet50(ExtractConfig(weights=weights, seed=seed)).resolve_weights(download_timeout, fallback_to_random)


def build_resnet50(spec: WeightsSpec) -> torch.nn.Module:
    """ResNet-50 trunk with fc replaced by Identity, in eval mode: (B, 3, H, W) -> (B, 2048)."""
    from ..config import ExtractConfig

    family = ResNet50(ExtractConfig())
    return family.features_of(build_model(spec, family.checkpoint(), family.builders())).eval()
