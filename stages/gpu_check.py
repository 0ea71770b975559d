"""`make gpu-check`: what a session lent a GPU machine measures and checks, in one call.

    python3 -m stages.gpu_check [--out FILE] [--wheels .whl] [--vf .vf] [--budget SECONDS]
    python3 -m stages.gpu_check --pack .gpu-wheels [--wheels .whl]     (here, by `make gpu-wheels`)
    python3 -m stages.gpu_check --pack .gpu-vf-wheels --wheels .vf    (here, by `make gpu-vf-bundle`)

The GPU machines of this workplace have torch, torchvision, h5py, numpy and pytest, but
no PyAV, no ffmpeg and no network, and a lease is minutes long. So this module imports
nothing but the standard library until its steps run, unpacks what `.whl/` carries onto
PYTHONPATH, points FFMPEG_BINARY at imageio-ffmpeg's static ffmpeg when none is installed,
and runs, each in a process of its own, within what is left of `--budget`:

    1. bench          `python -m stages bench` with the CUDA defaults, plus DEVICES=cuda:0,cuda:0:
                      end to end, decode ceiling, backbone, baseline, stage two's 50 epochs
    1b. backbones     the first example of each family registered with gpu_check=True (ResNet-50,
                      OpenCLIP, a torchvision video model), alone as the bench times ResNet-50's (stages/bench/model.py
                      measure_backbones: random weights, its own size, fp16, stage one's batch: 512
                      frames for ResNet-50, 256 for the other image models, 128 clips for R(2+1)D)
    2. train_profile  stage two's training step profiled (stages/train/profile.py profile_steps), at
                      fp16 and bf16: milliseconds per step, host vs device time, top ops
    2b. video_features  only when `--vf` (.vf/, `make gpu-vf-bundle`) is there: the side by side with
                      v-iashin/video_features (stages/bench/video_features.py) on a `--vf-minutes` video
                      (10), one round, both tools on the device; its wheels unpacked onto video_features'
                      PYTHONPATH alone, a folder holding `ffmpeg` first on PATH for its re-encode
    3. gpu_tests      pytest -m gpu (tests/test_gpu.py and the GPU tests of stage two and Dask)
    4. cpu_tests      the default suite (`make test`'s selection but the acceptance tier, which
                      runs `make`) on this machine, in parallel

Figures first: a step that would not fit in the time left is skipped and says so. The
JSON of everything (machine, each step's outcome, seconds, failures, the bench's figures)
is rewritten after every step, so a lease that ends early still leaves the steps done.

What `.whl/` carries: one `pylib.tar.xz`, the wheels unzipped and packed with xz. A call
may carry 64 MiB, and the wheels as they come are 69 MB (PyAV's 36 MB, which bundles
FFmpeg's libraries, and imageio-ffmpeg's 29.5 MB static ffmpeg among them); xz packs the
same files into 49 MB, which `--pack` writes here and the GPU machine unpacks in seconds
with the standard library. Plain wheels in `.whl/` are unzipped too. `.vf/` (the
video_features step's checkout and its own pylib.tar.xz, 30.5 MiB) travels in a call of its
own, after the one that carried `.whl/`: the two together are over the 64 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each step: (name, seconds it may take at most, seconds it needs at least to be worth starting)
STEPS = (
    ("bench", 330, 120),
    ("backbones", 120, 30),
    ("train_profile", 90, 30),
    # a 10-minute video on the GPU: both tools, the video made and ResNet-50 timed alone; killed at
    # its limit it leaves no figures, so it starts only with about its whole run left
    ("video_features", 180, 120),
    ("gpu_tests", 240, 60),
    ("cpu_tests", 300, 90),
)
# The backbones timed alone side by side, read from the family registry in the step's process
# (this module imports no stage): ResNet-50 (stage one's default) and the shapes of other
# families' usual models, with random weights (the speed does not depend on their values).
# The backbones to time instead of the registry's (comma-separated on the step's command line);
# empty: the registry's.
BACKBONES: tuple[str, ...] = ()
MEASURE_BACKBONES = """
import json, sys
from stages.bench.model import measure_backbones
from stages.extract.families import families
names = sys.argv[3].split(",") if len(sys.argv) > 3 else [f.examples[0] for f in families("backbone") if f.gpu_check]
out = measure_backbones(sys.argv[2], tuple(names))
json.dump(out, open(sys.argv[1], "w"), indent=1)
for name, figures in out.items():
    print(name, figures, flush=True)
