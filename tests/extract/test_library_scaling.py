"""The decoders scale the libraries' way where a family asks (decode.common.RGB_FIRST): both
decoders' frames are the crops torchvision's Resize and CenterCrop make of the PIL frames a
user decodes, on every size of the cut footage (portrait and odd long sides included); and
ResNet-50's graph is the one its sets were made with."""

from __future__ import annotations

import numpy as np
import pytest
import torchvision.transforms as T
from family_reference import ffmpeg_pictures

from stages.extract.decode import decode_video
from stages.extract.decode.common import RGB_FIRST, DecodeJob, scale_filters

# (resize, crop, interpolation): convnext_tiny's, timm test_vit's (crop_pct 0.95) and OpenCLIP's.
LIBRARY_SIZES = [(236, 224, "bilinear"), (168, 160, "bicubic"), (224, 224, "bicubic")]


@pytest.mark.parametrize("decoder", ["pyav", "ffmpeg-cli"])
@pytest.mark.parametrize("resize, size, interpolation", LIBRARY_SIZES)
def test_frames_scaled_rgb_first_are_torchvisions_crops(cut_csv, decoder, resize, size, interpolation):
    """Mean absolute difference per file under half a grey level (FFmpeg's scaler and PIL's
    resampling are not the same code); scaled as ResNet-50's frames are, 0.8 to 4 levels."""
    library = T.Compose([T.Resize(resize, T.InterpolationMode(interpolation)), T.CenterCrop(size)])
    for video in sorted((cut_csv.parent / "videos").iterdir()):
        job = DecodeJob(frames=4, size=size, resize=resize, interpolation=RGB_FIRST + interpolation, decoder=decoder)
        decoded = decode_video(video, job)
        frames, indices, _ = decoded.picture()
        theirs = np.stack([np.asarray(library(p)) for p in ffmpeg_pictures(video, indices)])
        difference = np.abs(frames.astype(np.float32) - theirs).mean()
        assert difference < 0.5, f"{video.name}, {decoder}: {difference:.2f} grey levels from torchvision's"


def test_resnet50s_frames_are_scaled_as_its_sets_were_made():
    """The YUV picture scaled and converted in one call, the longer side even, the crop floored:
    another graph would give other bytes under the same ids."""
    assert scale_filters(112, 128, "bilinear") == [
        ("scale", {"w": "if(lte(iw,ih),128,-2)", "h": "if(lte(iw,ih),-2,128)", "flags": "bilinear"}),
        ("crop", {"w": "112", "h": "112"}),
    ]
