"""Stage one end to end through its public entry point (extract_features), pictures and sound."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.files import atomic_write_bytes
from stages.extract.config import ExtractConfig

from ..extract import extract_features
from ..samples import make_dense_bench_video, make_sound_bench_clips
from .config import BenchConfig
from .decoders import cpu_seconds
from .usage import process_usage, usage_since


# ---------------------------------------------------------------- measurements
def measure_audio(cfg: BenchConfig) -> dict:
    """Stage one with MODALITY=audio (the default log-mel summary) end to end on cfg.clips
    UCF101-like clips with a 44.1 kHz stereo MP3 sound track, into a temporary store: videos/s,
    and CPU ms per video over every thread and ffmpeg process (picture times included)."""
    folder = cfg.clips_path / f"sound-{cfg.seconds:g}s"
    paths = make_sound_bench_clips(folder, cfg.audio_clips, cfg.seconds)
    csv = folder / f"bench-{cfg.audio_clips}.csv"
    atomic_write_bytes(csv, ("path,label\n" + "".join(f"{p.name},bench\n" for p in paths)).encode())
    with tempfile.TemporaryDirectory(prefix="vidstore-bench-") as tmp:
        acfg = ExtractConfig(
            dataset="csv",
            data_dir=csv,
            features_root=Path(tmp),
            name="bench",
            frames=cfg.frames,
            modality="audio",
            workers=cfg.workers,
            decoder=cfg.decoder,
        )
        cpu0 = cpu_seconds()
        s = extract_features(acfg, quiet=True)
        cpu = cpu_seconds() - cpu0
    videos = s.computed + s.failed
    return {
        "videos": videos,
        "failed": s.failed,
        "seconds": s.elapsed,
        "videos_per_s": videos / s.elapsed,
        "cpu_ms_per_video": 1000 * cpu / videos,
        "features": "logmel",
    }


def measure_end_to_end(cfg: BenchConfig, csv: Path, tmp: Path, devices: str = "") -> dict:
    """extract_features with the project's defaults and the bench's backbone on the bench clips, into
    a temp store (with `devices`, one backbone process per listed device, sharing the decoders)."""
    ecfg = cfg.extract_config(
        dataset="csv",
        data_dir=csv,
        features_root=tmp / "store",
        name="bench",
        frames=cfg.frames,
        device=cfg.device,
        workers=cfg.workers,
        gpu_batch=cfg.gpu_batch,
        precision=cfg.precision,
        devices=tuple(d.strip() for d in devices.split(",") if d.strip()),
    )
    before = process_usage()
    s = extract_features(ecfg, quiet=True)
    usage = usage_since(before)
    videos = s.computed + s.failed
    t = dict(s.timings)
    return {
        "videos": videos,
        "failed": s.failed,
        "seconds": s.elapsed,
        "videos_per_s": videos / s.elapsed,
        "frames_per_s": t.get("images", 0) / s.elapsed,
        "timings": t,
        **usage,
        "page_faults_per_frame": usage["page_faults"] / max(1, t.get("images", 0)),
    }


def measure_dense(cfg: BenchConfig) -> dict:
    """Stage one on one long video (cfg.dense_seconds, 320x240 H.264, a changing picture) as a
    dense set, FRAMES=all FPS=1, with the bench's backbone and size, into a temporary store: the
    real-time factor (video seconds per wall second), the decoders' seconds per video-minute,
    and the end to end time against the backbone's own share of it."""
    video = make_dense_bench_video(cfg.clips_path / "dense", cfg.dense_seconds)
    with tempfile.TemporaryDirectory(prefix="vidstore-bench-") as tmp:
        csv = Path(tmp) / "dense.csv"
        atomic_write_bytes(csv, f"path\n{video}\n".encode())
        ecfg = cfg.extract_config(
            dataset="csv", data_dir=csv, features_root=Path(tmp) / "store", name="bench-dense", frames="all",
            fps=1.0, device=cfg.device, workers=cfg.workers, gpu_batch=cfg.gpu_batch, precision=cfg.precision,
        )  # fmt: skip
        s = extract_features(ecfg, quiet=True)
    if s.failed:
        raise RuntimeError(f"the dense bench video failed: {s.failures[0]['reason']}")
    t = dict(s.timings)
    minutes = cfg.dense_seconds / 60
    return {
        "video_seconds": cfg.dense_seconds,
        "rows": t.get("images", 0),
        "seconds": s.elapsed,
        "real_time_factor": cfg.dense_seconds / s.elapsed,
        "decode_s_per_video_minute": t.get("decode", 0.0) / minutes,
        "backbone_s": t.get("backbone", 0.0),
        "end_to_end_vs_backbone": s.elapsed / t["backbone"] if t.get("backbone") else None,
        "timings": t,
    }
