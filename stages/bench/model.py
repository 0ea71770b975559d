"""The backbone alone (ResNet-50 or BACKBONE=) on synthetic frames already on the device, exactly
what stage one runs; with --compile also torch.compile's cost, gain and break-even dataset size."""

from __future__ import annotations

import time

import torch

from pipeline.devices import inference_precision, resolve_device

from ..extract import Extractor, ModelThread, WeightsSpec, family_for
from ..extract.extractors import CLIPS
from .config import BenchConfig

RANDOM_WEIGHTS = WeightsSpec("random", "random:seed0", None, 0)


def bench_family(cfg: BenchConfig) -> tuple[Extractor, WeightsSpec | None]:
    """The backbone the bench times, as stage one builds it at SIZE=, and its weights: `random` is
    seeded without the random-weights banner (the bench says so once, in its notes)."""
    family = family_for(cfg.extract_config())
    return family, RANDOM_WEIGHTS if cfg.weights == "random" else family.resolve_weights()


def random_frames(family: Extractor, batch: int) -> torch.Tensor:
    """(batch, *item_shape) uint8 centre crops as the decoders hand them to the backbone, seeded."""
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, *family.item_shape()), dtype=torch.uint8, generator=gen)


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
    """The backbone alone: uint8 frames already on the device, normalised there, stage one's
    precision, batch and channels_last (ModelThread.embed, exactly what stage one runs)."""
    family, weights = bench_family(cfg)
    ext = ModelThread(family, weights, str(device), precision)
    frames = random_frames(family, cfg.gpu_batch)
    items_per_s = time_backbone(ext, frames.to(device), cfg.backbone_seconds)
    clip = family.decodes == CLIPS  # a clip model's item is a clip of K frames: (B, K, S, S, 3)
    out = {
        "images_per_s": items_per_s,  # items/s: a clip model's clips
        "unit": "clips" if clip else "images",
        "frames_per_s": items_per_s * (frames.shape[1] if clip else 1),
        "backbone": cfg.backbone,
        "dim": family.dim,
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
    family, weights = bench_family(cfg)
    ext = ModelThread(family, weights, str(device), precision, compile=True)
    x = random_frames(family, cfg.gpu_batch).to(device)

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


def measure_backbones(device: str, backbones: tuple[str, ...], seconds: float = 0.0) -> dict[str, dict]:
    """Each backbone alone, seeded random weights, at the bench's defaults for `device` (CUDA: the
    model's own size, fp16; a CPU: 112 px, fp32; stage one's batch), as the bench's "backbone"
    figures plus the size: {backbone: figures}. What `make gpu-check` puts beside ResNet-50."""
    out = {}
    for backbone in backbones:
        cfg = BenchConfig(device=device, backbone=backbone, backbone_seconds=seconds).resolved()
        dev = resolve_device(cfg.device)
        out[backbone] = measure_backbone(cfg, dev, inference_precision(cfg.precision, dev)) | {"size": cfg.size}
    return out