"""
PROFILE = """
import json, sys
from stages.train import profile_steps
device = sys.argv[2]
out = [profile_steps(device, p, **({"batch": 32, "steps": 3} if device == "cpu" else {}))
       for p in (("fp16", "bf16") if device != "cpu" else ("fp32",))]
json.dump(out, open(sys.argv[1], "w"), indent=1)
for r in out:
    print({k: v for k, v in r.items() if k != "top"})
    for row in r["top"]:
        print("   ", row)
"""


PACK = "pylib.tar.xz"  # the unzipped wheels, in `--wheels`


def unpack_wheels(wheels: Path, dest: Path) -> list[str]:
    """Unpack `wheels`/pylib.tar.xz and unzip every wheel in `wheels` into `dest` (no pip
    needed: pure Python, abi3 extension modules and static binaries work from there)."""
    names = []
    if (wheels / PACK).exists():
        with tarfile.open(wheels / PACK) as pack:
            pack.extractall(dest, filter="data")
            names += sorted(n.split("/")[1] for n in pack.getnames() if n.endswith(".dist-info") and n.count("/") == 1)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            z.extractall(dest)
        names.append(wheel.name)
    for binary in dest.glob("imageio_ffmpeg/binaries/ffmpeg-*"):
        binary.chmod(0o755)  # zip files keep no mode bits
    return names


def pack_wheels(source: Path, wheels: Path) -> Path:
    """Unzip every wheel in `source` and pack them all as `wheels`/pylib.tar.xz (what a GPU call carries)."""
    with tempfile.TemporaryDirectory(prefix="vidstore-pylib-") as tmp:
        for wheel in sorted(source.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(tmp)
        wheels.mkdir(parents=True, exist_ok=True)
        out = wheels / PACK
        with tarfile.open(out.with_suffix(".tmp"), "w:xz") as pack:
            pack.add(tmp, arcname=".")
        out.with_suffix(".tmp").replace(out)
    packed = [w.name for w in source.glob("*.whl")]
    for stale in (wheels / name for name in packed):  # left by an older gpu-wheels: carried twice, over the limit
        stale.unlink(missing_ok=True)
    print(f"wrote {out}: {out.stat().st_size / 2**20:.1f} MiB from {len(packed)} wheels")
    return out


def prepared_env(wheels: Path, scratch: Path) -> tuple[dict[str, str], dict]:
    """The environment every step runs in, and what was done to make it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    info: dict = {}
    if wheels.is_dir():
        lib = scratch / "pylib"
        lib.mkdir(parents=True, exist_ok=True)
        info["wheels"] = unpack_wheels(wheels, lib)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(lib), env.get("PYTHONPATH")]))
        static = sorted(lib.glob("imageio_ffmpeg/binaries/ffmpeg-*"))
        if not env.get("FFMPEG_BINARY") and not shutil.which("ffmpeg") and static:
            env["FFMPEG_BINARY"] = str(static[0])
            # also as `ffmpeg` on PATH, for the tests that make their clips with a plain `ffmpeg`
            env = ffmpeg_on_path(env, scratch)
    else:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")  # no network there: the hub client must not wait for one
    if not env.get("FFPROBE_BINARY") and not shutil.which("ffprobe"):
        env["VIDSTORE_TESTS_WITHOUT_FFPROBE"] = "1"  # stage one probes with ffmpeg itself
    info["ffmpeg"] = env.get("FFMPEG_BINARY") or shutil.which("ffmpeg")
    info["ffprobe"] = shutil.which("ffprobe")
    return env, info


