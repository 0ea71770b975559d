"""Stage one's model families behind one interface (base.py); `family_for(cfg)` picks one.

resnet50.py           FRAMES  ResNet-50 (torchvision), 2048-d            --backbone resnet50
torchvision_image.py  FRAMES  image classifiers: final Linear's input    --backbone torchvision:NAME
torchvision_video.py  CLIPS   video classifiers: the same, per clip       --backbone torchvision:NAME (a video model)
timm_image.py         FRAMES  any timm model: its pre-logits             --backbone timm:NAME[.TAG]
open_clip_image.py    FRAMES  OpenCLIP image towers: encode_image        --backbone open_clip:ARCH:PRETRAINED
logmel_summary.py     SOUND   log-mel summary, 128-d, no weights         --modality audio --audio-features logmel
vggish.py             SOUND   VGGish embedding, 128-d                    --modality audio --audio-features vggish

image_model.py holds what the three library families share, hub.py where their published files are.
"""

from __future__ import annotations

from pipeline.errors import ConfigError

from ..config import ExtractConfig
from .base import CLIPS, FRAMES, SOUND, Extractor, Loaded, Preprocessing
from .logmel_summary import LogMelSummary
from .open_clip_image import OpenClipImage
from .resnet50 import ResNet50
from .timm_image import TimmImage
from .torchvision_image import TorchvisionImage
from .torchvision_video import TorchvisionVideo, video_models
from .vggish import VGGishFamily

# The option value that names a family -> its class: --backbone for pictures (up to the
# colon: timm:NAME is the timm family's), --audio-features for sound.
FAMILIES: dict[str, type[Extractor]] = {
    f.family: f
    for f in (ResNet50, TorchvisionImage, TorchvisionVideo, TimmImage, OpenClipImage, LogMelSummary, VGGishFamily)
}


def family_name(cfg: ExtractConfig) -> str:
    """The FAMILIES key of `cfg`'s set: the option's value, up to the colon for a backbone;
    torchvision's video models (torchvision:r2plus1d_18) are the clip family's."""
    if cfg.modality == "audio":
        return cfg.audio_features
    library, _, model = cfg.backbone.partition(":")
    return TorchvisionVideo.family if library == "torchvision" and model in video_models() else library


def family_for(cfg: ExtractConfig) -> Extractor:
    """The family that computes the features of `cfg`'s feature set."""
    name = family_name(cfg)
    if name not in FAMILIES:
        raise ConfigError(f"--backbone (BACKBONE=): the {name} family is not available in this version")
    return FAMILIES[name](cfg)


__all__ = ["CLIPS", "FAMILIES", "FRAMES", "SOUND", "Extractor", "Loaded", "Preprocessing", "family_for"]
