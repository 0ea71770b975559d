"""`make gpu-check`'s backbones step, as a dry run on the CPU (`--device cpu`): ResNet-50, an
OpenCLIP ViT-B/16 and R(2+1)D-18 with random weights timed alone side by side, into the report's JSON only
(slow); in the default tier, the same step with one small model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages import gpu_check

OTHERS = "bench,train_profile,gpu_tests,cpu_tests"


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
