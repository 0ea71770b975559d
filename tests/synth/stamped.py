"""Clips whose every frame names itself: the frame's index drawn into the picture as bands, so a
decoded frame says which frame it is, whatever decoder, scaler and crop produced it.

    make_stamped_clip(path, cuts, ...)            write one: hard cuts between visually distinct scenes
    read_stamps(frames, source, resize, size)     the index each decoded frame shows, exactly

A frame of W x H px (landscape) is three parts: the top and bottom quarters show the scene
(each scene its own colours and a pattern moving with the frame), and the middle half holds
STAMP_BITS horizontal bands across the whole width, band b white where bit b of the frame's
index is set, black where not. Bands span the width, so a centre crop keeps all of them; each
is H/16 px high, so a scale down to half the height still leaves rows of pure band to read.
The pictures are made here (numpy) and encoded by ffmpeg from raw RGB, with the codec options
the caller gives (B-frames, GOP, quality).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.samples.clips import require_ffmpeg

STAMP_BITS = 8  # indices 0..255
BLACK, WHITE = 16, 235  # video range: the encoders keep both ends without clipping
# A band read back must be clearly one or the other: between these it is ambiguous, an error.
DARK_BELOW, BRIGHT_ABOVE = 70, 180

# Encoder options: MPEG-4 Part 2 in AVI (UCF101's) with B-frames, and H.264 with B-frames.
MPEG4_BFRAMES = ("-c:v", "mpeg4", "-bf", "2", "-q:v", "3", "-g", "24")
H264_BFRAMES = ("-c:v", "libx264", "-bf", "3", "-crf", "18", "-preset", "veryfast", "-g", "48")


def scene_picture(scene: int, index: int, width: int, height: int) -> np.ndarray:
    """Scene `scene`'s picture at frame `index`: (height, width, 3) uint8. Scenes differ in
    colour and pattern (stripes of another period and direction), and move with the frame."""
    rng = np.random.default_rng(scene)
    base = rng.integers(40, 216, 3)
    period = 8 + 6 * scene
    x = np.arange(width)[None, :] + (1 if scene % 2 else -1) * 3 * index
    y = np.arange(height)[:, None]
    wave = ((x + (scene + 1) * y) // period) % 2  # (height, width) 0/1
    picture = base[None, None, :] + (wave[..., None] * 40 - 20)
    return np.clip(picture, 0, 255).astype(np.uint8)


def stamped_frame(index: int, scene: int, width: int, height: int) -> np.ndarray:
    """Frame `index` of scene `scene`: the scene above and below, its index's bands in the middle."""
    frame = scene_picture(scene, index, width, height)
    band = height // 16
    top = height // 4
    for bit in range(STAMP_BITS):
        frame[top + bit * band : top + (bit + 1) * band] = WHITE if (index >> bit) & 1 else BLACK
    return frame


def make_stamped_clip(
    path: Path,
    cuts: Sequence[int],
    frames: int,
    codec: Sequence[str] = MPEG4_BFRAMES,
    fps: float = 30,
    size: tuple[int, int] = (320, 240),
) -> Path:
    """Write `frames` stamped frames (width, height = size, landscape) at `fps`, a hard cut to
    the next scene at each frame of `cuts`, encoded by ffmpeg with `codec` (options after -i)
    into `path` (the container from its extension). Returns path."""
    width, height = size
    if width < height or height % 16 or frames > 1 << STAMP_BITS:
        raise ValueError(f"a landscape size with a height divisible by 16, at most {1 << STAMP_BITS} frames")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = [
        require_ffmpeg(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-r", str(fps), "-i", "-", *codec, "-pix_fmt", "yuv420p", "-threads", "1", str(path),
    ]  # fmt: skip
    pictures = b"".join(stamped_frame(i, sum(i >= c for c in cuts), width, height).tobytes() for i in range(frames))
    subprocess.run(args, input=pictures, check=True, capture_output=True, timeout=120)
    return path


def band_rows(source: tuple[int, int], resize: int | tuple[int, int], size: int) -> np.ndarray:
    """The row of each stamp band's centre in a decoded frame: (STAMP_BITS,) int.

    source: the video's (width, height); resize: the decode's shorter side, or its (H, W);
    size: the centre crop. FFmpeg's scale maps output row r to input row (r + 0.5) / s - 0.5,
    and its crop starts at (scaled height - size) // 2."""
    width, height = source
    scaled = resize if isinstance(resize, int) else resize[0]  # landscape: the shorter side is the height
    scale, top = scaled / height, (scaled - size) // 2
    band = height // 16
    centres = height // 4 + (np.arange(STAMP_BITS) + 0.5) * band
    return np.round((centres + 0.5) * scale - 0.5 - top).astype(int)


def read_stamps(frames: np.ndarray, source: tuple[int, int], resize: int | tuple[int, int], size: int) -> np.ndarray:
    """The index each decoded frame shows: frames (..., size, size, 3) uint8 -> (...) int.

    Each band is read from its centre row (averaged over the width and the colours); a band
    that is neither clearly dark nor clearly bright raises ValueError (a frame that is a mix
    of two, or not stamped): the answer is exact or there is none."""
    rows = band_rows(source, resize, size)
    levels = frames[..., rows, :, :].astype(np.float32).mean(axis=(-1, -2))  # (..., STAMP_BITS)
    unclear = (levels > DARK_BELOW) & (levels < BRIGHT_ABOVE)
    if unclear.any():
        raise ValueError(f"{int(unclear.sum())} stamp band(s) neither dark nor bright: {levels[unclear][:8]}")
    return ((levels >= BRIGHT_ABOVE) * (1 << np.arange(STAMP_BITS))).sum(axis=-1)
