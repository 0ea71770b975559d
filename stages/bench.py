"""`make bench`: how fast stage one is, next to what bounds it and what it replaces.

One run, on the same generated UCF101-like clips (320x240, 25 fps, mpeg4 in AVI; pipeline/synth/corpus.py):

    end to end   stage one with the project's defaults (extract_features) into a temp store
    decoders     each of stage one's decoders alone (pyav, ffmpeg-cli) on the same clips, as
                 stage one calls it, one thread per core: CPU ms per video (every thread and
                 child process) and videos/s; the fastest is the decode ceiling, what stage
                 one could reach if the rest were free
    backbone     ResNet-50 alone on synthetic frames, stage one's settings; with
                 --compile also torch.compile's cost, gain and break-even dataset size
    baseline     the seed articles' method: every frame read, a fresh fp32 forward per
                 frame, batch of one, on the first few of the same clips
    train        stage two: 50 LSTM epochs on UCF101-sized features, loading included

It prints a table with the ratios and the profile of stage one, and writes
bench/results.json. Weights are seeded random (speed does not depend on their values,
and no download is needed). On a CPU the defaults are small (8 clips, 112 px instead of
224, so it finishes in minutes) and the output says so; on CUDA they are UCF101-scale.
Compare figures of one run with each other: a shared machine is noisy.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import allocator, console, store
from pipeline.config import DECODERS, IMAGENET_MEAN, IMAGENET_STD, ExtractConfig, TrainConfig, config_json, repo_root
from pipeline.devices import inference_precision, resolve_device, training_precision
from pipeline.errors import BenchError, ConfigError
from pipeline.ffmpeg import ffmpeg_binary, find_binary
from pipeline.files import atomic_write_bytes
from pipeline.synth import make_bench_clips, make_sound_bench_clips

from .extract import extract_features
from .extract.backbone import FeatureExtractor, build_resnet50
from .extract.decode import decode_video, decoder_processes, decoder_versions, ffmpeg_version
from .extract.decode_cli import decode_threads, probe
from .extract.video import read_avi_header
from .extract.weights import WeightsSpec
from .train import train
from .train.loop import make_optimizer, seed_everything, train_step, warmup_cosine
from .train.models import build_model
from .train.sources import Batch
from .train.spec import PROJECTED

RANDOM_WEIGHTS = WeightsSpec("random", "random:seed0", None, 0)
CLIP_SIZE = (320, 240)  # UCF101's frame size, px
READERS = ("auto", "opencv", "ffmpeg")
# Videos each decoder decodes per round, at least (the clips, as many times over as needed):
# 8 CPU clips once would be over in a fraction of a second.
DECODE_VIDEOS = 64


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark settings; 0 means "the default for this device" (CPU / CUDA)."""

    clips: int = 0  # clips measured end to end and by the ceiling: 8 / 2048
    seconds: float = 7.0  # length of each clip, s (UCF101: ~7 s)
    workers: int = 0  # stage one's decoders, and the threads each decoder is timed with: all cores
    decoder: str = DECODERS[0]  # stage one's decoder end to end (every decoder is also timed alone)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    size: int = 0  # crop fed to ResNet-50, px: 112 / 224 (224 is stage one's default)
    frames: int = 16  # T, frames sampled per video
    gpu_batch: int = 0  # frames per backbone batch: stage one's default (32 / 512)
    precision: str = "auto"  # stage one's: fp32 on CPU, fp16 on CUDA
    compile: bool = False  # also measure torch.compile: compile time, images/s, break-even
    baseline_clips: int = 0  # clips run through the seed method: 2 / 16
    audio_clips: int = 0  # clips with a sound track for the audio set: all of `clips` / 256 (it is CPU work)
    baseline_reader: str = "auto"  # auto (OpenCV if installed, else ffmpeg) | opencv | ffmpeg
    backbone_seconds: float = 0.0  # how long to time the backbone alone: 6 / 10 s
    rounds: int = 2  # rounds of ceiling, end to end and baseline, alternating; the best of each counts
    train_epochs: int = 50  # LSTM epochs timed; fewer are scaled to 50 and labelled so
    skip_train: bool = False
    devices: str = ""  # also end to end with DEVICES= (one backbone process per entry), e.g. cuda:0,cuda:0
    clips_dir: Path | None = None  # default bench/clips
    out: Path | None = None  # default bench/results.json

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"--rounds: must be >= 1, got {self.rounds!r}")
        for name in ("clips", "workers", "size", "gpu_batch", "baseline_clips", "audio_clips", "train_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(self, name)!r}")
        if self.size and self.size < 32:
            raise ConfigError(f"--size: ResNet-50 needs at least 32 px, got {self.size}")
        if not self.seconds * 25 >= 3:
            raise ConfigError(f"--seconds: a clip needs at least 3 frames at 25 fps, got {self.seconds!r} s")
        if self.frames < 1:
            raise ConfigError(f"--frames: must be >= 1, got {self.frames!r}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"--decoder (DECODER=): choose one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.baseline_reader not in READERS:
            raise ConfigError(f"--baseline-reader: choose one of {', '.join(READERS)}, got {self.baseline_reader!r}")

    def resolved(self) -> BenchConfig:
        """The same settings with every 0 replaced by this machine's default."""
        cuda = resolve_device(self.device).type == "cuda"
        pick = lambda value, cpu, gpu: value or (gpu if cuda else cpu)
        return dataclasses.replace(
            self,
            clips=pick(self.clips, 8, 2048),
            workers=self.workers or os.cpu_count() or 1,
            size=pick(self.size, 112, 224),
            gpu_batch=pick(self.gpu_batch, 32, 512),
            baseline_clips=pick(self.baseline_clips, 2, 16),
            audio_clips=self.audio_clips or (min(256, self.clips or 2048) if cuda else self.clips or 8),
            backbone_seconds=pick(self.backbone_seconds, 6.0, 10.0),
            clips_dir=Path(self.clips_dir or repo_root() / "bench" / "clips"),
            out=Path(self.out or repo_root() / "bench" / "results.json"),
        )

    @property
    def resize(self) -> int:
        return ExtractConfig(image_size=self.size).resize_to

    @property
    def results_path(self) -> Path:
        """`out` once resolved() has filled in the default."""
        if self.out is None:
            raise ValueError("BenchConfig.resolved() gives `out` its default")
        return self.out

    @property
    def clips_path(self) -> Path:
        """`clips_dir` once resolved() has filled in the default."""
        if self.clips_dir is None:
            raise ValueError("BenchConfig.resolved() gives `clips_dir` its default")
        return self.clips_dir


def run_bench(cfg: BenchConfig) -> dict:
    """Measure everything (ceiling, end to end and baseline: the best of cfg.rounds alternating
    rounds); print the table; write and return the results (JSON-able)."""
    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    precision = inference_precision(cfg.precision, device)
    cpu_note = device.type == "cpu" and cfg.size != 224
    notes = [
        "weights: seeded random (the speed of ResNet-50 does not depend on its weights)",
        f"decoders, end to end and baseline: the best of {cfg.rounds} alternating round(s) each (a shared machine "
        f"is noisy)",
        "decoders: CPU ms per video counts every thread of this process, every ffmpeg process it waited for and "
        "the PyAV decoder processes",
    ]
    if cpu_note:
        notes.append(
            f"CPU: images are {cfg.size} px instead of stage one's 224, for end to end, backbone and baseline alike"
        )
    console.say(
        f"bench: {cfg.clips} clips of {cfg.seconds:g} s, T={cfg.frames}, {cfg.size} px, {device} ({precision}), "
        f"batch {cfg.gpu_batch}, {cfg.workers} decoders" + (" (CPU default size; 224 on GPU)" if cpu_note else "")
    )
    paths, csv = prepare_clips(cfg)
    results: dict = {
        "settings": settings_of(cfg, device, precision),
        "machine": describe_machine(device),
        "notes": notes,
    }
    baseline_model = build_resnet50(RANDOM_WEIGHTS).to(device).eval()  # built once, never timed
    rounds: dict[str, list[dict]] = {"decoders": [], "end_to_end": [], "baseline": []}
    for r in range(cfg.rounds):
        with tempfile.TemporaryDirectory(prefix="vidstore-bench-") as tmp:
            order = TIMED_DECODERS if r % 2 == 0 else TIMED_DECODERS[::-1]
            console.say(
                f"round {r + 1}/{cfg.rounds}: 1/5 decoders alone: {', '.join(order)}, {cfg.workers} threads ..."
            )
            rounds["decoders"].append({name: measure_decoder(name, paths, cfg) for name in order})
            console.say(f"round {r + 1}/{cfg.rounds}: 2/5 stage one end to end ...")
            rounds["end_to_end"].append(measure_end_to_end(cfg, csv, Path(tmp)))
        console.say(
            f"round {r + 1}/{cfg.rounds}: 3/5 baseline: the seed method on {min(cfg.baseline_clips, len(paths))} clip(s) ..."
        )
        rounds["baseline"].append(measure_baseline(paths[: cfg.baseline_clips], cfg, device, baseline_model))
    results["decoder"] = cfg.decoder
    results["decoders"] = best_of_decoders(rounds.pop("decoders"))
    results["decode_ceiling"] = ceiling_of(results["decoders"], cfg)
    for part, runs in rounds.items():
        results[part] = max(runs, key=lambda run: run["videos_per_s"]) | {
            "rounds_videos_per_s": [run["videos_per_s"] for run in runs]
        }
    write_results(results | headline(results, cfg), cfg.results_path)  # each part's figures kept as soon as measured
    if cfg.devices:
        console.say(f"    stage one end to end with DEVICES={cfg.devices} ...")
        with tempfile.TemporaryDirectory(prefix="vidstore-bench-") as tmp:
            results["end_to_end_devices"] = measure_end_to_end(cfg, csv, Path(tmp), devices=cfg.devices) | {
                "devices": cfg.devices
            }
        write_results(results | headline(results, cfg), cfg.results_path)
    console.say("4/5 backbone alone ...")
    results["backbone"] = measure_backbone(cfg, device, precision)
    write_results(results | headline(results, cfg), cfg.results_path)
    console.say(f"    the audio set of {cfg.audio_clips} clips with a sound track (MODALITY=audio, log-mel) ...")
    try:
        results["audio"] = measure_audio(cfg)
    except Exception as e:  # reported, and the bench fails at the end; the other figures still count
        results["audio"] = {"error": f"{type(e).__name__}: {e}"[:3000]}
        console.say(f"bench: the audio set could not be measured: {results['audio']['error']}")
    if cfg.compile:
        console.say("    torch.compile (this takes minutes) ...")
        results["compile"] = measure_compile(cfg, device, precision, results)
    if cfg.skip_train:
        results["train"] = {"skipped": "--skip-train"}
    else:
        # Stage one's figures first: on a CPU, 50 epochs take most of an hour.
        results["train"] = {"skipped": "being measured"}
        results.update(headline(results, cfg))
        write_results(results, cfg.results_path)
        console.say(format_report(results))
        console.say(
            f"\nwrote {cfg.out} (stage one); 5/5 stage two: {cfg.train_epochs} LSTM epochs on UCF101-sized features"
            + (
                " (about a minute per epoch on a 2-core CPU; TRAIN_EPOCHS=n or SKIP_TRAIN=1 to shorten) ..."
                if device.type == "cpu"
                else " ..."
            )
        )
        results["train"] = measure_training(cfg, device)
    results.update(headline(results, cfg))
    write_results(results, cfg.results_path)
    console.say(format_report(results) if cfg.skip_train else train_line(results["train"]))
    console.say(f"\nwrote {cfg.out}")
    failed = [part for part, figures in results.items() if isinstance(figures, dict) and "error" in figures]
    if failed:
        raise BenchError(f"bench: {', '.join(failed)} could not be measured (the rest is in {cfg.out}); see above")
    return results


def write_results(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, (json.dumps(results, indent=2, default=str) + "\n").encode())


# ---------------------------------------------------------------- clips
def prepare_clips(cfg: BenchConfig) -> tuple[list[Path], Path]:
    """The first cfg.clips bench clips (made once, then reused) and a CSV listing exactly them."""
    folder = cfg.clips_path / f"{cfg.seconds:g}s"
    missing = sum(not (folder / f"bench_{i:04d}.avi").exists() for i in range(cfg.clips))
    if missing:
        console.say(f"generating {missing} clip(s) under {folder} (once; later runs reuse them) ...")
    paths = make_bench_clips(folder, cfg.clips, cfg.seconds)
    csv = folder / f"bench-{cfg.clips}.csv"
    atomic_write_bytes(csv, ("path,label\n" + "".join(f"{p.name},bench\n" for p in paths)).encode())
    return paths, csv


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
    """extract_features with the project's defaults on the bench clips, into a temp store
    (with `devices`, one backbone process per listed device, sharing the decoders)."""
    ecfg = ExtractConfig(
        dataset="csv",
        data_dir=csv,
        features_root=tmp / "store",
        name="bench",
        frames=cfg.frames,
        image_size=cfg.size,
        weights="random",
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


def process_usage() -> dict:
    """Page faults (minor + major) and user/system CPU seconds so far, of this process and of
    its children that have been waited for (ffmpeg-cli's processes, stopped decoder processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "page_faults": sum(u.ru_minflt + u.ru_majflt for u in (me, kids)),
        "cpu_user_s": me.ru_utime + kids.ru_utime,
        "cpu_system_s": me.ru_stime + kids.ru_stime,
    }


def usage_since(before: dict) -> dict:
    """process_usage() now minus `before`, with the system share of the CPU seconds: the kernel's
    work (page faults, zeroing pages) next to the process's own."""
    d = {k: v - before[k] for k, v in process_usage().items()}
    return d | {"system_cpu_share": d["cpu_system_s"] / max(1e-9, d["cpu_user_s"] + d["cpu_system_s"])}


# Timed alone: every decoder as stage one runs it, and PyAV on threads of this process
# (how stage one ran it first: its price on many cores is the GIL, see decode_procs.py).
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
    decoder = "pyav" if name == "pyav-threads" else name

    def one(path: Path) -> None:
        if not hasattr(buffers, "out"):  # one buffer per thread, as stage one gives each decoder a slot
            buffers.out = np.empty((cfg.frames, cfg.size, cfg.size, 3), np.uint8)
        dec = decode_video(
            path, cfg.frames, cfg.size, cfg.resize, out=buffers.out, decoder=decoder, workers=cfg.workers, procs=procs
        )
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


def time_backbone(extractor: FeatureExtractor, x: torch.Tensor, seconds: float) -> float:
    """images/s of extractor.embed on the device-resident uint8 batch x, after 2 warm-up
    calls, on the extractor's own thread (as stage one runs it)."""
    return extractor.submit(time_embed, extractor, x, seconds).result()


def time_embed(extractor: FeatureExtractor, x: torch.Tensor, seconds: float) -> float:
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
    precision, batch and channels_last (FeatureExtractor.embed, exactly what stage one runs)."""
    ext = FeatureExtractor(RANDOM_WEIGHTS, str(device), precision)
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
    ext = FeatureExtractor(RANDOM_WEIGHTS, str(device), precision, compile=True)
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
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
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
    info = read_avi_header(path) or probe(path)
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


def measure_training(cfg: BenchConfig, device: torch.device) -> dict:
    """Stage two's own timing of LSTM epochs on UCF101-sized features (stages/train.py)."""
    t0, before = time.perf_counter(), process_usage()
    seconds = time_training(epochs=cfg.train_epochs, device=str(device))
    wall = time.perf_counter() - t0
    out: dict[str, object] = {"epochs": cfg.train_epochs, "seconds": seconds, "wall_s": wall, **usage_since(before)}
    if cfg.train_epochs == 50:
        out["train_50_epochs_s"] = seconds
    else:
        out["train_50_epochs_s"] = seconds * 50 / cfg.train_epochs
        out["extrapolated"] = (
            f"from {cfg.train_epochs} measured epoch(s), scaled linearly to 50 (loading and "
            f"evaluation scaled too: an overestimate)"
        )
    return out


# ---------------------------------------------------------------- report
def headline(r: dict, cfg: BenchConfig) -> dict:
    """The top-level keys of results.json."""
    e2e, ceiling, base = r["end_to_end"], r["decode_ceiling"], r["baseline"]
    return {
        "videos_per_s": e2e["videos_per_s"],
        "frames_per_s": e2e["frames_per_s"],
        "decode_ceiling_videos_per_s": ceiling["videos_per_s"],
        "baseline_videos_per_s": base["videos_per_s"],
        "backbone_images_per_s": r.get("backbone", {}).get("images_per_s"),
        "audio_videos_per_s": r.get("audio", {}).get("videos_per_s"),
        "audio_cpu_ms_per_video": r.get("audio", {}).get("cpu_ms_per_video"),
        "train_50_epochs_s": r.get("train", {}).get("train_50_epochs_s"),
        "ratios": {
            "end_to_end_vs_ceiling": e2e["videos_per_s"] / ceiling["videos_per_s"],
            "end_to_end_vs_baseline": e2e["videos_per_s"] / base["videos_per_s"],
            # within each round (measured minutes apart, under the same load)
            "end_to_end_vs_ceiling_by_round": by_round(e2e, ceiling),
            "end_to_end_vs_baseline_by_round": by_round(e2e, base),
            "decoder_vs_ffmpeg_cli": against_cli(r["decoders"], r["decoder"]),
        },
    }


def by_round(a: dict, b: dict, key: str = "videos_per_s") -> list[float]:
    return [x / y for x, y in zip(a.get(f"rounds_{key}", []), b.get(f"rounds_{key}", []))]


def against_cli(decoders: dict, name: str) -> dict:
    """Decoder `name` over ffmpeg-cli: CPU per video (lower is better) and videos/s, best
    figures and within each round (the two decoders timed back to back)."""
    mine, cli = decoders[name], decoders["ffmpeg-cli"]
    return {
        "decoder": name,
        "cpu_ms_per_video": mine["cpu_ms_per_video"] / cli["cpu_ms_per_video"],
        "videos_per_s": mine["videos_per_s"] / cli["videos_per_s"],
        "cpu_ms_per_video_by_round": by_round(mine, cli, "cpu_ms_per_video"),
        "videos_per_s_by_round": by_round(mine, cli),
    }


def profile_lines(e2e: dict, workers: int) -> list[str]:
    """Where stage one's time went, as shares of its elapsed seconds."""
    t, wall = e2e["timings"], e2e["seconds"]
    pct = lambda s: f"{100 * s / wall:5.1f}%"
    lines = [
        f"  model load + warm-up         {t.get('model_load', 0):8.2f} s  {pct(t.get('model_load', 0))} (in the background, "
        f"while the first videos decode)",
        f"  decode (per decoder)         {t['decode'] / workers:8.2f} s  {pct(t['decode'] / workers)} busy, "
        f"each of {workers} decoders",
        f"  host-to-device copies        {t.get('transfer', 0):8.2f} s  {pct(t.get('transfer', 0))}",
        f"  backbone (inference)         {t.get('backbone', 0):8.2f} s  {pct(t.get('backbone', 0))} busy",
        f"  features to shards           {t.get('scatter', 0):8.2f} s  {pct(t.get('scatter', 0))}",
        f"  shard writes (writer thread) {t['write']:8.2f} s  {pct(t['write'])}",
        f"  inference loop's own CPU     {t.get('inference_cpu', 0):8.2f} s  {pct(t.get('inference_cpu', 0))} "
        f"(on CUDA: launching and scattering, asleep while the GPU works; on a CPU the backbone runs here)",
        f"  waiting: inference thread for frames {t.get('starved', 0):.2f} s, main thread for decoders {t['wait']:.2f} s, "
        f"for the backbone {t.get('feed_wait', 0):.2f} s",
    ]
    decode_busy, gpu_busy = t["decode"] / workers / wall, (t.get("backbone", 0) + t.get("transfer", 0)) / wall
    bound = "backbone-bound" if gpu_busy > decode_busy else "decode-bound"
    lines.append(f"  => {bound}: backbone busy {100 * gpu_busy:.0f}% of the run, decoders {100 * decode_busy:.0f}%")
    if "page_faults" in e2e:
        lines.append(
            f"  page faults {e2e['page_faults']:,} ({e2e['page_faults_per_frame']:,.0f} per embedded frame); system "
            f"CPU {100 * e2e['system_cpu_share']:.0f}% of {e2e['cpu_user_s'] + e2e['cpu_system_s']:.1f} CPU s"
        )
    return lines


def format_report(r: dict) -> str:
    s, m = r["settings"], r["machine"]
    e2e, ceil, bb, base, tr = r["end_to_end"], r["decode_ceiling"], r["backbone"], r["baseline"], r["train"]
    gpu = f"{m['gpu']} ({m['gpu_memory_gib']:.0f} GiB)" if m.get("gpu") else "no GPU"
    rows = [
        (
            "stage one end to end",
            f"{e2e['videos_per_s']:.3g} videos/s",
            f"{e2e['frames_per_s']:.3g} frames/s; "
            f"{e2e['videos']} videos in {e2e['seconds']:.1f} s, everything included",
        ),
        (
            "decode ceiling (fastest decoder)",
            f"{ceil['videos_per_s']:.3g} videos/s",
            f"{ceil['decoder']} alone, {ceil['threads']} threads (see the decoders below)",
        ),
        (
            "backbone alone",
            f"{bb['images_per_s']:.4g} images/s",
            f"batch {bb['batch']}, {bb['precision']}, channels_last, uint8 in"
            + (f"; host-to-device {bb['h2d_images_per_s']:.3g} images/s" if "h2d_images_per_s" in bb else ""),
        ),
        (
            "baseline (seed method)",
            f"{base['videos_per_s']:.3g} videos/s",
            f"{base['images_per_s']:.3g} images/s; every frame, fp32, batch 1, {base['reader']}; {base['clips']} clip(s)",
        ),
    ]
    rows.append(train_row(tr))
    if r.get("audio", {}).get("error"):
        rows.append(("audio set end to end (log-mel)", "not measured", r["audio"]["error"].splitlines()[0][:200]))
    elif r.get("audio"):
        a = r["audio"]
        rows.append(
            (
                "audio set end to end (log-mel)",
                f"{a['videos_per_s']:.3g} videos/s",
                f"{a['cpu_ms_per_video']:.0f} CPU ms per video (picture times and sound); {a['videos']} clips "
                f"with 44.1 kHz stereo MP3",
            )
        )
    if r.get("end_to_end_devices"):
        d = r["end_to_end_devices"]
        rows.append(
            (
                f"end to end, DEVICES={d['devices']}",
                f"{d['videos_per_s']:.3g} videos/s",
                f"one backbone process per device; {d['videos']} videos in {d['seconds']:.1f} s",
            )
        )
    for i, part in enumerate((e2e, ceil, None, base)):
        if part and len(part.get("rounds_videos_per_s", [])) > 1:
            a, b, c = rows[i]
            rows[i] = (a, b, c + f" [rounds: {', '.join(f'{v:.3g}' for v in part['rounds_videos_per_s'])}]")
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    ratios = r["ratios"]
    out = [
        f"\nvidstore bench on {m['cpu']} ({m['cores']} cores, {m['ram_gib']:.0f} GiB RAM), {gpu}; "
        f"torch {m['torch']}, CUDA {m['cuda'] or '-'}, {m['ffmpeg_version']}; load average {m['load_average']}",
        f"{s['clips']} clips of {s['seconds']:g} s (320x240, 25 fps, mpeg4/AVI), T={s['frames']}, {s['size']} px, {s['device']} "
        f"{s['precision']}, batch {s['gpu_batch']}, {s['workers']} decoders ({r['decoder']})",
        f"allocator: {m.get('allocator', 'not recorded')}",
        *(f"note: {n}" for n in r["notes"]),
        "",
        *(f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows),
        "",
        f"end to end / decode ceiling = {ratios['end_to_end_vs_ceiling']:.2f}"
        + per_round(ratios["end_to_end_vs_ceiling_by_round"], "{:.2f}"),
        f"end to end / baseline       = {ratios['end_to_end_vs_baseline']:.1f}x"
        + per_round(ratios["end_to_end_vs_baseline_by_round"], "{:.1f}x"),
        "",
        *decoder_lines(r),
        "",
        f"where stage one's {e2e['seconds']:.1f} s went:",
        *profile_lines(e2e, s["workers"]),
    ]
    if r.get("compile"):
        c = r["compile"]
        fmt = lambda v: f"{v:,.0f} videos" if v else "never (no time saved)"
        out += [
            "",
            f"torch.compile: {c['compile_s']:.0f} s to compile; backbone {bb['images_per_s']:.4g} -> "
            f"{c['images_per_s']:.4g} images/s ({c['speedup']:.2f}x); pays off after "
            f"{fmt(c['break_even_videos_backbone'])} for the backbone alone, "
            f"{fmt(c['break_even_videos_end_to_end'])} end to end (a video costing the slower of its decode "
            f"and its backbone time)",
        ]
    return "\n".join(out)


def decoder_lines(r: dict) -> list[str]:
    """Each decoder alone: CPU ms per video and videos/s (best, then each round), and the
    end-to-end decoder over ffmpeg-cli."""
    decoders, name = r["decoders"], r["decoder"]
    first = next(iter(decoders.values()))
    joined = lambda values, fmt: ", ".join(fmt.format(v) for v in values)
    lines = [
        f"decoders alone, {first['threads']} threads, {first['videos']} videos each per round "
        f"(CPU: every thread and child process):",
        f"  {'decoder':<20} {'CPU ms/video':>12} {'videos/s':>9}   per round: CPU ms/video; videos/s",
    ]
    for n, d in decoders.items():
        label = n + (" (end to end)" if n == name else "")
        lines.append(
            f"  {label:<20} {d['cpu_ms_per_video']:12.1f} {d['videos_per_s']:9.1f}   "
            f"{joined(d['rounds_cpu_ms_per_video'], '{:.1f}')}; {joined(d['rounds_videos_per_s'], '{:.1f}')}"
        )
    if "pyav-threads" in decoders:
        lines.append("  (pyav-threads: PyAV on threads of one process, as a comparison; not a DECODER= choice)")
    vs = r["ratios"]["decoder_vs_ffmpeg_cli"]
    if name != "ffmpeg-cli":
        lines.append(
            f"  {name + ' / ffmpeg-cli':<20} {vs['cpu_ms_per_video']:11.2f}x {vs['videos_per_s']:8.2f}x   "
            f"{joined(vs['cpu_ms_per_video_by_round'], '{:.2f}x')}; {joined(vs['videos_per_s_by_round'], '{:.2f}x')}"
        )
    return lines


def per_round(values: list[float], fmt: str) -> str:
    return f"  (within each round: {', '.join(fmt.format(v) for v in values)})" if len(values) > 1 else ""


def train_row(tr: dict) -> tuple[str, str, str]:
    if "skipped" in tr:
        return "stage two, 50 LSTM epochs", "not measured", tr["skipped"]
    label = "EXTRAPOLATED " + tr["extrapolated"] if "extrapolated" in tr else "measured, loading included"
    if "page_faults" in tr:
        label += f"; {tr['page_faults']:,} page faults, system CPU {100 * tr['system_cpu_share']:.0f}%"
    return "stage two, 50 LSTM epochs", f"{tr['train_50_epochs_s']:.1f} s", label


def train_line(tr: dict) -> str:
    what, figure, how = train_row(tr)
    return f"{what}: {figure} ({how})"


def settings_of(cfg: BenchConfig, device: torch.device, precision: str) -> dict:
    return config_json(cfg) | {
        "device": str(device),
        "precision": precision,
        "resize": cfg.resize,
        "decode_threads": decode_threads(cfg.workers),  # ffmpeg threads of each ffmpeg-cli process
        "clip": {"size": list(CLIP_SIZE), "fps": 25, "codec": "mpeg4", "container": "avi"},
        "weights": RANDOM_WEIGHTS.identity,
    }


def describe_machine(device: torch.device) -> dict:
    """CPU, cores, RAM, GPU, and the versions that matter for these figures."""
    cpu = platform.processor() or platform.machine()
    ram = 0.0
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), cpu)
        ram = (
            int(
                next(
                    ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
                )
            )
            / 2**20
        )
    except (OSError, StopIteration, ValueError):
        pass
    ffmpeg = find_binary("ffmpeg")
    out = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "ffmpeg": ffmpeg,
        "ffmpeg_version": ffmpeg_version(ffmpeg or ""),
        "pyav": decoder_versions("pyav"),
        "ffprobe": find_binary("ffprobe"),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "allocator": allocator.describe(),
        "gpu": None,
        "gpu_memory_gib": None,
    }
    try:
        import cv2

        out["opencv"] = cv2.__version__
    except ImportError:
        out["opencv"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out["gpu"], out["gpu_memory_gib"] = props.name, props.total_memory / 2**30
    return out


# ---------------------------------------------------------------- stage two's timing
def write_synthetic_set(
    set_dir: Path,
    n_train: int,
    n_test: int,
    frames: int = 16,
    dim: int = 2048,
    classes: int = 101,
    shard_size: int = 256,
    seed: int = 0,
) -> Path:
    """A feature set of random features in the store format (via pipeline.store), for timing.

    Videos are UCF101-like: 25 groups per class, ids "c<k>/v_c<k>_g<gg>_c<n>.avi", split "1"
    with n_train training and n_test test videos.
    """
    set_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = np.arange(n, dtype=np.int32) % classes
    ids = [f"c{y:03d}/v_c{y:03d}_g{(i // classes) % 25 + 1:02d}_c{i:05d}.avi" for i, y in enumerate(labels)]
    groups = [f"c{y:03d}/g{(i // classes) % 25 + 1:02d}" for i, y in enumerate(labels)]
    config = {"frames": frames, "image_size": 224, "weights": "synthetic"}
    identity = {
        "schema_version": 1,
        "dataset": "synthetic",
        "backbone": "none",
        "weights": "synthetic",
        "sampling": {"mode": "uniform", "frames": frames},
    }
    splits = {"1": {"train": ids[:n_train], "test": ids[n_train:]}}
    store.create(
        set_dir,
        store.new_manifest(
            "synthetic",
            "synthetic",
            identity,
            config,
            frames,
            dim,
            [f"c{y:03d}" for y in range(classes)],
            splits,
            n,
            shard_size,
            -(-n // shard_size),
        ),
    )
    for k, s in enumerate(range(0, n, shard_size)):
        e = min(n, s + shard_size)
        arrays: dict[str, np.ndarray | list[str]] = {
            "features": rng.standard_normal((e - s, frames, dim), dtype=np.float32).astype(np.float16),
            "lengths": np.full(e - s, frames, np.int32),
            "labels": labels[s:e],
            "video_ids": ids[s:e],
            "groups": groups[s:e],
            "frame_indices": np.tile(np.arange(frames, dtype=np.int32), (e - s, 1)),
            "timestamps": np.tile(np.arange(frames, dtype=np.float32), (e - s, 1)),
        }
        attrs = {"feature_set_id": "synthetic", "config": config, "shard_index": k}
        store.commit_shard(set_dir, k, store.write_shard(set_dir / store.shard_name(k), arrays, attrs), [])
    store.mark_complete(set_dir)
    return set_dir


def time_training(
    model: str = "lstm",
    n: int = 9537,
    t: int = 16,
    d: int = 2048,
    epochs: int = 50,
    device: str = "auto",
    classes: int = 101,
    n_test: int = 3783,
    workdir: Path | None = None,
    **overrides,
) -> float:
    """Wall seconds of `train()` for `epochs` epochs on a synthetic set of n training videos (T=t, D=d).

    Defaults mirror UCF101 split 1 (9,537 train / 3,783 test videos, 101 classes) and the
    default head settings (2-layer LSTM-512 after the 256-d input projection). Writing the
    synthetic shards is not timed; reading them through the reader (checksums included),
    statistics, training, the per-epoch validation, test evaluation and the run's reports
    are. Early stopping is off so every epoch runs. `overrides` go to TrainConfig.
    """
    with tempfile.TemporaryDirectory(prefix="vidstore-timing-", dir=workdir) as tmp:
        set_dir = write_synthetic_set(Path(tmp) / "features" / "synthetic" / "synthetic", n, n_test, t, d, classes)
        settings: dict[str, Any] = {
            "dataset": "synthetic",
            "features": str(set_dir),
            "model": model,
            "epochs": epochs,
            "patience": 0,
            "device": device,
            "out": Path(tmp) / "run",
            "progress": False,
        }
        cfg = TrainConfig(**(settings | overrides))
        t0 = time.perf_counter()
        result = train(cfg)
        seconds = time.perf_counter() - t0
        run = result.runs[0]
        console.say(
            f"time_training: {model}, {n} x {t} x {d}, {epochs} epochs on {resolve_device(device)}: {seconds:.1f} s "
            f"in all ({run.train_seconds:.1f} s in the training loop, {run.epochs_run} epochs)"
        )
        if run.epochs_run != epochs:
            raise RuntimeError(f"time_training: {run.epochs_run} of {epochs} epochs ran; the timing would mislead")
        return seconds


def profile_steps(
    device: str = "auto",
    precision: str = "auto",
    steps: int = 40,
    batch: int = 256,
    t: int = 16,
    d: int = 2048,
    classes: int = 101,
    top: int = 15,
    **overrides,
) -> dict:
    """Where one training step of the default head goes: wall, CPU and device time per step.

    Runs `train_step` on random standardised batches (B, T, D) already on the device (no
    reader, no epoch bookkeeping) for `steps` steps after a warm-up, then `torch.profiler`
    over 10 more. Returns {"ms_per_step", "ops_per_step", "cpu_ms_per_step",
    "device_ms_per_step", "top": [[op, calls per step, self CPU ms, self device ms]]}: when
    the host's time per step exceeds the device's, the step is launch-bound.
    """
    from torch.profiler import ProfilerActivity, profile

    dev = resolve_device(device)
    settings: dict[str, Any] = {"device": device, "precision": precision, "progress": False}
    cfg = TrainConfig(**(settings | overrides))
    autocast_dtype, data_dtype = training_precision(cfg.precision, dev)
    seed_everything(0)
    model = build_model(
        cfg.model,
        d,
        t,
        classes,
        hidden=cfg.hidden,
        layers=cfg.layers,
        bidirectional=cfg.bidirectional,
        dropout=cfg.dropout,
        proj=cfg.proj if cfg.model in PROJECTED else 0,
    ).to(dev)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, cfg, dev)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 10, 10 * steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=autocast_dtype == torch.float16)
    x = torch.randn((batch, t, d), device=dev).to(data_dtype)
    lengths = torch.full((batch,), t, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    one = Batch(x, lengths, y, np.arange(batch), torch.ones((batch, 1), dtype=torch.bool, device=dev))
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    run = lambda: train_step(model, params, one, opt, sched, scaler, cfg, autocast_dtype)
    for _ in range(5):
        run()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    sync()
    ms = 1e3 * (time.perf_counter() - t0) / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(10):
            run()
        sync()
    events = prof.key_averages()
    device_us = lambda e: getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
    top_ops = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "device": str(dev),
        "precision": str(autocast_dtype or "fp32").replace("torch.", ""),
        "batch": batch,
        "model": cfg.model,
        "ms_per_step": ms,
        "ops_per_step": sum(e.count for e in events if not e.key.startswith("ProfilerStep")) / 10,
        "cpu_ms_per_step": sum(e.self_cpu_time_total for e in events) / 1e3 / 10,
        "device_ms_per_step": sum(device_us(e) for e in events) / 1e3 / 10,
        "top": [[e.key, e.count / 10, e.self_cpu_time_total / 1e3 / 10, device_us(e) / 1e3 / 10] for e in top_ops],
    }
