"""torchvision video classification models (`--backbone torchvision:NAME`, NAME one of
`torchvision.models.video`'s: r2plus1d_18, r3d_18, mc3_18, s3d, mvit_v1_b, mvit_v2_s,
swin3d_t/s/b): per sampled step the clip of K frames around it, per clip the vector the
model's classifier reads.

A clip is what the weights were trained on: K frames (`clip_len`) at their frame rate,
as torchvision documents each checkpoint ("frame_rate=15 ... clip_len=16"), so in a video
of F frames/s a clip takes every round(F / rate)-th frame (at least every one), centred on
the step's frame and clamped to the video (decode/common.py's clip_indices). The vector is the
input of the final Linear (the pooled features; MViT's class token), or, for S3D, whose
classifier is a 1x1x1 convolution averaged over time and space, the average of the
features that convolution reads (the same average, before a linear map).

Preprocessing is the weights' `transforms()` (VideoClassification): frames scaled to its
resize_size, the shorter side (256) or exactly (H, W) (R(2+1)D's 128 x 171), centre
cropped, mean/std; the decoder scales and crops, the device normalises. Weights follow
torchvision_image.py's policy: the same cache, the same shape check (the classifier may
differ or be absent).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch
import torchvision

from pipeline.errors import ConfigError

from ..config import FeatureIdentity
from ..decode.common import ClipSpec
from ..weights import WeightsSpec
from .base import CLIPS, Loaded, Preprocessing, picture_model, required
from .torchvision_image import TorchvisionImage, final_linear, without_classifier

# Frames per step a batch may hold, in 224 px frames: ResNet-50's batch on CUDA and on a CPU.
CUDA_FRAMES, CPU_FRAMES = 512, 32


def video_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models.video)


def trained_clip(weights: Any) -> ClipSpec:
    """K and the frame rate torchvision documents for a checkpoint (its meta's `_docs`)."""
    said = dict(re.findall(r"\b(clip_len|frame_rate)=([\d.]+)", weights.meta.get("_docs", "")))
    if set(said) != {"clip_len", "frame_rate"}:
        raise ConfigError(
            f"--backbone: torchvision does not say the clip length and frame rate {weights} were trained on"
        )
    return ClipSpec(int(said["clip_len"]), float(said["frame_rate"]))


class S3DFeatures(torch.nn.Module):
    """S3D up to its classifier, averaged as its classifier's output is: (B, 3, K, S, S) -> (B, 1024)."""

    def __init__(self, model: torchvision.models.video.S3D):
        super().__init__()
        self.features, self.avgpool = model.features, model.avgpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.features(x)).mean(dim=(2, 3, 4))


def head_prefix(model: torch.nn.Module) -> str:
    """The state-dict prefix of the classifier the stored vector is the input of."""
    if isinstance(model, torchvision.models.video.S3D):
        return "classifier."
    return final_linear(model)[0] + "."


def trunk(model: torch.nn.Module) -> torch.nn.Module:
    """The model without its classifier: (B, 3, K, S, S) -> (B, D)."""
    if isinstance(model, torchvision.models.video.S3D):
        return S3DFeatures(model)
    return without_classifier(model)


@functools.lru_cache(maxsize=8)
def skeleton(name: str) -> Any:
    """The model on the meta device: its shapes and classifier, no memory. torchvision's video
    builders take no input size: convolutions and Swin's windows take any, MViT's position
    embeddings are built for 224 px (clip_width refuses another --size)."""
    with torch.device("meta"):
        return torchvision.models.get_model(name, weights=None)


@functools.lru_cache(maxsize=8)
def clip_width(name: str, size: int, length: int) -> int:
    """D, from a forward on the meta device (no memory, no arithmetic): a clip the model cannot
    take (too small for its pooling, another size than its position embeddings') is an option error here."""
    with torch.device("meta"):  # not skeleton(): trunk() takes the classifier off the model it is given
        model = trunk(torchvision.models.get_model(name, weights=None))
    try:
        return model(torch.empty(1, 3, length, size, size, device="meta")).shape[-1]
    except RuntimeError as e:
        raise ConfigError(
            f"--backbone torchvision:{name} cannot take clips of {length} frames of {size} px; "
            f"leave --size (SIZE=) at the model's own ({str(e)[:160]})"
        ) from None


class TorchvisionVideo(TorchvisionImage):
    """uint8 clips (B, K, S, S, 3) -> (B, D), the vector the model's classifier reads."""

    # torchvision names image and video models alike (torchvision:NAME): family_for picks
    # this family by the model's module, so its key is not an option value of its own.
    family = "torchvision-video"
    decodes = CLIPS

    def check_name(self) -> None:
        if self.name not in video_models():  # family_for sends only video models here
            raise ConfigError(f"--backbone torchvision:{self.name}: not a torchvision video model")

    def clip(self) -> ClipSpec:
        return trained_clip(self.default_weights())

    def item_shape(self) -> tuple[int, ...]:
        size = self.preprocessing().size
        return (self.clip().length, size, size, 3)

    def published(self) -> Preprocessing:
        t = self.default_weights().transforms()
        resize = t.resize_size[0] if len(t.resize_size) == 1 else tuple(t.resize_size)
        return Preprocessing(t.crop_size[0], resize, "center", tuple(t.mean), tuple(t.std), t.interpolation.value)

    def size_kwargs(self) -> dict:
        return {}  # see skeleton()

    def skeleton(self) -> Any:
        return skeleton(self.name)

    def head(self, model: torch.nn.Module) -> str:
        return head_prefix(model)

    def trunk(self, model: torch.nn.Module) -> torch.nn.Module:
        return trunk(model)

    def feature_dim(self) -> int:
        return clip_width(self.name, self.preprocessing().size, self.clip().length)

    def identity(
        self, dataset: str, videos_sha256: str, sampling: dict, weights: WeightsSpec | None, precision: str
    ) -> FeatureIdentity:
        """The image families' identity, its sampling saying what a step is: K frames at a rate."""
        clip = self.clip()
        sampling = sampling | {"clip": {"frames": clip.length, "frame_rate": clip.frame_rate}}
        return super().identity(dataset, videos_sha256, sampling, weights, precision)

    def batch_size(self, device: torch.device) -> int:
        """GPU_BATCH= clips, else as many as hold ResNet-50's batch of 224 px frames (512 on
        CUDA, 32 on a CPU; at least one): R(2+1)D's 16 x 112 px clips 128 and 8."""
        frames = CUDA_FRAMES if device.type == "cuda" else CPU_FRAMES
        size = self.preprocessing().size
        return self.cfg.gpu_batch or max(1, frames * 224 * 224 // (self.clip().length * size * size))

    def load(self, weights: WeightsSpec | None, device: torch.device, dtype: torch.dtype) -> Loaded:
        model = self.build(required(weights, self.family)).to(device).to(memory_format=torch.channels_last_3d)
        return picture_model(model, self.preprocessing(), device, dtype, clips=True)
