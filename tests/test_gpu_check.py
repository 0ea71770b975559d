"""`make gpu-check`'s backbones step, as a dry run on the CPU (`--device cpu`): ResNet-50, an
OpenCLIP ViT-B/16 and R(2+1)D-18 with random weights timed alone side by side, into the report's JSON only."""

from __future__ import annotations

import json

from stages import gpu_check


def test_the_backbones_step_times_each_backbone_beside_resnet50(tmp_path):
    out = tmp_path / "out" / "gpu-check.json"
    others = "bench,train_profile,gpu_tests,cpu_tests"
    code = gpu_check.main(["--device", "cpu", "--skip", others, "--out", str(out), "--wheels", str(tmp_path / "none")])
    report = json.loads(out.read_text())
    step = report["steps"]["backbones"]
    assert code == 0 and step["exit"] == 0, step
    assert set(step["figures"]) == {"resnet50", "open_clip:ViT-B-16:openai", "torchvision:r2plus1d_18"}
    for name, figures in step["figures"].items():
        assert figures["images_per_s"] > 0 and figures["size"] == 112 and figures["backbone"] == name, figures
    assert step["figures"]["open_clip:ViT-B-16:openai"]["dim"] == 512
    clips = step["figures"]["torchvision:r2plus1d_18"]
    assert (clips["unit"], clips["batch"], clips["dim"]) == ("clips", 8, 512), clips  # stage one's CPU clip batch
    assert all(report["steps"][s] == {"skipped": "--skip"} for s in others.split(","))
    # what a call brings back: the report and the step's log, its figures' own file left in the scratch folder
    assert sorted(p.name for p in out.parent.iterdir()) == ["gpu-check-backbones.log", "gpu-check.json"]
