"""The extractor interface: what a model family tells stage one, and nothing more.

A family is one module in this package with one `Extractor` subclass. The runner, the
batcher, the plan and the store only talk to this interface:

    decodes          what the decoders hand it per sampled step: FRAMES (one RGB picture),
                     CLIPS (K frames around the step, at the rate its weights were trained
                     on) or SOUND (the log-mel window around the step's timestamp)
    item_shape()     one step as decoded, e.g. (S, S, 3) uint8, (K, S, S, 3) or (96, 64) float32
    clip()           CLIPS: K and that frame rate (a ClipSpec); None for the others
    preprocessing()  pictures: the resize, crop, mean/std and interpolation the decoder and
                     the device apply (None for sound: the front end is the decode)
    dim              features per step, D of the stored (N, T, D)
    resolve_weights  the option's value -> a WeightsSpec, by weights.py's one policy
    identity()       the fields that change the numbers; their hash is the feature-set id
    load()           the model on a device: `Loaded(model, prepare)`, where `prepare` maps a
                     batch as decoded, already on the device, to the model's input
    batch_size()     items per forward (GPU_BATCH=, else its registered default per device);
                     `one_video_per_batch` keeps a video's rows together

Adding a family: a module here with its subclass, registered with `@register(Family(...))`
(families.py: how its option value is written, its default batch, help, what it stores),
and tests that compare its stored features with an independent forward of the same model.
The package imports every module in it, so nothing else names the new one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pipeline.devices import inference_precision, resolve_device
from pipeline.errors import ConfigError

from .. import families
from ..config import ExtractConfig
from ..decode.common import RGB_FIRST, ClipSpec
from ..weights import WeightsSpec

FRAMES = "frames"  # one RGB picture per sampled step
CLIPS = "clips"  # K consecutive RGB pictures per sampled step, centred on it (a video model's)
SOUND = "sound"  # the log-mel window of sound centred on each sampled step's timestamp


@dataclass(frozen=True)
class Preprocessing:
    """What happens to a picture before the model: the decoder scales the shorter side to
    `resize` (or the picture to exactly (H, W), as torchvision's video models publish it) with
    `interpolation` and crops `size` x `size` (`crop`); the device then subtracts `mean` and
    divides by `std` (both per RGB channel, on 0..1 values). `rgb_first`: scaled the
    libraries' way, the frame made RGB at full size first and torchvision's rounding of the
    longer side and crop offsets (decode.common.scale_filters); ResNet-50's sets are not."""

    size: int
    resize: int | tuple[int, int]
    crop: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    rgb_first: bool = False

    @property
    def scaling(self) -> str:
        """The interpolation as the decoders take it: with decode.common.RGB_FIRST where rgb_first."""
        return (RGB_FIRST if self.rgb_first else "") + self.interpolation


@dataclass
class Loaded:
    """A family's model on its device. prepare: (B, *item_shape) as decoded, on the device ->
    the model's input; model: that input -> (B, dim). Only `model` is compiled (COMPILE=1)."""

    model: nn.Module
    prepare: Callable[[torch.Tensor], torch.Tensor]


class Extractor(ABC):
    """One model family under one stage-one config (see the module docstring)."""

    family: ClassVar[str]  # its registry name (set by families.register), e.g. "resnet50", "vggish"
    modality: ClassVar[str]  # the store modality of its sets: "rgb" | "audio"
    decodes: ClassVar[str]  # FRAMES | SOUND
    dim: int  # a class constant, or set per model by a family whose models differ
    item_dtype: ClassVar[torch.dtype]
    # ExtractConfig fields that change its numbers: a set made with all of them at their
    # defaults is recorded as such, and stage two prefers it when a dataset has several.
    numeric_fields: ClassVar[tuple[str, ...]]
    one_video_per_batch: ClassVar[bool] = False
    # Torch threads while its sets are computed; None leaves torch's default. 1 where the
    # decoders do tensor work (the log-mel front end) and the parallelism is across videos.
    torch_threads: ClassVar[int | None] = None
    flags: ClassVar[tuple[str, ...]] = ()  # per-video uint8 columns of its shards, e.g. has_audio
    weights_field: ClassVar[str] = "weights"  # the ExtractConfig field that names its weights

    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg

    @classmethod
    def registered(cls) -> families.Family:
        """Its registry record (families.py)."""
        return families.REGISTRY[cls.family]

    @abstractmethod
    def item_shape(self) -> tuple[int, ...]:
        """One sampled step as the decoders write it into a slot."""

    def preprocessing(self) -> Preprocessing | None:
        return None

    def clip(self) -> ClipSpec | None:
        """A clip model's K frames per step and their rate; None: a step is one frame or window."""
        return None

    @abstractmethod
    def resolve_weights(self, download_timeout: float = 20.0, fallback_to_random: bool = False) -> WeightsSpec | None:
        """The weights option's value as a concrete, identifiable source (None: the family has none)."""

    @abstractmethod
    def identity(self, dataset: str, videos_sha256: str, sampling: dict, weights: WeightsSpec | None, precision: str):
        """FeatureIdentity | AudioIdentity: everything that changes the stored numbers."""

    @abstractmethod
    def load(self, weights: WeightsSpec | None, device: torch.device, dtype: torch.dtype) -> Loaded:
        """The model in eval mode on `device`, in `dtype` where the family computes in it."""

    def precision(self) -> str:
        """The precision its model runs at (part of a visual set's id)."""
        return "fp32"

    def device(self) -> torch.device:
        """The device of this run's (first) model."""
        return torch.device("cpu")

    def batch_size(self, device: torch.device) -> int:
        """Items per forward: GPU_BATCH=, else the registered default for the device's type;
        a family registered without one takes a video's steps per forward."""
        batch = self.registered().batch
        if batch is None:
            return self.cfg.steps
        return self.cfg.gpu_batch or (batch[0] if device.type == "cuda" else batch[1])

    def describe(self, weights: WeightsSpec | None, device: torch.device, precision: str) -> str:
        """How a run says what computes its features (its first progress line)."""
        return f"{self.family} on {device} ({precision})"


def picture_model(
    model: nn.Module, pre: Preprocessing, device: torch.device, dtype: torch.dtype, clips: bool = False
) -> Loaded:
    """A picture model on `device` (channels_last, in `dtype`) and its on-device prepare step;
    `clips`: a clip model's, whose input has a time axis (channels_last_3d)."""
    model = model.to(dtype) if dtype != torch.float32 else model
    shape = (1, 3, 1, 1, 1) if clips else (1, 3, 1, 1)
    mean = torch.tensor(pre.mean, device=device).view(shape) * 255
    std = torch.tensor(pre.std, device=device).view(shape) * 255
    layout = torch.channels_last_3d if clips else torch.channels_last

    def prepare(x: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 -> (B, 3, S, S), or clips (B, K, S, S, 3) -> (B, 3, K, S, S):
        normalised, in `dtype`, channels last."""
        x = x.movedim(-1, 1)  # a view: channels-last memory is what the decoders wrote
        return ((x.float() - mean) / std).to(dtype).contiguous(memory_format=layout)

    return Loaded(model, prepare)


def required(weights: WeightsSpec | None, family: str) -> WeightsSpec:
    """The weights of a family that has some (every one but the log-mel summary)."""
    if weights is None:
        raise ValueError(f"the {family} family computes nothing without weights, and none were resolved")
    return weights


def picture_precision(cfg: ExtractConfig) -> str:
    """The precision a picture model will run at, which is part of the feature-set id.

    On Dask the GPUs are the workers' and the driver (a login node) may have none: an
    explicit precision or device says it; with `local:N` the workers are this machine.
    """
    device = cfg.devices[0] if cfg.devices else cfg.device
    if not cfg.scheduler:
        return inference_precision(cfg.precision, resolve_device(device))
    if cfg.precision != "auto":
        return cfg.precision
    if device.startswith("cuda"):
        return "fp16"
    if device == "cpu":
        return "fp32"
    if cfg.scheduler.startswith("local:"):
        return inference_precision("auto", resolve_device("auto"))
    raise ConfigError(
        f"--device (DEVICE=) auto with --scheduler {cfg.scheduler}: say what the workers run on, "
        f"DEVICE=cuda (GPU workers, fp16) or DEVICE=cpu (fp32), or set PRECISION="
    )
