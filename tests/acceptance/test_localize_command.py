"""`make localize` as the README and docs/localization.md write it.

Default tier: `make localize FEATURES=<dense set> ANNOTATIONS=file.json` on a small dense set written
through the store's writer (the synthetic rows of tests/localize_rows.py: classes that look
alike in every single row), then `make evaluate RUN=`; the results file scored by an independent
implementation (tests/anet_reference.py) gives the run's own figures.

Slow tier: `make localize` with nothing set, the generated untrimmed sample end to end with
ResNet-50 at `FPS=1 FRAMES=all` (the issue's criterion: mAP@0.5 >= 0.9, the per-step tagger below
it), then `make predict VIDEO=long.avi RUN=` on a new generated long video.
"""

from __future__ import annotations

import json
import random
import re

import offline
import pytest
from anet_reference import score_files
from localize_rows import as_stored, synthetic_set
from make_runs import run_make
from ragged_sets import identity, write_set

from stages.samples.clips import make_clip
from stages.samples.untrimmed import FPS, SIZE, plan_video

pytestmark = pytest.mark.acceptance
IMAGENET_HOST = "download.pytorch.org"  # where the sample's ResNet-50 looks for its weights first
RESULT = re.compile(r"localize (\w+): mAP@0\.3 ([\d.]+)  mAP@0\.5 ([\d.]+)  mAP@0\.7 ([\d.]+)  mAP ([\d.]+)")


def dense_set_and_annotations(home):
    """The synthetic rows as a dense set (one row per second) in home's store, and their annotations."""
    dense, matched = synthetic_set()
    videos = [as_stored(vid, v, f"g_g{k:02d}") for k, (vid, v) in enumerate(dense.videos.items())]
    ident = identity("csv-rows", {"mode": "dense", "fps": 1.0}, 24, [v.video_id for v in videos])
    set_dir = write_set(home / "data" / "features", "csv-rows", videos, ident, "toy-random-all-1fps", None, 8, False)
    database = {
        t.entry: {
            "subset": "training" if t.part == "train" else "validation",
            "duration": t.duration,
            "annotations": [{"segment": [s.start, s.end], "label": s.label} for s in t.segments],
        }
        for t in matched.videos.values()
    }
    annotations = home / "annotations.json"
    annotations.write_text(json.dumps({"database": database}))
    return set_dir, annotations


def test_make_localize_on_a_dense_set_then_evaluate(tmp_path, venv_ready):
    set_dir, annotations = dense_set_and_annotations(tmp_path)
    small = ("EPOCHS=20", "HIDDEN=32", "LEVELS=3")
    made = run_make(tmp_path, "localize", f"FEATURES={set_dir.name}", f"ANNOTATIONS={annotations}", *small)
    assert made.returncode == 0, made
    figures = RESULT.search(made.stdout)
    assert figures and figures[1] == "actionformer" and float(figures[3]) >= 0.9, made
    assert "localize actionformer epoch 20/20" in made.stderr and "1 video(s) of the set" not in made.stderr, made
    (run,) = (tmp_path / "runs").glob("*-localize-actionformer")
    metrics = json.loads((run / "metrics.json").read_text())
    for t in (0.3, 0.5, 0.7):
        independent = score_files(annotations, run / "predictions.json", "validation", t)
        assert independent == pytest.approx(metrics[f"mAP@{t}"], abs=0.01)
    assert len(list((run / "timelines").glob("*.png"))) == 6 and (run / "checkpoint.pt").is_file()

    again = run_make(tmp_path, "evaluate", f"RUN={run}")
    assert again.returncode == 0, again
    assert RESULT.search(again.stdout)[0] == figures[0], again  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_make_localize_with_the_readme_defaults_then_predict(tmp_path, venv_ready):
    with offline.refusing_downloads_from(IMAGENET_HOST) as refused:
        made = run_make(tmp_path, "localize", timeout=4800)
    assert made.returncode == 0, made
    assert refused and "goes on with seeded random weights" in made.stderr, made  # offline: no ImageNet weights
    assert "==> the untrimmed sample" in made.stderr and "FRAMES=all FPS=1" in made.stderr, made
    figures = RESULT.search(made.stdout)
    assert figures and figures[1] == "actionformer", made
    assert float(figures[3]) >= 0.9, made  # mAP@0.5 on the validation videos
    (run,) = (tmp_path / "runs").glob("*-localize-actionformer")
    annotations = tmp_path / "data" / "untrimmed" / "annotations.json"
    for t in (0.3, 0.5, 0.7):
        independent = score_files(annotations, run / "predictions.json", "validation", t)
        assert independent == pytest.approx(json.loads((run / "metrics.json").read_text())[f"mAP@{t}"], abs=0.01)

    with offline.refusing_downloads_from(IMAGENET_HOST):
        tagger = run_make(tmp_path, "localize", "MODEL=tagger", timeout=1200)
    assert tagger.returncode == 0 and "reusing feature set" in tagger.stderr, tagger
    baseline = RESULT.search(tagger.stdout)
    assert baseline and baseline[1] == "tagger" and float(baseline[3]) < 0.9, tagger

    truth = plan_video("long", "validation", random.Random("a new long video"), {"Rise": 0, "Fall": 0, "Rings": 0})
    video = tmp_path / "long.avi"
    make_clip(video, truth["scenes"], FPS, SIZE, scene_frames=truth["frames"], seed="long", timeout=900)
    found = run_make(tmp_path, "predict", f"VIDEO={video}", f"RUN={run}", timeout=1200)
    assert found.returncode == 0, found
    lines = re.findall(r"^  (\d+):(\d\d\.\d) - (\d+):(\d\d\.\d)  (\w+) +([\d.]+)$", found.stdout, re.M)
    assert lines, found
    segments = [(int(a) * 60 + float(b), int(c) * 60 + float(d), label) for a, b, c, d, label, _ in lines]
    for event in truth["events"]:  # every event found: a printed segment of its class overlapping it by >= 0.5
        s, e = event["segment"]
        overlaps = [
            max(0.0, min(e, pe) - max(s, ps)) / (max(e, pe) - min(s, ps))
            for ps, pe, label in segments
            if label == event["label"]
        ]
        assert overlaps and max(overlaps) >= 0.5, (event, found.stdout)
