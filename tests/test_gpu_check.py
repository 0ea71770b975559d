"""`make gpu-check`'s backbones step, as a dry run on the CPU (`--device cpu`): ResNet-50, an
OpenCLIP ViT-B/16 and R(2+1)D-18 with random weights timed alone side by side, into the report's JSON only
(slow); in the default tier, the same step with one small model.

Its video_features step, likewise on the CPU with a 6-second video: skipped, saying how to make the
bundle, without one; with a bundle the test makes (a stand-in video_features that needs a module
only its packed wheels hold, and a plain `ffmpeg`), both tools' rows and times in the report (slow);
with the real bundle `make gpu-vf-bundle` made, when this checkout has one (slow)."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from stages import gpu_check
from stages.bench.video_features import video_features_device

OTHERS = "bench,train_profile,video_features,gpu_tests,cpu_tests"
BUT_VIDEO_FEATURES = "bench,backbones,train_profile,gpu_tests,cpu_tests"


def backbones_step(tmp_path) -> tuple[int, dict, dict, Path]:
    """`gpu_check --device cpu` with every step but the backbones skipped: (exit code, the
    step's outcome, the report, its path)."""
    out = tmp_path / "out" / "gpu-check.json"
    code = gpu_check.main(["--device", "cpu", "--skip", OTHERS, "--out", str(out), "--wheels", str(tmp_path / "none")])
    report = json.loads(out.read_text())
    return code, report["steps"]["backbones"], report, out


def test_the_backbones_step_times_its_backbones_in_a_process_of_its_own(tmp_path, monkeypatch):
    """The step's plumbing with one cheap backbone (the step's list reaches its process on the
    command line); each family's timing is tests/test_bench.py's, the real list's dry run is slow."""
    monkeypatch.setattr(gpu_check, "BACKBONES", ("torchvision:mobilenet_v3_small",))
    code, step, report, out = backbones_step(tmp_path)
    assert code == 0 and step["exit"] == 0, step
    (figures,) = step["figures"].values()
    assert list(step["figures"]) == ["torchvision:mobilenet_v3_small"]
    assert figures["images_per_s"] > 0 and figures["size"] == 112 and figures["dim"] == 1024, figures
    assert all(report["steps"][s] == {"skipped": "--skip"} for s in OTHERS.split(","))
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpu-check-backbones.log", "gpu-check.json"]


@pytest.mark.slow
def test_the_backbones_step_times_each_backbone_beside_resnet50(tmp_path):
    code, step, report, out = backbones_step(tmp_path)
    assert code == 0 and step["exit"] == 0, step
    assert set(step["figures"]) == {"resnet50", "open_clip:ViT-B-16:openai", "torchvision:r2plus1d_18"}
    for name, figures in step["figures"].items():
        assert figures["images_per_s"] > 0 and figures["size"] == 112 and figures["backbone"] == name, figures
    assert step["figures"]["open_clip:ViT-B-16:openai"]["dim"] == 512
    clips = step["figures"]["torchvision:r2plus1d_18"]
    assert (clips["unit"], clips["batch"], clips["dim"]) == ("clips", 8, 512), clips  # stage one's CPU clip batch
    assert all(report["steps"][s] == {"skipped": "--skip"} for s in OTHERS.split(","))
    # what a call brings back: the report and the step's log, its figures' own file left in the scratch folder
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpu-check-backbones.log", "gpu-check.json"]


def video_features_step(tmp_path, vf: Path) -> tuple[int, dict, dict, Path]:
    """`gpu_check --device cpu` with every step but video_features skipped, `vf` as the bundle and a
    0.1-minute video: (exit code, the step's outcome, the report, its path)."""
    out = tmp_path / "out" / "gpu-check.json"
    code = gpu_check.main(
        ["--device", "cpu", "--skip", BUT_VIDEO_FEATURES, "--out", str(out), "--wheels", str(tmp_path / "none")]
        + ["--vf", str(vf), "--vf-minutes", "0.1"]
    )
    report = json.loads(out.read_text())
    return code, report["steps"]["video_features"], report, out


def test_the_video_features_step_without_a_bundle_is_skipped_saying_how_to_make_and_carry_one(tmp_path):
    half = tmp_path / "half"  # a checkout without its packed wheels is no bundle either
    (half / "video_features").mkdir(parents=True)
    (half / "video_features" / "main.py").write_text("")
    for vf in (tmp_path / "absent", half):
        code, step, report, out = video_features_step(tmp_path, vf)
        assert code == 0, report
        assert step == {"skipped": gpu_check.VF_MISSING.format(vf=vf)}
        assert "make gpu-vf-bundle" in step["skipped"] and "carry .vf" in step["skipped"]
        assert all(report["steps"][s] == {"skipped": "--skip"} for s in BUT_VIDEO_FEATURES.split(","))
        assert sorted(p.name for p in out.parent.iterdir()) == ["gpu-check.json"]


def test_ffmpeg_on_path_puts_a_folder_holding_ffmpeg_binary_first_when_path_has_none(tmp_path):
    binary = tmp_path / "static" / "ffmpeg-linux-x86_64-v7"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"PATH": str(empty), "FFMPEG_BINARY": str(binary)}
    got = gpu_check.ffmpeg_on_path(env, tmp_path / "scratch")
    found = shutil.which("ffmpeg", path=got["PATH"])
    assert found and Path(found).resolve() == binary.resolve(), got
    assert got["PATH"].split(os.pathsep) == [str(tmp_path / "scratch" / "bin"), str(empty)]
    assert gpu_check.ffmpeg_on_path(got, tmp_path / "scratch") == got  # found already: as it is
    assert gpu_check.ffmpeg_on_path({"PATH": str(empty)}, tmp_path / "scratch") == {"PATH": str(empty)}


