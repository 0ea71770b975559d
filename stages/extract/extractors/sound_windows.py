"""What every family that reads SOUND shares: its input (the log-mel window around each
sampled frame's timestamp, logmel.py), its identity, its has_audio flag.

Decoding sound and its front end are cheap next to a picture model (about 45 CPU ms a
video on the development machine), so these families run on this machine's CPU: the
decode threads compute each video's log-mel windows, and the model thread turns a video's
windows into its T rows (one video per batch, so a row never depends on its neighbours).
"""

from __future__ import annotations

import torch

from pipeline.config import SCHEMA_VERSION

from ..config import AUDIO_DIM, AudioIdentity
from ..logmel import FRONT_END, MEL_BANDS, example_frames
from ..weights import WeightsSpec
from .base import SOUND, Extractor


class SoundWindows(Extractor):
    """(B, frames, 64) float32 log-mel windows -> (B, 128): the base of the audio families."""

    modality = "audio"
    decodes = SOUND
    dim = AUDIO_DIM
    item_dtype = torch.float32
    numeric_fields = ("frames", "fps", "audio_features", "audio_weights", "seed", "audio_window", "decoder")
    one_video_per_batch = True
    torch_threads = 1  # one video per decode thread: the parallelism is across videos
    flags = ("has_audio",)
    weights_field = "audio_weights"

    def item_shape(self) -> tuple[int, ...]:
        return (example_frames(self.cfg.audio_window), MEL_BANDS)

    def identity(
        self, dataset: str, videos_sha256: str, sampling: dict, weights: WeightsSpec | None, precision: str
    ) -> AudioIdentity:
        return AudioIdentity(
            schema_version=SCHEMA_VERSION,
            dataset=dataset,
            videos_sha256=videos_sha256,
            sampling=sampling,
            timestamps=f"decoder:{self.cfg.decoder}",
            features=self.family,
            weights=weights.identity if weights else None,
            front_end=FRONT_END,
            window_s=self.cfg.audio_window,
        )