def ffmpeg_on_path(env: dict[str, str], scratch: Path) -> dict[str, str]:
    """`env` with `ffmpeg` found on its PATH: as it is when it already is, else a folder of `scratch`
    holding `ffmpeg`, a link to env's FFMPEG_BINARY, put first (programs that run a plain `ffmpeg`,
    as the tests' clip makers and video_features do); unchanged when neither is there."""
    if shutil.which("ffmpeg", path=env.get("PATH")) or not env.get("FFMPEG_BINARY"):
        return env
    folder = scratch / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "ffmpeg"
    if not link.is_symlink():
        link.symlink_to(env["FFMPEG_BINARY"])
    return env | {"PATH": os.pathsep.join(filter(None, [str(folder), env.get("PATH")]))}


def run_logged(args: list[str], env: dict[str, str], timeout: float, log: Path) -> tuple[int, float]:
    """Run args, echoing its output and keeping it in `log`; killed (whole group) at `timeout`.

    Returns (exit code, or -9 when killed at the limit; wall seconds).
    """
    t0 = time.perf_counter()
    print(f"\n$ {' '.join(args)}  (limit {timeout:.0f} s)", flush=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            errors="replace",
        )
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            for line in proc.stdout or ():  # always a pipe (stdout=PIPE)
                sys.stdout.write(line)
                out.write(line)
            proc.wait()
        finally:
            timer.cancel()
    return (-9 if killed.is_set() else proc.returncode), time.perf_counter() - t0


def junit_outcome(xml: Path) -> dict:
    """Counts and the failing tests (with the first lines of why) from pytest's JUnit XML."""
    if not xml.exists():
        return {"error": "pytest wrote no report"}
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {"error": f"{xml} holds no testsuite"}
    failed, passed, skipped = [], 0, 0
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            failed.append(
                {"test": name, "why": (bad.get("message") or "")[:600], "seconds": float(case.get("time", 0))}
            )
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return {"passed": passed, "failed": len(failed), "skipped": skipped, "failures": failed}


