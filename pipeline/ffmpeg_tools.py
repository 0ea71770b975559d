"""Finding the ffmpeg (and ffprobe) binaries, for stage one and for the generated datasets.

Looked up in this order: FFMPEG_BINARY / FFPROBE_BINARY, then PATH, then (ffmpeg only)
the static binary inside the imageio-ffmpeg wheel, which machines without a system
ffmpeg can install with pip (it ships no ffprobe; stage one then probes with ffmpeg).
"""

from __future__ import annotations

import os
import shutil

from .errors import FFmpegMissing

INSTALL_HINT = (
    "install it with 'apt-get install ffmpeg' (Debian/Ubuntu), 'brew install ffmpeg' (macOS) "
    "or 'conda install -c conda-forge ffmpeg', or run 'make setup', which installs it; "
    "'pip install imageio-ffmpeg' (a static ffmpeg, no ffprobe) also works"
)


def find_binary(name: str = "ffmpeg") -> str | None:
    """Path of ffmpeg/ffprobe, or None when there is none."""
    found = os.environ.get(f"{name.upper()}_BINARY") or shutil.which(name)
    if found or name != "ffmpeg":
        return found
    try:
        import imageio_ffmpeg  # optional: only where no system ffmpeg is installed

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None


def ffmpeg_binary(name: str = "ffmpeg") -> str:
    """Path of ffmpeg/ffprobe; FFmpegMissing, with the install hint, when there is none."""
    path = find_binary(name)
    if not path:
        raise FFmpegMissing(f"{name} not found on PATH: {INSTALL_HINT}")
    return path
