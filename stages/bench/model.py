"""ResNet-50 alone on synthetic frames already on the device, exactly what stage one runs; with
--compile also torch.compile's cost, gain and break-even dataset size."""

from __future__ import annotations

import time

import torch

from stages.extract.config import ExtractConfig

from ..extract import Extractor, ModelThread, WeightsSpec, family_for
from .config import BenchConfig

RANDOM_WEIGHTS = WeightsSpec("random", "random:seed0", None, 0)


def resnet50_at(size: int) -> Extractor:
    """The ResNet-50 family on size x size crops (what stage one runs with SIZE=size)."""
    return family_for(ExtractConfig(image_size=size))


def time_backbone(extractor: ModelThread, x: torch.Tensor, seconds: float) -> float:
    """images/s of extractor.embed on the device-resident uint8 batch x, after 2 warm-up
    calls, on the extractor's own thread (as stage one runs it)."""
    return extractor.submit(time_embed, extractor, x, seconds).result()


def time_embed(extractor: ModelThread, x: torch.Tensor, seconds: float) -> float:
    sync = (lambda: torch.cuda.synchronize(extractor.device)) if extractor.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(2):  # cuDNN picks its kernels (cudnn.benchmark) on the first call
            extractor.embed(x)
        sync()
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(5 if extractor.device.type == "cuda" else 1):
                extractor.embed(x)
                n += len(x)
            sync()
            wall = time.perf_counter() - t0
            if wall >= seconds:
                return n / wall


def measure_backbone(cfg: BenchConfig, device: torch.device, precision: str) -> dict:
    """ResNet-50 alone: uint8 frames already on the device, normalised there, stage one's
    precision, batch and channels_last (ModelThread.embed, exactly what stage one runs)."""
    ext = ModelThread(resnet50_at(cfg.size), RANDOM_WEIGHTS, str(device), precision)
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (cfg.gpu_batch, cfg.size, cfg.size, 3), dtype=torch.uint8, generator=gen)
    out = {
        "images_per_s": time_backbone(ext, frames.to(device), cfg.backbone_seconds),
        "batch": cfg.gpu_batch,
        "precision": precision,
        "channels_last": True,
    }
    if device.type == "cuda":
        pinned = frames.pin_memory()
        dest = torch.empty_like(pinned, device=device)
        for _ in range(3):
            dest.copy_(pinned, non_blocking=True)
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(20):
            dest.copy_(pinned, non_blocking=True)
        torch.cuda.synchronize(device)
        out["h2d_images_per_s"] = 20 * len(pinned) / (time.perf_counter() - t0)
    return out


def measure_compile(cfg: BenchConfig, device: torch.device, precision: str, results: dict) -> dict:
    """torch.compile's price (first call) and gain, and when it pays off.

    Break-even (videos): compile seconds / seconds saved per video. For the backbone alone
    a video costs T / images_per_s. End to end a video costs about the slower of decoding
    (1 / decode ceiling) and the backbone, so a decode-bound stage one gains nothing.
    """
    ext = ModelThread(resnet50_at(cfg.size), RANDOM_WEIGHTS, str(device), precision, compile=True)
    x = torch.randint(0, 256, (cfg.gpu_batch, cfg.size, cfg.size, 3), dtype=torch.uint8).to(device)

    def first_call() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            ext.embed(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    compile_s = ext.submit(first_call).result()
    compiled = time_backbone(ext, x, cfg.backbone_seconds)
    eager = results["backbone"]["images_per_s"]
    decode_s = 1 / results["decode_ceiling"]["videos_per_s"]
    saved_backbone = cfg.frames / eager - cfg.frames / compiled
    saved_e2e = max(decode_s, cfg.frames / eager) - max(decode_s, cfg.frames / compiled)
    even = lambda saved: compile_s / saved if saved > 0 else None
    return {
        "compile_s": compile_s,
        "images_per_s": compiled,
        "speedup": compiled / eager,
        "break_even_videos_backbone": even(saved_backbone),
        "break_even_videos_end_to_end": even(saved_e2e),
    }
