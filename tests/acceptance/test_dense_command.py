"""`make features DATASET=csv DATA_DIR=list.csv FPS=1 FRAMES=all` as the README writes it: a
dense set of untrimmed videos, a row per second over each whole video, stored ragged."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import synth
from helpers import ffmpeg_crops, reference_features
from make_runs import run_make

from stages.extract.config import ExtractConfig
from stages.extract.extractors import family_for

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


# Minutes-long footage of a changing picture (six scenes with motion, hard cuts between them):
# (file, encoder, frames/s, frames per scene). .avi: MPEG-4 Part 2 as UCF101's, one with B-frames;
# .mp4: H.264 (B-frames by default). 150.4 s, 133.4 s and 126.5 s.
LONG_FOOTAGE = (
    ("long/a.avi", "mpeg4", 25, (700, 610, 640, 600, 610, 600), None),
    ("long/b.mp4", "libx264", 30, (700, 670, 660, 640, 690, 642), None),
    ("long/c.avi", "mpeg4", 30, (650, 640, 620, 630, 625, 630), 2),
)
LONG_SCENES = ("bars", "box", "plasma", "rings", "sunset", "checker")


@pytest.mark.slow
def test_make_features_fps1_frames_all_on_minutes_long_videos_matches_resnet50_on_each_rows_frame(
    tmp_path, venv_ready, weights_file
):
    """The issue's first Done-when line as written: on videos of a few minutes, round(duration)
    rows per video (+-1), spans 1 s apart over the whole video, and each row torchvision's
    ResNet-50 on the ffmpeg command's own decode of the frame the row records (the fixed-T
    sets' distance, test_extract.py)."""
    listing = tmp_path / "data" / "list.csv"
    synth.make_clips(
        dict(path=listing.parent / name, scenes=list(LONG_SCENES), fps=fps, size=(160, 120), scene_frames=list(frames),
             seed=name, codec=codec, bframes=bframes)
        for name, codec, fps, frames, bframes in LONG_FOOTAGE
    )  # fmt: skip
    listing.write_text("path\n" + "".join(f"{name}\n" for name, *_ in LONG_FOOTAGE))
    made = run_make(
        tmp_path, "features", "DATASET=csv", f"DATA_DIR={listing}", "FPS=1", "FRAMES=all",
        f"WEIGHTS={weights_file}", f"SIZE={SIZE}", timeout=1200,
    )  # fmt: skip
    assert made.returncode == 0, made
    assert "computed 3, copied 0, reused 0, failed 0" in made.stderr, made
    (set_dir,) = (tmp_path / "data" / "features").glob(f"*/resnet50-*-all-{SIZE}px-1fps-*")
    resize = family_for(ExtractConfig(image_size=SIZE)).preprocessing().resize
    assert isinstance(resize, int)
    videos = {vid: rows for s in json.loads((set_dir / "manifest.json").read_text())["shards"]
              for vid, rows in ragged_rows(set_dir / s["file"]).items()}  # fmt: skip
    assert sorted(videos) == sorted(name for name, *_ in LONG_FOOTAGE)
    for name, _, fps, frames, _ in LONG_FOOTAGE:
        v, duration = videos[name], sum(frames) / fps
        assert abs(len(v["features"]) - round(duration)) <= 1, (name, len(v["features"]), duration)
        spans = v["spans"]
        np.testing.assert_allclose(spans[:, 0], np.arange(len(spans)), atol=1e-4)  # 1 s apart, from 0
        np.testing.assert_allclose(spans[:-1, 1], spans[1:, 0], atol=1e-4)  # no gap, no overlap
        assert spans[-1, 1] == pytest.approx(duration, abs=1e-3), (name, spans[-1], duration)
        pictures = ffmpeg_crops(listing.parent / name, v["frame_indices"], SIZE, resize)
        np.testing.assert_allclose(
            v["features"].astype(np.float32), reference_features(weights_file, pictures), rtol=5e-3, atol=5e-3
        )


SIZE = 32  # the backbone's input, px: the rows' agreement does not depend on it


def ragged_rows(shard: Path) -> dict[str, dict[str, np.ndarray]]:
    """A ragged shard read with plain h5py: video id -> its features, frame_indices and spans."""
    with h5py.File(shard) as f:
        ends = np.cumsum(f["lengths"][()])
        starts = ends - f["lengths"][()]
        return {
            vid: {name: f[name][int(a) : int(b)] for name in ("features", "frame_indices", "spans")}
            for vid, a, b in zip(f["video_ids"].asstr()[()], starts, ends)
        }
