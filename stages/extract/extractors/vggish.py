"""VGGish (AUDIO_FEATURES=vggish): an AudioSet embedding of each step's 0.96 s log-mel window,
its model in torch, and where its weights come from (the policy of weights.py, as for ResNet-50).

The layout is torchvggish's (github.com/harritaylor/torchvggish), module for module, so
its converted checkpoint `vggish-10086976.pth` loads without renaming a key:

    features   = conv64 - pool - conv128 - pool - conv256 - conv256 - pool - conv512 - conv512 - pool
                 (3x3 convolutions, padding 1, each followed by ReLU; 2x2 max pools)
                 state keys features.{0,3,6,8,11,13}.{weight,bias}
    embeddings = fc 12288 -> 4096 - ReLU - fc 4096 -> 4096 - ReLU - fc 4096 -> 128 - ReLU
                 state keys embeddings.{0,2,4}.{weight,bias}
    pproc      = optional PCA postprocessing: pproc.pca_matrix (128, 128), pproc.pca_means (128, 1),
                 used when the state dict has them (torchvggish's whole-model state dict does)

Input: (B, 1, 96, 64) log-mel examples (logmel.py, 0.96 s each); output
(B, 128) float32. The conv output (B, 512, 6, 4) is flattened in (height, width,
channel) order before the first fc, as the TensorFlow original (and torchvggish) do; a
plain .flatten() would scramble the converted weights. With PCA the output is what
torchvggish's postprocessor gives: PCA, clipped to [-2, 2], quantised to 0..255 as in
AudioSet's released embeddings.

Weights (AUDIO_WEIGHTS=, `resolve_audio_weights`):
- `vggish` (the default for this kind): torchvggish's checkpoint in the torch hub cache,
  `torch.hub.get_dir()/checkpoints/vggish-10086976.pth`, downloaded there once if it is
  missing; offline, a clear error that says where to put the file.
- a path: that state dict, checked tensor by tensor before any work; id `sha256:<16 hex>`.
- `random`: seeded random weights, only when asked, announced loudly, id `random:seed<N>`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import AUDIO_DIM
from ..families import Family, register
from ..weights import Builders, Checkpoint, WeightsSpec, build_model, check_shapes, resolve
from .base import Loaded, required
from .sound_windows import SoundWindows

VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
VGGISH_IDENTITY = "torchvggish:vggish-10086976"
EMBEDDING_DIM = 128
EXAMPLE_SHAPE = (96, 64)  # log-mel frames x bands
CONV_LAYOUT = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
PCA_KEYS = ("pproc.pca_matrix", "pproc.pca_means")
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0  # torchvggish's (and AudioSet's) clipping range


def make_features() -> nn.Sequential:
    """VGGish's convolutional trunk: (B, 1, 96, 64) -> (B, 512, 6, 4)."""
    layers: list[nn.Module] = []
    channels = 1
    for v in CONV_LAYOUT:
        if isinstance(v, str):  # "M": max pooling
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


class Postprocessor(nn.Module):
    """torchvggish's PCA postprocessing: (B, 128) -> (B, 128) in 0..255 (PCA, clip, 8-bit quantise)."""

    def __init__(self):
        super().__init__()
        self.pca_matrix = nn.Parameter(torch.zeros(EMBEDDING_DIM, EMBEDDING_DIM), requires_grad=False)
        self.pca_means = nn.Parameter(torch.zeros(EMBEDDING_DIM, 1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pca = (self.pca_matrix @ (x.T - self.pca_means)).T
        clipped = pca.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
        return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


class VGGish(nn.Module):
    """(B, 1, 96, 64) float32 log-mel examples -> (B, 128) float32 embeddings (see the module docstring)."""

    def __init__(self, postprocess: bool = False):
        super().__init__()
        self.features = make_features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM),
            nn.ReLU(inplace=True),
        )
        self.pproc = Postprocessor() if postprocess else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).flatten(1)  # (B, 6 * 4 * 512) in TensorFlow's NHWC order
        x = self.embeddings(x)
        return self.pproc(x) if self.pproc is not None else x


