"""Each decoded frame is the frame at its recorded index, exactly: on footage with hard cuts, in
`.avi` MPEG-4 with B-frames and `.mp4` H.264 with B-frames, for both decoders (PyAV also in
its decoder processes, as stage one runs it), a frame model's steps and a clip model's clips,
at T uniform steps and at FPS=.

Every frame of the footage draws its own index into its picture (synth/stamped.py), so a
decoded frame names itself whatever the scaler and crop: a frame missing from a decoder's
pass, a reordered B-frame, or a clip laid out from the wrong frames shows as a wrong index,
not as a small difference under a tolerance. The scenes change completely at each cut, where
a frame taken from the wrong side of the cut changes a clip model's row most.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import synth
from av.video.frame import PictureType
from synth.stamped import H264_BFRAMES, MPEG4_BFRAMES, make_stamped_clip, read_stamps

from stages.extract.decode import ClipSpec, DecodeJob, DecoderProcesses, decode_video

SOURCE = (320, 240)  # the footage's (width, height)
FRAMES, CUTS = 105, (40, 60)  # three scenes; T=4 clips at 30 frames/s: the third is 49..79, across the cut at 60
R2PLUS1D = ClipSpec(16, 15.0)  # R(2+1)D's clip: 16 frames at 15 frames/s, every 2nd frame here

FOOTAGE = {"avi-mpeg4": ("cuts.avi", MPEG4_BFRAMES), "mp4-h264": ("cuts.mp4", H264_BFRAMES)}

# (frames T, fps, resize, crop, clip): a frame model's steps and a clip model's, uniform and FPS=.
SAMPLINGS = {
    "frames": (8, None, 128, 112, None),
    "frames-fps": (16, 5.0, 64, 56, None),
    "clips": (4, None, (128, 171), 112, R2PLUS1D),
    "clips-fps": (4, 1.5, (128, 171), 112, R2PLUS1D),
}


@pytest.fixture(scope="module", params=list(FOOTAGE))
def footage(request, tmp_path_factory) -> Path:
    name, codec = FOOTAGE[request.param]
    if "libx264" in codec and not synth.has_encoder("libx264"):
        pytest.skip("this ffmpeg has no libx264 encoder")
    path = make_stamped_clip(tmp_path_factory.mktemp("stamped") / name, CUTS, FRAMES, codec)
    with av.open(str(path)) as container:
        kinds = {PictureType(frame.pict_type).name for frame in container.decode(video=0)}
    assert "B" in kinds, f"{name} was meant to hold B-frames, has {kinds}"
    return path


@pytest.fixture(scope="module")
def procs():
    with DecoderProcesses(1) as pool:
        yield pool


@pytest.fixture(params=["pyav", "pyav-processes", "ffmpeg-cli"])
def decode(request, procs):
    """decode_video through one decoder: PyAV in this thread, in a decoder process, or ffmpeg."""
    decoder = request.param.removesuffix("-processes")
    pool = procs if request.param.endswith("-processes") else None
    return lambda path, **kw: decode_video(path, DecodeJob(decoder=decoder, **kw), procs=pool)


@pytest.mark.parametrize("sampling", list(SAMPLINGS))
def test_every_decoded_frame_is_the_frame_at_its_index(footage, decode, sampling):
    frames, fps, resize, size, clip = SAMPLINGS[sampling]
    dec = decode(footage, frames=frames, size=size, resize=resize, fps=fps, clip=clip)
    pixels, indices, _ = dec.picture()
    assert indices.shape == ((len(pixels), clip.length) if clip else (len(pixels),))
    shown = read_stamps(pixels, SOURCE, resize, size)
    mismatched = np.argwhere(shown != indices)
    assert not len(mismatched), (
        f"{sampling}: frames shown {shown[tuple(mismatched[0][:1])].tolist()} where the indices say "
        f"{indices[tuple(mismatched[0][:1])].tolist()}"
    )


def test_the_clips_cross_the_cuts(footage, decode):
    """The footage tests what it means to: one clip spans the cut at frame 60 (frames 49..79),
    its frames from two scenes that share no picture."""
    dec = decode(footage, frames=4, size=112, resize=(128, 171), clip=R2PLUS1D)
    _, indices, _ = dec.picture()
    assert indices[2].tolist() == list(range(49, 80, 2))
