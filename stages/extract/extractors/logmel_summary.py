"""The log-mel summary (AUDIO_FEATURES=logmel, the default; no weights): per step, for each of
the 64 bands of its 0.96 s window, the mean then the (population) std over the window's frames.

The means are the window's spectral envelope (what sounds: pitch, timbre, loudness); the
stds are how much each band changes within the window (onsets, rhythm, speech versus a
steady hum), which a mean alone would lose. 128 values match VGGish's embedding and
YouTube-8M's audio feature, so the temporal heads see the same width whichever kind a set holds.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import AUDIO_DIM
from ..families import Family, register
from ..logmel import summarize
from ..weights import WeightsSpec
from .base import Loaded
from .sound_windows import SoundWindows


class Summary(nn.Module):
    """(B, frames, 64) log-mel -> (B, 128): [64 means, 64 stds] over frames."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return summarize(x)


@register(
    Family(
        name="logmel",
        title="log-mel summary",
        form="logmel",
        examples=("logmel",),
        help="per mel band, the mean and the std over the window; no weights",
        stores="64 band means, then 64 band stds",
        weights="",
        preprocessing="VGGish's log-mel front end",
        batch=None,
        dim=AUDIO_DIM,
        option="audio_features",
    )
)
class LogMelSummary(SoundWindows):
    def resolve_weights(self, download_timeout: float = 20.0, fallback_to_random: bool = False) -> None:
        return None

    def describe(self, weights: WeightsSpec | None, device: torch.device, precision: str) -> str:
        return "from the sound tracks (log-mel summary)"

    def load(self, weights: WeightsSpec | None, device: torch.device, dtype: torch.dtype) -> Loaded:
        return Loaded(Summary().to(device), lambda x: x)