def test_video_features_is_told_cuda_0_for_cuda():
    assert video_features_device("cuda") == "cuda:0"
    assert [video_features_device(d) for d in ("cuda:1", "cpu")] == ["cuda:1", "cpu"]


# video_features' command line as it parses it (key=value), its 1-fps re-encode with the `ffmpeg`
# that PATH finds, its "Device:" line and its (frames, 2048) float64 file; it stores a row per frame
# of the re-encode (zeros: the step's plumbing is under test, not ResNet-50). It needs
# vf_bundle_probe, which only the bundle's packed wheel holds.
STAND_IN = """
import shutil, subprocess, sys
from pathlib import Path
import numpy as np
import vf_bundle_probe

args = dict(a.split("=", 1) for a in sys.argv[1:])
assert args["feature_type"] == "resnet" and args["extraction_fps"] == "1", args
print("Device:", args["device"])
video = Path(args["video_paths"].strip("[]"))
tmp = Path(args["tmp_path"])
tmp.mkdir(parents=True, exist_ok=True)
again = tmp / f"{video.stem}_new_fps.mp4"
subprocess.run([shutil.which("ffmpeg"), "-v", "error", "-y", "-i", str(video), "-filter:v", "fps=fps=1", str(again)], check=True)
raw = subprocess.run([shutil.which("ffmpeg"), "-v", "error", "-i", str(again), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                     capture_output=True, check=True).stdout
frames = len(raw) // (320 * 240)
out = Path(args["output_path"]) / "resnet" / "resnet50"
out.mkdir(parents=True)
np.save(out / f"{video.stem}_resnet.npy", np.zeros((frames, vf_bundle_probe.DIM)))
"""


def stand_in_bundle(vf: Path) -> Path:
    """A bundle as `make gpu-vf-bundle` lays it out: video_features/main.py (the stand-in above) and
    pylib.tar.xz packed by gpu_check's own packer from one wheel holding vf_bundle_probe."""
    (vf / "video_features").mkdir(parents=True)
    (vf / "video_features" / "main.py").write_text(STAND_IN)
    wheels = vf.parent / "vf-wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "vf_bundle_probe-1.0-py3-none-any.whl", "w") as z:
        z.writestr("vf_bundle_probe.py", "DIM = 2048\n")
        z.writestr(
            "vf_bundle_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: vf-bundle-probe\nVersion: 1.0\n"
        )
        z.writestr(
            "vf_bundle_probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr("vf_bundle_probe-1.0.dist-info/RECORD", "")
    gpu_check.pack_wheels(wheels, vf)
    return vf


def assert_side_by_side(code: int, step: dict, out: Path) -> None:
    """Both tools' rows (6: a row a second of a 6-second video) and times, and the ratios, in the
    report's JSON; nothing beside the report in the folder a call brings back."""
    assert code == 0 and step["exit"] == 0, step.get("log_tail", step)
    figures = step["figures"]
    assert figures["video"]["minutes"] == 0.1
    assert {tool: len(runs) for tool, runs in figures["rounds"].items()} == {"video_features": 1, "vidstore": 1}
    vf, ours = figures["best"]["video_features"], figures["best"]["vidstore"]
    assert (vf["rows"], ours["rows"]) == (6, 6), figures["best"]
    assert (vf["dtype"], vf["device"]) == ("float64", "cpu"), vf  # what it stores, where it said it ran
    assert all(run["wall_s"] > 0 and run["cpu_s"] > 0 for run in (vf, ours)), figures["best"]
    assert figures["video_features_over_vidstore"] == round(vf["wall_s"] / ours["wall_s"], 2)
    assert figures["backbone_alone"]["images_per_s"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpu-check.json"]


@pytest.mark.slow
def test_the_video_features_step_runs_the_side_by_side_from_a_bundle(tmp_path):
    code, step, report, out = video_features_step(tmp_path, stand_in_bundle(tmp_path / "vf"))
    assert step["wheels"] == ["vf_bundle_probe-1.0.dist-info"]
    assert_side_by_side(code, step, out)


@pytest.mark.slow
def test_the_video_features_step_with_the_bundle_make_gpu_vf_bundle_made(tmp_path):
    """The real video_features (its ResNet-50 path at the pinned commit) from this checkout's .vf/,
    its cp312 wheels unpacked for it alone (on Python 3.11 PyYAML's compiled part does not load and
    it runs its pure-Python one)."""
    vf = gpu_check.ROOT / ".vf"
    if not gpu_check.vf_bundle_ready(vf):
        pytest.skip("no .vf/ in this checkout: make gpu-vf-bundle (VF_SOURCE= a git URL or path) makes it")
    code, step, report, out = video_features_step(tmp_path, vf)
    assert {"omegaconf-2.3.0.dist-info", "antlr4_python3_runtime-4.9.3.dist-info"} <= set(step["wheels"]), step
    assert_side_by_side(code, step, out)