# ---------------------------------------------------------------- weights
def vggish_cache_path() -> Path:
    """Where torch.hub keeps torchvggish's checkpoint (TORCH_HOME aware)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGGISH_URL).name


def download_vggish() -> None:
    """Fetch the checkpoint into the hub cache. No hash check: its name's suffix is not a sha256 prefix
    we could verify, and the tensors are checked against the architecture when loaded."""
    torch.hub.load_state_dict_from_url(VGGISH_URL, progress=False, check_hash=False, map_location="cpu")


def check_fits_vggish(state: dict, path: Path) -> None:
    """Every trunk and fc tensor present with its shape; the PCA pair both present or both absent."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        expected = {k: tuple(v.shape) for k, v in VGGish(postprocess=True).state_dict().items()}
    pca = [k for k in PCA_KEYS if k in state]
    check_shapes(expected, state, path, VGGISH.option, "VGGish", optional=() if pca else PCA_KEYS)


VGGISH = Checkpoint(
    name="VGGish",
    flag="--audio-weights",
    variable="AUDIO_WEIGHTS",
    file_hint="vggish.pth",
    pretrained="vggish",
    identity=VGGISH_IDENTITY,
    cache_path=vggish_cache_path,
    download=download_vggish,
    check=check_fits_vggish,
    what="AudioSet (VGGish) embeddings",
)


def resolve_audio_weights(
    weights: str = "vggish", seed: int = 0, fallback_to_random: bool = False, download_timeout: float = 20.0
) -> WeightsSpec:
    """AUDIO_WEIGHTS=: vggish (torchvggish's checkpoint, from the hub cache, downloaded once), a path
    to a state dict, or random (seeded, announced)."""
    return resolve(VGGISH, weights, seed, fallback_to_random, download_timeout)


def build_vggish(spec: WeightsSpec) -> VGGish:
    """The model in eval mode on the CPU, its weights from spec (PCA used when the file has it)."""
    return build_model(spec, VGGISH, Builders(VGGish, from_state)).eval()


def from_state(state: dict) -> VGGish:
    """VGGish holding a checked state dict, with the PCA postprocessor where the state has it."""
    with torch.device("meta"):  # no random init of 72M parameters only to overwrite them
        model = VGGish(postprocess=all(k in state for k in PCA_KEYS))
    model.load_state_dict(state, assign=True)
    return model


@register(
    Family(
        name="vggish",
        title="VGGish",
        form="vggish",
        examples=("vggish",),
        help="the AudioSet VGGish embedding of each 0.96 s window",
        stores="the VGGish embedding (PCA-quantised when the checkpoint has the PCA)",
        weights="torch hub cache (`AUDIO_WEIGHTS=vggish`)",
        preprocessing="VGGish's log-mel front end (96 x 64 examples)",
        batch=None,
        dim=AUDIO_DIM,
        option="audio_features",
    )
)
class VGGishFamily(SoundWindows):
    """(B, 96, 64) float32 log-mel examples -> (B, 128) float32 embeddings, on the CPU."""

    def resolve_weights(self, download_timeout: float = 20.0, fallback_to_random: bool = False) -> WeightsSpec:
        return resolve_audio_weights(self.cfg.audio_weights, self.cfg.seed, fallback_to_random, download_timeout)

    def describe(self, weights: WeightsSpec | None, device: torch.device, precision: str) -> str:
        return f"from the sound tracks (VGGish ({required(weights, self.family).identity}))"

    def load(self, weights: WeightsSpec | None, device: torch.device, dtype: torch.dtype) -> Loaded:
        return Loaded(build_vggish(required(weights, self.family)).to(device), prepare)


def prepare(examples: torch.Tensor) -> torch.Tensor:
    """(B, 96, 64) log-mel examples -> (B, 1, 96, 64) float32, VGGish's input."""
    if tuple(examples.shape[-2:]) != EXAMPLE_SHAPE:
        raise ValueError(f"VGGish takes 96 x 64 log-mel examples (window_s=0.96), got {tuple(examples.shape)}")
    return examples.to(torch.float32).reshape(-1, 1, *EXAMPLE_SHAPE)
