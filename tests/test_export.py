"""`vidstore export`: one float32 .npy per video equal to fs.video(...), the JSON index, ActionFormer's
files, and an export stopped midway that leaves no half-written file and completes on a rerun."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from ragged_sets import fixed_twin, ragged_set

from pipeline import FeatureStore
from stages.cli import main as cli
from stages.export import run as export_run
from stages.export.config import ExportConfig

DURATIONS = [2.0, 7.5, 1.0, 4.0, 3.2, 6.0, 1.2, 2.5, 5.0, 0.6, 3.0, 2.0]  # groups of 4: the third is the test side


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-store")
    ragged, truth = ragged_set(root, DURATIONS, rate=2.0, clip=4)  # a clip model at FPS=2: K=4
    strided, _ = ragged_set(root, DURATIONS, stride=8, dataset="csv-strided")
    return root, ragged, strided, fixed_twin(root, truth, 6)


def export(root, set_dir, out, fmt="npy"):
    result = CliRunner().invoke(
        cli, ["export", "--features", set_dir.name, "--out", str(out), "--format", fmt, "--features-root", str(root)]
    )
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("which", ["ragged", "strided", "fixed"])
def test_every_array_equals_fs_video_and_the_index_says_where_rows_come_from(sets, tmp_path, which):
    root, ragged, strided, fixed = sets
    set_dir = {"ragged": ragged, "strided": strided, "fixed": fixed}[which]
    export(root, set_dir, tmp_path)
    fs = FeatureStore(root).open(str(set_dir))
    index = json.loads((tmp_path / "videos.json").read_text())
    assert sorted(index["videos"]) == sorted(fs.index.video_ids) and index["feature_dim"] == 8
    for vid, entry in index["videos"].items():
        want = fs.video(vid)
        assert entry["file"] == vid.removesuffix(".avi") + ".npy"
        got = np.load(tmp_path / entry["file"])
        assert got.dtype == np.float32 and got.shape == want["features"].shape == (entry["rows"], 8)
        np.testing.assert_array_equal(got, want["features"])
        np.testing.assert_allclose(export_run.expand_spans(entry["spans"], entry["rows"]), want["spans"], atol=2e-4)
        assert (entry["fps"], entry["label_id"]) == (want["fps"], want["label"])
        assert entry["subset"] in ("train", "test")
    sampling = index["sampling"]
    if which == "ragged":
        assert (sampling["fps"], sampling["clip_frames"], sampling["stride"]) == (2.0, 4, None)
    elif which == "strided":
        assert (sampling["stride"], sampling["clip_frames"]) == (8, 1)
        assert all(isinstance(e["spans"], dict) for e in index["videos"].values())  # regular: the compact form
    else:
        assert (sampling["frames"], index["layout"]) == (6, "fixed")


def test_actionformer_reads_the_export_as_its_thumos_loader_does(sets, tmp_path):
    """ActionFormer's THUMOS14 loader: database[id] with subset, fps, duration, annotations; the features at
    feat_folder + file_prefix + id + file_ext, (T, C); feat_stride and num_frames from its config."""
    root, _, strided, _ = sets
    export(root, strided, tmp_path, "actionformer")
    database = json.loads((tmp_path / "annotations.json").read_text())["database"]
    fs = FeatureStore(root).open(str(strided))
    assert len(database) == fs.num_videos
    for key, value in database.items():
        assert value["subset"] in ("train", "test") and value["annotations"] == []
        want = fs.video(key + ".avi")
        assert value["fps"] == 25.0 and value["duration"] == pytest.approx(want["duration"])
        feats = np.load(os.path.join(tmp_path, "" + key + ".npy")).astype(np.float32)
        np.testing.assert_array_equal(feats, want["features"])
        assert value["label"] == fs.classes[want["label"]]
    config = (tmp_path / "actionformer.yaml").read_text()
    for line in ("feat_stride: 8,", "num_frames: 1,", "input_dim: 8,", "file_ext: .npy,", "default_fps: 25,"):
        assert f"  {line}" in config, config
    assert f"json_file: {(tmp_path / 'annotations.json').resolve()}," in config
    assert "train_split: ['train']" in config and "val_split: ['test']" in config


def test_a_stopped_export_leaves_whole_files_and_a_rerun_completes_it(sets, tmp_path, monkeypatch):
    """Stopped in the middle of writing its fourth array (half of its bytes out): no file under a final
    name is partial, no index; the rerun removes a killed write's temporary file and completes."""
    root, ragged, _, _ = sets
    real_save, saved = np.save, []

    def stop_in_the_fourth(file, arr, *args, **kw):
        if len(saved) == 3:
            blob = io.BytesIO()
            real_save(blob, arr)
            (file.write if hasattr(file, "write") else open(file, "wb").write)(
                blob.getvalue()[: len(blob.getvalue()) // 2]
            )
            raise KeyboardInterrupt
        real_save(file, arr, *args, **kw)
        saved.append(arr)

    monkeypatch.setattr(export_run.np, "save", stop_in_the_fourth)
    cfg = ExportConfig(features=ragged.name, out=tmp_path, features_root=root)
    with pytest.raises(KeyboardInterrupt):
        export_run.export(cfg)
    monkeypatch.setattr(export_run.np, "save", real_save)
    assert not (tmp_path / "videos.json").exists()
    arrays = sorted(tmp_path.rglob("*.npy"))
    assert len(arrays) == 3 and all(np.load(a).shape[1] == 8 for a in arrays)  # whole ones only
    (arrays[0].parent / f"{arrays[0].name}.tmp-4242").write_bytes(b"half")  # as a killed write leaves it
    export_run.export(cfg)
    index = json.loads((tmp_path / "videos.json").read_text())
    assert len(index["videos"]) == len(DURATIONS) and not list(tmp_path.rglob("*.tmp-*"))


def test_export_without_a_set_or_a_folder_is_a_usage_error(tmp_path):
    out = CliRunner().invoke(cli, ["export", "--out", str(tmp_path)])
    assert out.exit_code == 2 and "--features (FEATURES=): name the feature set to export" in out.output
    out = CliRunner().invoke(cli, ["export", "--features", "x"])
    assert out.exit_code == 2 and "--out (OUT=)" in out.output