def machine(env: dict[str, str]) -> dict:
    probe = (
        "import json, torch, sys; d = torch.cuda.is_available(); print(json.dumps({'python': sys.version.split()[0], "
        "'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(), "
        "'gpu': torch.cuda.get_device_name() if d else None, 'gpus': torch.cuda.device_count(), "
        "'bf16': torch.cuda.is_bf16_supported() if d else None}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    info = json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr[-2000:]}
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        info["nvidia_smi"] = q.stdout.strip()
    info["cores"] = os.cpu_count()
    return info


def step_bench(env: dict[str, str], out_dir: Path, timeout: float, args: argparse.Namespace) -> dict:
    results = out_dir / "gpu-check-bench.json"
    devices = ",".join([args.device if ":" in args.device or args.device == "cpu" else f"{args.device}:0"] * 2)
    cmd = [
        sys.executable,
        "-m",
        "stages",
        "bench",
        "--device",
        args.device,
        "--devices",
        devices,
        "--rounds",
        str(args.rounds),
        "--out",
        str(results),
    ]
    if args.clips:
        cmd += ["--clips", str(args.clips)]
    code, wall = run_logged(cmd, env, timeout, out_dir / "gpu-check-bench.log")
    outcome: dict[str, object] = {"exit": code, "seconds": wall}
    if results.exists():  # written after stage one's figures, and again after stage two's
        figures = json.loads(results.read_text())
        keys = (
            "videos_per_s",
            "frames_per_s",
            "decode_ceiling_videos_per_s",
            "baseline_videos_per_s",
            "backbone_images_per_s",
            "train_50_epochs_s",
            "ratios",
            "settings",
            "machine",
            "end_to_end",
            "decode_ceiling",
            "backbone",
            "baseline",
            "train",
            "end_to_end_devices",
            "notes",
        )
        outcome["figures"] = {k: figures[k] for k in keys if k in figures}
    return outcome


def step_backbones(env: dict[str, str], out_dir: Path, timeout: float, device: str) -> dict:
    """The figures go into the report's JSON only; their own file stays in the scratch folder, as a
    call brings back at most 8 files (see step_pytest)."""
    results = Path(env["VIDSTORE_GPU_CHECK_SCRATCH"]) / "gpu-check-backbones.json"
    code, wall = run_logged(
        [sys.executable, "-c", MEASURE_BACKBONES, str(results), device, *([",".join(BACKBONES)] if BACKBONES else [])],
        env,
        timeout,
        out_dir / "gpu-check-backbones.log",
    )
    return {"exit": code, "seconds": wall} | ({"figures": json.loads(results.read_text())} if results.exists() else {})


VF_MISSING = (
    "no video_features bundle at {vf}: make gpu-vf-bundle here (VF_SOURCE= a git URL or path of "
    "v-iashin/video_features), then carry .vf in a call of its own after the one carrying .whl (docs/bench.md)"
)


def vf_bundle_ready(vf: Path) -> bool:
    """Whether `vf` holds what `make gpu-vf-bundle` makes: video_features' checkout and its packed wheels."""
    return (vf / "video_features" / "main.py").is_file() and (vf / PACK).is_file()


def step_video_features(env: dict[str, str], timeout: float, args: argparse.Namespace) -> dict:
    """stages.bench.video_features with `args.vf`'s checkout, its wheels unpacked into the scratch
    folder for video_features' process alone, on `args.device`, one round of a `args.vf_minutes` video.

    The harness's JSON goes into the report only and its log stays in the scratch folder (a call
    brings back at most 8 files; see step_pytest); a failed run keeps the log's end in the report.
    """
    scratch = Path(env["VIDSTORE_GPU_CHECK_SCRATCH"])
    lib = scratch / "vf-pylib"
    lib.mkdir(parents=True, exist_ok=True)
    wheels = unpack_wheels(args.vf, lib)
    env = ffmpeg_on_path(env, scratch)  # its re-encode runs the `ffmpeg` that `which` finds
    results, log = scratch / "gpu-check-video-features.json", scratch / "gpu-check-video-features.log"
    cmd = [sys.executable, "-m", "stages.bench.video_features", "--checkout", str(args.vf / "video_features")]
    cmd += ["--pythonpath", str(lib), "--minutes", f"{args.vf_minutes:g}", "--rounds", "1"]
    cmd += ["--device", args.device, "--out", str(results)]
    code, wall = run_logged(cmd, env, timeout, log)
    outcome: dict[str, object] = {"exit": code, "seconds": wall, "wheels": wheels}
    if code == 0 and results.exists():
        outcome["figures"] = json.loads(results.read_text())
    else:
        outcome["log_tail"] = log.read_text(errors="replace")[-3000:]
    return outcome


def step_profile(env: dict[str, str], out_dir: Path, timeout: float, device: str) -> dict:
    results = out_dir / "gpu-check-train-profile.json"
    code, wall = run_logged(
        [sys.executable, "-c", PROFILE, str(results), device], env, timeout, out_dir / "gpu-check-train-profile.log"
    )
    return {"exit": code, "seconds": wall} | ({"profiles": json.loads(results.read_text())} if results.exists() else {})


def step_pytest(
    selection: str, workers: int, extra: list[str], env: dict[str, str], out_dir: Path, timeout: float, name: str
) -> dict:
    """pytest on `workers` processes (when pytest-xdist is there), each with its share of the cores.

    Its JUnit XML stays in the scratch folder: what it says goes into the JSON, and a call
    brings back at most 8 files (the JSON, the bench's and the profile's JSON, and each step's log are 8).
    """
    xml = Path(env["VIDSTORE_GPU_CHECK_SCRATCH"]) / f"gpu-check-{name}.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        selection,
        f"--junitxml={xml}",
        *xdist_args(env, workers),
        *extra,
    ]
    threads = str(max(1, (os.cpu_count() or 1) // workers))  # torch in every worker would otherwise take all cores
    env = env | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    code, wall = run_logged(cmd, env, timeout, out_dir / f"gpu-check-{name}.log")
    return {"exit": code, "seconds": wall, "selection": selection} | junit_outcome(xml)


def xdist_args(env: dict[str, str], workers: int) -> list[str]:
    """-n N when pytest-xdist is importable here, else nothing (serial)."""
    ok = subprocess.run([sys.executable, "-c", "import xdist"], env=env, capture_output=True).returncode == 0
    return ["-n", str(workers)] if ok else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench") / "gpu-check.json")
    ap.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="folder of carried wheels (make gpu-wheels)")
    ap.add_argument("--vf", type=Path, default=ROOT / ".vf", help="the video_features bundle (make gpu-vf-bundle)")
    ap.add_argument("--vf-minutes", type=float, default=10.0, help="the video_features step's video length")
    ap.add_argument("--pack", type=Path, help="here: pack the wheels of this folder into --wheels, and stop")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for all steps together")
    ap.add_argument("--clips", type=int, default=0, help="bench clips (default: the bench's CUDA default, 2048)")
    ap.add_argument("--rounds", type=int, default=1, help="bench rounds (a lent machine is not shared: 1)")
    ap.add_argument("--device", default="cuda", help="the bench's device (cpu: a dry run of this script)")
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated steps to leave out: bench,backbones,train_profile,video_features,gpu_tests,cpu_tests",
    )
    args = ap.parse_args(argv)
    if args.pack:
        pack_wheels(args.pack, args.wheels)
        return 0
    deadline = time.monotonic() + args.budget
    out_dir = args.out.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="vidstore-gpu-check-"))
    scratch.chmod(0o755)  # the unpacked wheels are imported by a test that runs stage one as nobody too
    env, setup = prepared_env(args.wheels, scratch)
    env["VIDSTORE_GPU_CHECK_SCRATCH"] = str(scratch)
    report: dict = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "setup": setup,
        "machine": machine(env),
        "steps": {},
    }
    print(json.dumps(report["machine"], indent=1), flush=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    for name, limit, least in STEPS:
        left = deadline - time.monotonic()
        if name in skip:
            report["steps"][name] = {"skipped": "--skip"}
        elif name == "video_features" and not vf_bundle_ready(args.vf):
            report["steps"][name] = {"skipped": VF_MISSING.format(vf=args.vf)}
        elif left < least:
            report["steps"][name] = {"skipped": f"{left:.0f} s left of the budget, needs {least}"}
        elif name == "bench":
            report["steps"][name] = step_bench(env, out_dir, min(limit, left), args)
        elif name == "backbones":
            report["steps"][name] = step_backbones(env, out_dir, min(limit, left), args.device)
        elif name == "train_profile":
            report["steps"][name] = step_profile(env, out_dir, min(limit, left), args.device)
        elif name == "video_features":
            report["steps"][name] = step_video_features(env, min(limit, left), args)
        elif name == "gpu_tests":
            report["steps"][name] = step_pytest("gpu", 4, ["--timeout", "200"], env, out_dir, min(limit, left), name)
        else:
            # not the acceptance tier: it runs `make`, and that machine has no venv for make's setup
            selection = "not slow and not gpu and not acceptance"
            report["steps"][name] = step_pytest(selection, 8, [], env, out_dir, min(limit, left), name)
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(
            f"\n== {name}: {json.dumps({k: v for k, v in report['steps'][name].items() if k != 'figures'}, default=str)[:1500]}",
            flush=True,
        )
    shutil.rmtree(scratch, ignore_errors=True)
    ok = all(s.get("exit", 0) == 0 for s in report["steps"].values())
    print(f"\nwrote {args.out}: {'all steps passed' if ok else 'SOME STEPS FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
