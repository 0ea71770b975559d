"""The README's commands on a ragged set (FRAMES=all: each video its own number of rows), through
`make` as typed: `make train FEATURES=<its id>` (marked slow: 30 LSTM epochs; tests/train/
test_ragged_train.py trains on a ragged set in the default tier), `make export FEATURES=<id>
OUT=...` and with `FORMAT=actionformer` (the latter slow: tests/test_export.py checks its files in
the default tier). OUT= is a folder of the test's home: a relative one is the project's. The set is
written through the store's own writer (tests/ragged_sets.py), as stage one's dense mode lays it out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from make_runs import run_make
from ragged_sets import ragged_set

from pipeline import FeatureStore

pytestmark = pytest.mark.acceptance

# 1 to 12 rows per video (STRIDE=25 on 25 fps footage), 16 videos in 4 shards
DURATIONS = [1.0 + (5 * k) % 12 for k in range(16)]


@pytest.fixture(scope="module")
def home(tmp_path_factory, venv_ready):
    root = tmp_path_factory.mktemp("ragged-home")
    set_dir, _ = ragged_set(root / "data" / "features", DURATIONS, dim=16, stride=25)
    return root, set_dir


@pytest.mark.slow
def test_make_train_on_a_ragged_set(home):
    root, set_dir = home
    trained = run_make(root, "train", f"FEATURES={set_dir.name}")
    assert trained.returncode == 0, trained
    assert "lstm split 1: top1 " in trained.stdout, trained
    assert "lstm split 1 epoch 1/30: loss " in trained.stderr, trained
    (run_dir,) = (root / "runs").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["layout"] == "ragged" and config["model"]["frames"] == max(
        len(np.arange(0, int(d * 25), 25)) for d in DURATIONS
    )
    assert (run_dir / "metrics.json").is_file()


def test_make_export_writes_arrays_equal_to_fs_video(home):
    root, set_dir = home
    out = root / "exports" / "long"
    done = run_make(root, "export", f"FEATURES={set_dir.name}", f"OUT={out}")
    assert done.returncode == 0, done
    assert f"exported {len(DURATIONS)} videos of {set_dir.name} -> {out} (index videos.json)" in done.stdout
    fs = FeatureStore(root / "data" / "features").open(set_dir.name)
    index = json.loads((out / "videos.json").read_text())
    assert index["sampling"]["stride"] == 25 and index["sampling"]["clip_frames"] == 1
    for vid in fs.index.video_ids:
        entry = index["videos"][vid]
        np.testing.assert_array_equal(np.load(out / entry["file"]), fs.video(vid)["features"])
        assert entry["rows"] == len(fs.video(vid)["features"])


@pytest.mark.slow
def test_make_export_for_actionformer(home):
    root, set_dir = home
    out = root / "exports" / "af"
    done = run_make(root, "export", f"FEATURES={set_dir.name}", f"OUT={out}", "FORMAT=actionformer")
    assert done.returncode == 0, done
    fs = FeatureStore(root / "data" / "features").open(set_dir.name)
    database = json.loads((out / "annotations.json").read_text())["database"]
    assert sorted(database) == sorted(v.removesuffix(".avi") for v in fs.index.video_ids)
    assert "  feat_stride: 25," in (out / "actionformer.yaml").read_text()
    for key in database:
        np.testing.assert_array_equal(np.load(out / f"{key}.npy"), fs.video(f"{key}.avi")["features"])
