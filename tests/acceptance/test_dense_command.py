"""`make features DATASET=csv DATA_DIR=list.csv FPS=1 FRAMES=all` as the README writes it: a
dense set of untrimmed videos, a row per second over each whole video, stored ragged."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import synth
from make_runs import run_make

pytestmark = pytest.mark.acceptance


def test_make_features_fps1_frames_all_stores_a_row_per_second(tmp_path, venv_ready):
    listing = tmp_path / "data" / "long" / "list.csv"
    synth.make_clips(
        [
            dict(path=listing.parent / "a.avi", scenes=["bars", "box", "plasma"], fps=25, size=(64, 48),
                 scene_frames=[40, 40, 45], seed="dense/a"),
            dict(path=listing.parent / "b.mp4", scenes=["sunset", "rings"], fps=30, size=(64, 48),
                 scene_frames=[60, 54], seed="dense/b", codec="libx264"),
        ]
    )  # fmt: skip
    listing.write_text("path\na.avi\nb.mp4\n")
    made = run_make(
        tmp_path, "features", "DATASET=csv", f"DATA_DIR={listing}", "FPS=1", "FRAMES=all", "WEIGHTS=random", "SIZE=32"
    )
    assert made.returncode == 0, made
    assert "stage one complete: " in made.stderr and "copied 0, reused 0, failed 0" in made.stderr, made
    (set_dir,) = (tmp_path / "data" / "features").glob("*/resnet50-random-all-32px-1fps-*")
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["layout"] == "ragged" and manifest["frames"] is None and manifest["complete"]
    (shard,) = manifest["shards"]
    with h5py.File(set_dir / shard["file"]) as f:
        assert f.attrs["layout"] == "ragged"
        assert [v.decode() if isinstance(v, bytes) else v for v in f["video_ids"][()]] == ["a.avi", "b.mp4"]
        assert f["lengths"][()].tolist() == [5, 4]  # 125 frames at 25/s: rows at 0..4 s; 114 at 30/s: 0..3 s
        assert f["features"].shape == (9, 2048) and np.isfinite(f["features"][()]).all()
        np.testing.assert_allclose(f["spans"][()][:, 0], [0, 1, 2, 3, 4, 0, 1, 2, 3])
        np.testing.assert_allclose(f["durations"][()], [5.0, 3.8], atol=1e-6)
