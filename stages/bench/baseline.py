"""The seed articles' method: every frame read, a fresh fp32 forward per frame, batch of one."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.ffmpeg_tools import ffmpeg_binary

from ..extract import video_info
from .config import BenchConfig, seed_preprocessing

CLIP_SIZE = (320, 240)  # UCF101's frame size, px


def seed_preprocess(frame: np.ndarray, size: int, resize: int, device: torch.device) -> torch.Tensor:
    """What the seed code does per frame: (H, W, 3) uint8 RGB -> (1, 3, size, size) float32,
    resized (shorter side), centre-cropped, normalised, on the device."""
    x = torch.from_numpy(frame).permute(2, 0, 1).float().div(255).unsqueeze(0)
    h, w = x.shape[-2:]
    x = torch.nn.functional.interpolate(
        x,
        size=(resize, round(w * resize / h)) if h <= w else (round(h * resize / w), resize),
        mode="bilinear",
        align_corners=False,
    )
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top : top + size, left : left + size]
    pre = seed_preprocessing(size)
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


def read_all_frames(path: Path, reader: str):
    """Every frame of the video as (H, W, 3) uint8 RGB, at its full size."""
    if reader == "opencv":
        import cv2

        cap = cv2.VideoCapture(str(path))
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
    info = video_info(path)
    args = [ffmpeg_binary(), "-nostdin", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    stdout = proc.stdout
    assert isinstance(stdout, io.BufferedReader)  # stdout=PIPE with the default buffering
    try:
        while True:
            frame = np.empty((info.height, info.width, 3), np.uint8)
            view = memoryview(frame).cast("B")  # type: ignore[arg-type]  # numpy's stubs lack __buffer__
            if stdout.readinto(view) != frame.nbytes:
                return
            yield frame
    finally:
        proc.kill()
        proc.wait()


def measure_baseline(paths: list[Path], cfg: BenchConfig, device: torch.device, model: torch.nn.Module) -> dict:
    """The seed articles' method on these clips: every frame, fp32, NCHW, batch of one, and
    the features copied back after each frame. Frames are resized and cropped to the same
    size as end to end (the seed code fed the full 320x240 frame, 1.5x the pixels of 224
    px: the comparison is, if anything, kind to the baseline). Model build is not timed."""
    reader = cfg.baseline_reader
    if reader == "auto":
        try:
            import cv2  # noqa: F401

            reader = "opencv"
        except ImportError:
            reader = "ffmpeg"
    frames = 0
    t0 = time.perf_counter()
    # PyTorch's defaults, as the seed code ran: no cuDNN benchmark (stage one switches it
    # on process-wide), and cuDNN may run the "fp32" convolutions as TF32 on Ampere and later.
    with (
        torch.no_grad(),
        torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=True),
    ):
        for path in paths:
            for frame in read_all_frames(path, reader):
                model(seed_preprocess(frame, cfg.size, cfg.resize, device)).cpu().numpy()
                frames += 1
    wall = time.perf_counter() - t0
    return {
        "videos_per_s": len(paths) / wall,
        "images_per_s": frames / wall,
        "clips": len(paths),
        "frames": frames,
        "seconds": wall,
        "reader": reader,
        "size": cfg.size,
        "precision": "fp32 weights; on CUDA, PyTorch's defaults: cuDNN convolutions may use TF32, no cudnn.benchmark",
    }
