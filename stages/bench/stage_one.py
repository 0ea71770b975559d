"""Stage one end to end through its public entry point (extract_features), pictures and sound."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.files import atomic_write_bytes
from stages.extract.config import ExtractConfig

from ..extract import extract_features
from ..samples import make_sound_bench_clips
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
