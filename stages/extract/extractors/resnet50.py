"""ResNet-50 (torchvision): uint8 frames -> 2048-d pooled features, the default picture family.

The device does the normalisation: frames travel as uint8 (4x fewer bytes than fp32),
the (B, H, W, 3) batch is permuted to NCHW *without copying*, which is exactly the
channels_last memory layout the convolutions want, and only then converted to the
compute dtype. On CUDA the model itself is cast to fp16/bf16 (`.half()` beat autocast
on the H100: 13,900 vs 12,400-12,900 images/s).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from pipeline.config import SCHEMA_VERSION
from pipeline.devices import resolve_device

from ..config import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD, FeatureIdentity
from ..weights import Checkpoint, WeightsSpec, check_shapes, load_state_dict, resolve
from .base import FRAMES, Extractor, Loaded, Preprocessing, picture_model, picture_precision, required

IMAGENET_WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
# The decoders' scale filter for ResNet-50 (FFmpeg's `bilinear`): what its sets have always been
# made with, and the interpolation torchvision publishes for these weights.
INTERPOLATION = "bilinear"


def imagenet_cache_path() -> Path:
    """Where torchvision's weights API caches the ImageNet checkpoint (TORCH_HOME aware)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


def check_fits_resnet50(state: dict, path: Path) -> None:
    """Every trunk tensor present with the right shape; fc may differ or be absent (it is replaced)."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        skeleton = torchvision.models.resnet50(weights=None)
    expected = {k: v.shape for k, v in skeleton.state_dict().items() if not k.startswith("fc.")}
    check_shapes(
        expected, {k: v for k, v in state.items() if not k.startswith("fc.")}, path, RESNET50.option, "ResNet-50"
    )


RESNET50 = Checkpoint(
    name="ImageNet",
    flag="--weights",
    variable="WEIGHTS",
    file_hint="resnet50.pth",
    pretrained="imagenet",
    identity=f"torchvision:{IMAGENET_WEIGHTS.name}",
    cache_path=imagenet_cache_path,
    download=lambda: IMAGENET_WEIGHTS.get_state_dict(progress=True, check_hash=True),
    check=check_fits_resnet50,
    what="ImageNet features",
)


def resolve_weights(
    weights: str, seed: int = 0, fallback_to_random: bool = False, download_timeout: float = 20.0
) -> WeightsSpec:
    """WEIGHTS=: imagenet (torchvision's IMAGENET1K_V2, downloaded once into the torch hub cache), a
    path to a state dict, or random (seeded). With `fallback_to_random` (the embedded sample only),
    an unreachable download falls back to random weights, loudly; anywhere else it is an error."""
    return resolve(RESNET50, weights, seed, fallback_to_random, download_timeout)


def build_resnet50(spec: WeightsSpec) -> torch.nn.Module:
    """ResNet-50 trunk with fc replaced by Identity: (B, 3, H, W) -> (B, 2048)."""
    if spec.kind == "random":
        torch.manual_seed(spec.seed)
        model = torchvision.models.resnet50(weights=None)
    else:
        model = torchvision.models.resnet50(weights=None)
        state = load_state_dict(spec.file, RESNET50.option)
        check_fits_resnet50(state, spec.file)
        model.load_state_dict(state, strict=False)
    model.fc = torch.nn.Identity()
    return model.eval()


class ResNet50(Extractor):
    """uint8 (B, S, S, 3) centre crops -> (B, 2048) pooled ResNet-50 features."""

    family = "resnet50"
    modality = "rgb"
    decodes = FRAMES
    dim = FEATURE_DIM
    item_dtype = torch.uint8
    numeric_fields = ("frames", "fps", "image_size", "resize", "backbone", "weights", "seed", "precision", "decoder")

    def item_shape(self) -> tuple[int, ...]:
        return (self.cfg.crop_size, self.cfg.crop_size, 3)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(
            self.cfg.crop_size, self.cfg.resize_to, "center", IMAGENET_MEAN, IMAGENET_STD, INTERPOLATION
        )

    def resolve_weights(self, download_timeout: float = 20.0, fallback_to_random: bool = False) -> WeightsSpec:
        return resolve_weights(self.cfg.weights, self.cfg.seed, fallback_to_random, download_timeout)

    def identity(
        self, dataset: str, videos_sha256: str, sampling: dict, weights: WeightsSpec | None, precision: str
    ) -> FeatureIdentity:
        weights = required(weights, self.family)
        pre = self.preprocessing()
        return FeatureIdentity(
            schema_version=SCHEMA_VERSION,
            dataset=dataset,
            videos_sha256=videos_sha256,
            backbone=self.family,
            weights=weights.identity,
            sampling=sampling,
            image_size=pre.size,
            resize=pre.resize,
            crop=pre.crop,
            normalisation={"mean": pre.mean, "std": pre.std},
            precision=precision,
            decoder=self.cfg.decoder,
        )

    def precision(self) -> str:
        return picture_precision(self.cfg)

    def device(self) -> torch.device:
        return resolve_device(self.cfg.devices[0] if self.cfg.devices else self.cfg.device)

    def batch_size(self, device: torch.device) -> int:
        """GPU_BATCH=, else 512 on CUDA (where the H100 stopped gaining, 13,900 images/s in
        fp16) and 32 on a CPU (with jemalloc, 224 px, 2 cores: 16 cost 1.3x the CPU time per
        image, 64 no clear gain for twice the memory; docs/allocator.md)."""
        return self.cfg.gpu_batch or (512 if device.type == "cuda" else 32)

    def describe(self, weights: WeightsSpec | None, device: torch.device, precision: str) -> str:
        return f"on {device} ({precision})"

    def load(self, weights: WeightsSpec | None, device: torch.device, dtype: torch.dtype) -> Loaded:
        model = build_resnet50(required(weights, self.family)).to(device).to(memory_format=torch.channels_last)
        return picture_model(model, self.preprocessing(), device, dtype)
