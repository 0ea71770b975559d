"""Each of stage one's decoders alone, as stage one calls it, one thread per core; the fastest
is the decode ceiling."""

from __future__ import annotations

import concurrent.futures as cf
import resource
import threading
import time
from pathlib import Path

import numpy as np

from stages.extract.config import DECODERS

from ..extract import DecodeJob, decode_video, decoder_processes
from .config import BenchConfig

# Videos each decoder decodes per round, at least (the clips, as many times over as needed):
# 8 CPU clips once would be over in a fraction of a second.
DECODE_VIDEOS = 64


# Timed alone: every decoder as stage one runs it, and PyAV on threads of this process
# (how stage one ran it first: its price on many cores is the GIL, see extract/decode/processes.py).
TIMED_DECODERS = (*DECODERS, "pyav-threads")


def measure_decoder(name: str, paths: list[Path], cfg: BenchConfig) -> dict:
    """One decoder alone, as stage one calls it (decode_video into one buffer per thread, pyav
    through its decoder processes), in cfg.workers threads, over the clips as many times as
    it takes to decode DECODE_VIDEOS. name: one of TIMED_DECODERS.

    CPU ms per video counts every thread of this process, every ffmpeg process it waited
    for and the decoder processes; videos/s is wall-clock over the same videos. A first
    untimed pass over `workers` clips pays the one-off costs (imports, starting the decoder
    processes, the CLI's capability probes, the page cache).
    """
    jobs = paths * -(-DECODE_VIDEOS // len(paths))
    buffers = threading.local()
    job = DecodeJob(cfg.frames, cfg.size, cfg.resize, decoder="pyav" if name == "pyav-threads" else name)

    def one(path: Path) -> None:
        if not hasattr(buffers, "out"):  # one buffer per thread, as stage one gives each decoder a slot
            buffers.out = np.empty(job.shape(), np.uint8)
        dec = decode_video(path, job, out=buffers.out, workers=cfg.workers, procs=procs)
        if dec.error:
            raise RuntimeError(f"decoder {name} failed on bench clip {path.name}: {dec.error}")

    with (
        decoder_processes(name, cfg.workers) as procs,
        cf.ThreadPoolExecutor(cfg.workers) as pool,
    ):
        used = lambda: cpu_seconds() + (procs.cpu_seconds() if procs else 0.0)
        list(pool.map(one, paths[: cfg.workers]))
        cpu0, t0 = used(), time.perf_counter()
        list(pool.map(one, jobs))
        wall, cpu = time.perf_counter() - t0, used() - cpu0
    return {
        "cpu_ms_per_video": 1000 * cpu / len(jobs),
        "videos_per_s": len(jobs) / wall,
        "cores_busy": cpu / wall,
        "videos": len(jobs),
        "threads": cfg.workers,
        "processes": {"pyav": cfg.workers, "ffmpeg-cli": "one per video"}.get(name, 0),
    }


def cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its waited-for children (ffmpeg)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def best_of_decoders(rounds: list[dict]) -> dict:
    """{name: {cpu_ms_per_video (lowest), videos_per_s (highest), ..., and each round's}} from
    the rounds' {name: measure_decoder(...)}: each figure's best, as for the other parts."""
    out = {}
    for name in TIMED_DECODERS:
        runs = [r[name] for r in rounds]
        out[name] = max(runs, key=lambda run: run["videos_per_s"]) | {
            "cpu_ms_per_video": min(run["cpu_ms_per_video"] for run in runs),
            "rounds_cpu_ms_per_video": [run["cpu_ms_per_video"] for run in runs],
            "rounds_videos_per_s": [run["videos_per_s"] for run in runs],
        }
    return out


def ceiling_of(decoders: dict, cfg: BenchConfig) -> dict:
    """The decode ceiling: the fastest decoder's videos/s (in each round too: that round's fastest)."""
    fastest = max(decoders, key=lambda name: decoders[name]["videos_per_s"])
    per_round = zip(*(d["rounds_videos_per_s"] for d in decoders.values()))
    return {
        "videos_per_s": decoders[fastest]["videos_per_s"],
        "decoder": fastest,
        "threads": cfg.workers,
        "frames_per_s": decoders[fastest]["videos_per_s"] * cfg.frames,
        "rounds_videos_per_s": [max(values) for values in per_round],
    }
