"""Side by side with v-iashin/video_features: per-second ResNet-50 features of one long video.

    python -m stages.bench.video_features --checkout DIR [--python PY] [--pythonpath DIRS] [--minutes 10] [--rounds 2]

Both tools run as their users run them, each in its own processes, on the same generated
video (320x240, 25 fps, H.264, ffmpeg's `testsrc2`: the picture changes every frame):

    video_features  main.py feature_type=resnet model_name=resnet50 extraction_fps=1
                    on_extraction=save_numpy (its defaults otherwise: batch 1, a temporary
                    re-encode of the whole video at 1 fps, OpenCV reading it back)
    vidstore        vidstore features --dataset csv --fps 1 --frames all into a temporary store
                    (its defaults otherwise: decoder processes, batched forwards)

Both compute ResNet-50 at 224 px on the same device (`--device cuda` tells video_features `device=cuda:0`,
its config's form, and its rows keep the device it printed; stage one at --precision: auto is fp32 on a
CPU, as video_features always is, and fp16 on CUDA; the report says which), with seeded random weights: video_features
loads torchvision's published IMAGENET1K_V1 file from its cache, so a random state dict is written
there under that file's name in a temporary TORCH_HOME (the numbers differ, the work does not,
and nothing is downloaded). Each round runs both, alternating which goes first; the best of each
counts. Also timed, as the bound: ResNet-50 alone at stage one's batch on frames already in
memory (the bench's own backbone timing, in a process with stage one's allocator), scaled to
the rows stored.

It prints one JSON object (also written to --out): the rows each tool stored, wall and CPU
seconds (every process of the tool's tree), video_features / vidstore, vidstore / backbone
alone, and vidstore's real-time factor (video seconds per wall second).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from pipeline import allocator
from pipeline.config import repo_root
from pipeline.ffmpeg_tools import ffmpeg_binary

SIZE = 224  # both tools' crop: ResNet-50's own
VIDEO_SIZE, VIDEO_FPS = "320x240", 25


def make_video(path: Path, minutes: float) -> Path:
    """The long video both tools read, made once and reused: (minutes x 60 x 25) frames."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part.mp4")
        src = f"testsrc2=size={VIDEO_SIZE}:rate={VIDEO_FPS}"
        subprocess.run(
            [ffmpeg_binary(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", src, "-t", f"{minutes * 60:g}"]
            + ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(tmp)],
            check=True,
        )
        tmp.rename(path)
    return path


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[dict, str]:
    """Run a command to its end: wall seconds and the CPU seconds of its whole process tree
    (the children this process waited for: every descendant that was waited for in turn),
    and what it printed (stdout, then stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}, proc.stdout + proc.stderr


def random_torchvision_cache(home: Path) -> None:
    """A seeded random ResNet-50 state dict where torchvision looks for IMAGENET1K_V1's file."""
    import torch
    from torchvision.models import ResNet50_Weights, resnet50

    target = home / "hub" / "checkpoints" / Path(ResNet50_Weights.IMAGENET1K_V1.url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(resnet50().state_dict(), target)


def video_features_device(device: str) -> str:
    """The device video_features is told: "cuda" as "cuda:0", the form of its config's default (it
    runs one card per process); anything else as given."""
    return "cuda:0" if device == "cuda" else device


def run_video_features(checkout: Path, python: str, video: Path, work: Path, device: str, pythonpath: str = "") -> dict:
    """video_features' ResNet-50 at extraction_fps=1 on the video: its times, rows stored and the
    device it said it ran on (it falls back to the CPU, saying so, when CUDA is not there).

    `pythonpath`: folders put first on PYTHONPATH in its process only (its own packages, unpacked
    from a bundle), so that stage one's run does not import them.
    """
    out = work / f"vf-out-{time.monotonic_ns()}"  # a fresh folder: video_features skips a video whose output exists
    cmd = [python, "main.py", "feature_type=resnet", "model_name=resnet50", f"device={video_features_device(device)}"]
    cmd += ["extraction_fps=1", f"video_paths=[{video}]", "on_extraction=save_numpy"]
    cmd += [f"output_path={out}", f"tmp_path={work / 'vf-tmp'}"]
    env = os.environ | {"TORCH_HOME": str(work / "torch-home")}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    result, printed = timed(cmd, cwd=checkout, env=env)
    found = list(out.rglob(f"{video.stem}_resnet.npy"))
    if len(found) != 1:  # it prints an extraction's error, goes on to the next video and exits 0
        raise SystemExit(f"video_features stored no features for {video}; it printed:\n{printed[-3000:]}")
    rows = np.load(found[0])  # (frames, 2048) float64
    said = re.search(r"^Device: (\S+)$", printed, re.MULTILINE)
    return result | {"rows": int(rows.shape[0]), "dtype": str(rows.dtype), "device": said.group(1) if said else None}


def run_vidstore(video: Path, work: Path, device: str, precision: str) -> dict:
    """Stage one's dense per-second features of the video into a fresh store: times and rows."""
    listing = work / "list.csv"
    listing.write_text(f"path\n{video}\n")
    root = work / f"store-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "stages", "features", "--dataset", "csv", "--data-dir", str(listing)]
    cmd += ["--fps", "1", "--frames", "all", "--weights", "random", "--device", device, "--precision", precision]
    cmd += ["--features-root", str(root)]
    result, _ = timed(cmd)
    rows = 0
    for shard in root.rglob("shard-*.h5"):
        with h5py.File(shard, "r") as f:
            rows += int(f["lengths"][()].sum())
    return result | {"rows": rows}


def backbone_alone(device: str, precision: str, rows: int) -> dict:
    """ResNet-50 alone at stage one's batch and `precision` on frames in memory, scaled to `rows`:
    timed in a process of its own with the allocator stage one's command runs with (jemalloc where
    installed; pipeline.allocator), so that the bound and the run are like for like."""
    _, allocator_env = allocator.plan(dict(os.environ))
    code = "import sys; from stages.bench.video_features import images_per_second as f; print('images/s', f(*sys.argv[1:]))"
    _, printed = timed([sys.executable, "-c", code, device, precision], cwd=repo_root(), env=os.environ | allocator_env)
    said = re.search(r"^images/s (\S+)$", printed, re.MULTILINE)
    if said is None:
        raise SystemExit(f"timing the backbone alone printed no rate:\n{printed[-3000:]}")
    rate = float(said.group(1))
    return {"images_per_s": round(rate, 2), "seconds_for_rows": round(rows / rate, 2)}


def images_per_second(device: str, precision: str) -> float:
    """The bench's own backbone timing (stages.bench.model) of ResNet-50 at SIZE px, in this process."""
    from pipeline.devices import inference_precision, resolve_device

    from .config import BenchConfig
    from .model import measure_backbone

    cfg = BenchConfig(device=device, size=SIZE, weights="random", precision=precision).resolved()
    dev = resolve_device(device)
    return float(measure_backbone(cfg, dev, inference_precision(cfg.precision, dev))["images_per_s"])


def compare(
    checkout: Path, python: str, minutes: float, rounds: int, device: str, precision: str, pythonpath: str = ""
) -> dict:
    video = make_video(repo_root() / "bench" / "clips" / f"testsrc2-{minutes:g}min.mp4", minutes)
    report: dict = {"video": {"path": str(video), "minutes": minutes, "size": VIDEO_SIZE, "fps": VIDEO_FPS}}
    runs: dict[str, list[dict]] = {"video_features": [], "vidstore": []}
    with tempfile.TemporaryDirectory(prefix="vf-bench-") as tmp:
        work = Path(tmp)
        random_torchvision_cache(work / "torch-home")
        for r in range(rounds):
            order = ["vidstore", "video_features"] if r % 2 == 0 else ["video_features", "vidstore"]
            for tool in order:
                run = (
                    run_vidstore(video, work, device, precision)
                    if tool == "vidstore"
                    else run_video_features(checkout, python, video, work, device, pythonpath)
                )
                runs[tool].append(run)
                print(f"round {r + 1} {tool}: {run}", file=sys.stderr)
    best = {tool: min(rs, key=lambda x: x["wall_s"]) for tool, rs in runs.items()}
    ours, theirs = best["vidstore"], best["video_features"]
    alone = backbone_alone(device, precision, ours["rows"])
    report |= {
        "rounds": runs,
        "best": best,
        "backbone_alone": alone,
        "video_features_over_vidstore": round(theirs["wall_s"] / ours["wall_s"], 2),
        "vidstore_over_backbone_alone": round(ours["wall_s"] / alone["seconds_for_rows"], 3),
        "vidstore_real_time_factor": round(minutes * 60 / ours["wall_s"], 2),
        "precision": {"vidstore": precision, "video_features": "fp32"},
    }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a checkout of v-iashin/video_features")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs video_features (its deps)")
    parser.add_argument(
        "--pythonpath", default="", help="folders first on PYTHONPATH for video_features only (its unpacked packages)"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="the video's length")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tool, alternating; the best counts")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both tools)")
    parser.add_argument(
        "--precision", default="auto", help="stage one's PRECISION= (auto: fp32 on a CPU, fp16 on CUDA)"
    )
    parser.add_argument("--out", type=Path, default=repo_root() / "bench" / "video_features.json")
    args = parser.parse_args(argv)
    if not (args.checkout / "main.py").is_file():
        parser.error(f"--checkout {args.checkout}: no main.py there; clone github.com/v-iashin/video_features")
    report = compare(
        args.checkout, args.python, args.minutes, args.rounds, args.device, args.precision, args.pythonpath
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
