"""The command line of localization: `annotations thumos14`, and `localize`'s option errors (exit status 2,
the option named, no traceback); the untrimmed sample's plan; several modalities fused."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from localize_rows import synthetic_set

from stages.cli import main
from stages.localize.config import LocalizeConfig
from stages.localize.data import DenseSet, Video
from stages.localize.heads import InputSide
from stages.localize.run import fit_and_score, load_run
from stages.samples.untrimmed import EVENT, SECONDS, UNTRIMMED_CLASSES, VALIDATION, VIDEOS, plan


def test_annotations_thumos14_writes_the_json_and_counts(tmp_path):
    (tmp_path / "th").mkdir()
    (tmp_path / "th" / "HighJump_val.txt").write_text("video_validation_0000001 1.0 3.0\n")
    (tmp_path / "th" / "HighJump_test.txt").write_text("video_test_0000001 2.0 4.0\nvideo_test_0000002 2.5 4.5\n")
    (tmp_path / "th" / "Ambiguous_test.txt").write_text("video_test_0000001 9.0 9.5\n")
    out = tmp_path / "thumos14.json"
    r = CliRunner().invoke(main, ["annotations", "thumos14", "--dir", str(tmp_path / "th"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "3 videos (1 training, 2 validation), 3 segments, 1 classes" in r.output
    assert "1 Ambiguous segment(s) skipped" in r.output
    assert json.loads(out.read_text())["database"]["video_test_0000002"]["subset"] == "validation"
    r = CliRunner().invoke(main, ["annotations", "thumos14", "--dir", str(tmp_path / "none"), "--out", str(out)])
    assert r.exit_code == 2 and "no THUMOS14 annotation files" in r.output and "Traceback" not in r.output


def test_localize_option_errors_exit_2_naming_the_option(tmp_path):
    r = CliRunner().invoke(main, ["localize", "--features", "x"])
    assert r.exit_code == 2 and "--annotations (ANNOTATIONS=)" in r.output
    r = CliRunner().invoke(main, ["localize", "--train-subset", "validation"])
    assert r.exit_code == 2 and "name the same subset 'validation'" in r.output
    missing = tmp_path / "nowhere.json"
    r = CliRunner().invoke(main, ["localize", "--features", str(tmp_path), "--annotations", str(missing)])
    assert r.exit_code != 0 and "Traceback" not in r.output


def test_the_untrimmed_samples_plan_keeps_events_inside_balanced_and_fixed():
    videos = plan()
    assert plan() == videos  # deterministic: the same files on every machine
    assert len(videos) == VIDEOS and sum(v["subset"] == "validation" for v in videos) == VALIDATION
    counts = {c: 0 for c in UNTRIMMED_CLASSES}
    for v in videos:
        assert SECONDS[0] <= v["duration"] <= SECONDS[1]
        assert sum(v["frames"]) == v["duration"] * 10  # FPS frames per second, the scenes fill the video
        ends = 0.0
        for e in v["events"]:
            start, end = e["segment"]
            assert ends < start and end < v["duration"] and EVENT[0] <= end - start <= EVENT[1]
            ends = end
            counts[e["label"]] += 1
    assert max(counts.values()) - min(counts.values()) <= 1
    for v in videos:  # each event's stretch holds its class's scenes, in their order, and nothing else does
        t, inside = 0.0, {}
        for scene, frames in zip(v["scenes"], v["frames"]):
            event = [k for k, e in enumerate(v["events"]) if e["segment"][0] <= t < e["segment"][1]]
            assert (scene == "life") == (not event)
            if event:
                inside.setdefault(event[0], []).append(scene)
            t += frames / 10
        assert [tuple(inside[k]) for k in range(len(v["events"]))] == [
            UNTRIMMED_CLASSES[e["label"]] for e in v["events"]
        ]


def test_two_modalities_fuse_with_a_missing_stream(tmp_path):
    dense, matched = synthetic_set()
    rng = np.random.default_rng(1)
    videos = {}
    for k, (vid, v) in enumerate(dense.videos.items()):
        sound = rng.normal(0, 1, (v.length, 8)).astype(np.float32)
        present = np.array([True, k % 4 != 0])  # every fourth video has no sound track
        videos[vid] = Video(vid, np.concatenate([v.features, sound], 1), v.spans, present, v.duration)
    fused = DenseSet(videos, [24, 8], ["rgb", "audio"], [])
    cfg = LocalizeConfig(epochs=20, hidden=32, levels=3, progress=False, device="cpu")
    result = fit_and_score(cfg, fused, matched, tmp_path, torch.device("cpu"))
    assert result.metrics["mAP@0.5"] >= 0.9
    model, config = load_run(tmp_path, torch.device("cpu"))
    assert config["model"]["input_dims"] == [24, 8] and config["model"]["modality_dropout"] == 0.15
    inp = model.inp
    assert isinstance(inp, InputSide) and inp.missing is not None
    assert inp.missing.embeddings[1].abs().sum() > 0  # the absent sound's stand-in was learned
