"""The printed table (ratios, the profile of stage one) and the machine description in results.json."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

from pipeline import allocator
from pipeline.config import (
    config_json,
)
from pipeline.ffmpeg_tools import find_binary

from ..extract import decode_threads, decoder_versions, ffmpeg_version
from .baseline import CLIP_SIZE
from .config import BenchConfig
from .model import RANDOM_WEIGHTS


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
        "dense_real_time_factor": r.get("dense", {}).get("real_time_factor"),
        "dense_decode_s_per_video_minute": r.get("dense", {}).get("decode_s_per_video_minute"),
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
        backbone_row(bb),
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
    rows += dense_rows(r.get("dense"))
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


def backbone_row(bb: dict) -> tuple[str, str, str]:
    """The report's "backbone alone" row: images/s, or a clip model's clips/s and the frames they hold."""
    unit = bb.get("unit", "images")
    return (
        f"backbone alone ({bb.get('backbone', 'resnet50')})",
        f"{bb['images_per_s']:.4g} {unit}/s",
        ("" if unit == "images" else f"{bb['frames_per_s']:.4g} frames/s; ")
        + f"batch {bb['batch']}, {bb['precision']}, channels_last, uint8 in"
        + (f"; host-to-device {bb['h2d_images_per_s']:.3g} images/s" if "h2d_images_per_s" in bb else ""),
    )


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
        "weights": RANDOM_WEIGHTS.identity if cfg.weights == "random" else cfg.weights,
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


def dense_rows(d: dict | None) -> list[tuple[str, str, str]]:
    """The dense set's row of the table (none where it was not timed)."""
    if not d:
        return []
    if d.get("error"):
        return [("dense set, FRAMES=all FPS=1", "not measured", d["error"].splitlines()[0][:200])]
    ratio = f"{d['end_to_end_vs_backbone']:.2f}x the backbone's time" if d.get("end_to_end_vs_backbone") else ""
    return [
        (
            "dense set, FRAMES=all FPS=1",
            f"{d['real_time_factor']:.3g}x real time",
            f"{d['decode_s_per_video_minute']:.2f} decoder s per video-minute; {d['rows']} rows of one "
            f"{d['video_seconds']:g} s 320x240 H.264 video in {d['seconds']:.1f} s, {ratio}",
        )
    ]
