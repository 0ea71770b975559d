"""One bench run: clips, each measurement in rounds, the report, bench/results.json."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline import console
from pipeline.devices import inference_precision, resolve_device
from pipeline.files import atomic_write_bytes

from ..extract import build_resnet50
from ..samples import make_bench_clips
from .baseline import measure_baseline
from .config import SEED_BACKBONE, BenchConfig, BenchError, own_size
from .decoders import TIMED_DECODERS, best_of_decoders, ceiling_of, measure_decoder
from .model import RANDOM_WEIGHTS, measure_backbone, measure_compile
from .report import describe_machine, format_report, headline, settings_of, train_line
from .stage_one import measure_audio, measure_dense, measure_end_to_end
from .training import measure_training


def run_bench(cfg: BenchConfig) -> dict:
    """Measure everything (ceiling, end to end and baseline: the best of cfg.rounds alternating
    rounds); print the table; write and return the results (JSON-able)."""
    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    precision = inference_precision(cfg.precision, device)
    own = own_size(cfg.backbone)  # stage one's default size for this backbone
    cpu_note = device.type == "cpu" and cfg.size != own
    notes = [
        f"backbone: {cfg.backbone}, "
        + (
            "seeded random weights (its speed does not depend on their values)"
            if cfg.weights == "random"
            else f"weights {cfg.weights}"
        ),
        f"decoders, end to end and baseline: the best of {cfg.rounds} alternating round(s) each (a shared machine "
        f"is noisy)",
        "decoders: CPU ms per video counts every thread of this process, every ffmpeg process it waited for and "
        "the PyAV decoder processes",
    ]
    if cfg.backbone != SEED_BACKBONE:
        notes.append(
            "baseline: the seed method is ResNet-50's, whatever BACKBONE= says; the decoders alone scale to "
            "ResNet-50's ratio (size x 256/224), end to end to the backbone's own"
        )
    if cpu_note:
        notes.append(
            f"CPU: images are {cfg.size} px instead of stage one's {own}, for end to end, backbone and baseline alike"
        )
    console.say(
        f"bench: {cfg.backbone}, {cfg.clips} clips of {cfg.seconds:g} s, T={cfg.frames}, {cfg.size} px, {device} ({precision}), "
        f"batch {cfg.gpu_batch}, {cfg.workers} decoders" + (f" (CPU default size; {own} on GPU)" if cpu_note else "")
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
    results["audio"] = figures_or_error("the audio set", measure_audio, cfg)
    if cfg.dense_seconds:
        console.say(f"    a dense set (FRAMES=all FPS=1) of one {cfg.dense_seconds:g} s video ...")
        results["dense"] = figures_or_error("the dense set", measure_dense, cfg)
        write_results(results | headline(results, cfg), cfg.results_path)
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


def figures_or_error(what: str, measure: Callable[[BenchConfig], dict], cfg: BenchConfig) -> dict:
    """measure(cfg), or {"error": ...} said on the console: reported, and the bench fails at the
    end (run_bench), while the other figures still count."""
    try:
        return measure(cfg)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"[:3000]
        console.say(f"bench: {what} could not be measured: {error}")
        return {"error": error}


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
