"""What every published image model family shares (torchvision, timm, OpenCLIP).

A family names a model as its library does (`--backbone LIBRARY:NAME`), takes its
preprocessing from what the library publishes for it (resize of the shorter side, centre
crop, mean/std, interpolation; `--size`/`--resize` override the sizes), scales frames as
the library does (RGB first, its rounding: docs/extraction.md), and stores per
sampled frame the vector the model's classifier reads. Frames travel as uint8 and are
normalised on the device, as ResNet-50's are; the weights follow weights.py's one policy.
"""

from __future__ import annotations

import difflib
from abc import abstractmethod
from typing import ClassVar

import torch

from pipeline.config import SCHEMA_VERSION
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError

from ..config import FeatureIdentity
from ..decode.common import scaler
from ..families import forms
from ..weights import Builders, Checkpoint, WeightsSpec, build_model, resolve
from .base import FRAMES, Extractor, Loaded, Preprocessing, picture_model, picture_precision, required

# The words that ask for a library's published weights: the option's default and the general one.
PUBLISHED_WORDS = ("imagenet", "pretrained")


def unknown_name(kind: str, name: str, known: list[str], example: str) -> ConfigError:
    """The option error for a model name its library does not know, with the closest it does."""
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f" (e.g. {example})"
    return ConfigError(f"--backbone (BACKBONE=): {kind} has no model {name!r}{hint}. Names are written {forms()}")


class ImageModel(Extractor):
    """uint8 (B, S, S, 3) centre crops -> (B, D), the vector the model's classifier reads.

    A subclass says how its library names, describes and builds a model: `check_name`,
    `published` (the preprocessing at the model's own size), `feature_dim`, `checkpoint`
    (weights.py's view of its published weights and shape check), `builders` (the hooks
    weights.build_model calls for random, file and published weights) and `features_of` (the
    library's model -> the module that returns the stored vector).
    """

    modality = "rgb"
    decodes = FRAMES
    item_dtype = torch.uint8
    numeric_fields = ("frames", "fps", "image_size", "resize", "backbone", "weights", "seed", "precision", "decoder")
    library: ClassVar[str]  # how the library's name is written before the colon

    def __init__(self, cfg):
        super().__init__(cfg)
        self.name = self.model_name()
        self.check_name()
        self.dim = self.feature_dim()

    def model_name(self) -> str:
        """The model as its library names it: the option value after the library's prefix."""
        return self.cfg.backbone.split(":", 1)[1]

    @abstractmethod
    def check_name(self) -> None:
        """ConfigError (with close matches) unless the library knows `self.name`."""

    @abstractmethod
    def published(self) -> Preprocessing:
        """The preprocessing the library publishes for the model, at its own input size."""

    @abstractmethod
    def feature_dim(self) -> int:
        """D: the width of the vector its classifier reads."""

    @abstractmethod
    def checkpoint(self) -> Checkpoint:
        """Its published weights (cache file, download) and the shape check of a local file."""

    @abstractmethod
    def builders(self) -> Builders:
        """The library's model from random weights, a checked state dict, the published file."""

    @abstractmethod
    def features_of(self, model: torch.nn.Module) -> torch.nn.Module:
        """The library's model -> a module (B, 3, S, S) normalised -> (B, D)."""

    def build(self, weights: WeightsSpec) -> torch.nn.Module:
        """The model in eval mode on the CPU, (B, 3, S, S) normalised -> (B, D)."""
        return self.features_of(build_model(weights, self.checkpoint(), self.builders())).eval()

    def item_shape(self) -> tuple[int, ...]:
        size = self.preprocessing().size
        return (size, size, 3)

    def preprocessing(self) -> Preprocessing:
        """The published preprocessing; --size sets the crop (the resize keeps the published
        crop ratio unless --resize, the shorter side, says otherwise)."""
        pub = self.published()
        size = self.cfg.image_size or pub.size
        resize: int | tuple[int, int]
        if self.cfg.resize:
            resize = self.cfg.resize
        elif isinstance(pub.resize, int):
            resize = round(size * pub.resize / pub.size)
        else:  # a published (H, W), scaled as the crop is
            resize = (round(size * pub.resize[0] / pub.size), round(size * pub.resize[1] / pub.size))
        return Preprocessing(size, resize, pub.crop, pub.mean, pub.std, pub.interpolation, rgb_first=True)

    def resolve_weights(self, download_timeout: float = 20.0, fallback_to_random: bool = False) -> WeightsSpec:
        ckpt = self.checkpoint()
        weights = ckpt.pretrained if self.cfg.weights in PUBLISHED_WORDS else self.cfg.weights
        return resolve(ckpt, weights, self.cfg.seed, fallback_to_random, download_timeout)

    def identity(
        self, dataset: str, videos_sha256: str, sampling: dict, weights: WeightsSpec | None, precision: str
    ) -> FeatureIdentity:
        weights = required(weights, self.family)
        pre = self.preprocessing()
        return FeatureIdentity(
            schema_version=SCHEMA_VERSION,
            dataset=dataset,
            videos_sha256=videos_sha256,
            backbone=self.cfg.backbone,
            weights=weights.identity,
            sampling=sampling,
            image_size=pre.size,
            resize=pre.resize,
            crop=pre.crop,
            normalisation=self.normalisation(pre),
            precision=precision,
            decoder=self.cfg.decoder,
        )

    def normalisation(self, pre: Preprocessing) -> dict:
        """The identity's normalisation field: mean/std, the interpolation, and `scaler`: the
        FFmpeg filter the decoders resize with and how (RGB first, the libraries' way), since
        frames scaled otherwise are other numbers."""
        return {
            "mean": pre.mean,
            "std": pre.std,
            "interpolation": pre.interpolation,
            "scaler": scaler(pre.scaling),
        }

    def precision(self) -> str:
        return picture_precision(self.cfg)

    def device(self) -> torch.device:
        return resolve_device(self.cfg.devices[0] if self.cfg.devices else self.cfg.device)

    def describe(self, weights: WeightsSpec | None, device: torch.device, precision: str) -> str:
        return f"{self.cfg.backbone} on {device} ({precision})"

    def load(self, weights: WeightsSpec | None, device: torch.device, dtype: torch.dtype) -> Loaded:
        model = self.build(required(weights, self.family)).to(device).to(memory_format=torch.channels_last)
        return picture_model(model, self.preprocessing(), device, dtype)
