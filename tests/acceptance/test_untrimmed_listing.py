"""`make features DATASET=csv DATA_DIR=list.csv` on a listing of untrimmed videos: a CSV with a
path column only (and a split), one path relative to the CSV's folder and one absolute. The set
is unlabelled (classes [], labels -1), the Python API reads it, and `make train` refuses it."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import synth
from make_runs import run_make

from pipeline import FeatureStore, store

pytestmark = pytest.mark.acceptance


def test_a_path_only_csv_with_an_absolute_path_is_an_unlabelled_set(tmp_path, venv_ready):
    listing = tmp_path / "data" / "long" / "list.csv"
    far = tmp_path / "elsewhere" / "lecture.avi"  # outside the CSV's folder: listed by its absolute path
    synth.make_clips(
        [
            dict(path=listing.parent / "talks" / "a.avi", scenes=["bars", "box"], size=(64, 48), seed="untrimmed/a"),
            dict(path=far, scenes=["sunset", "static"], size=(64, 48), seed="untrimmed/far"),
        ]
    )
    listing.write_text(f"path,split\ntalks/a.avi,train\n{far},test\n")
    where = ("DATASET=csv", f"DATA_DIR={listing}")
    made = run_make(tmp_path, "features", *where, "WEIGHTS=random", "SIZE=32", "FRAMES=2")
    assert made.returncode == 0, made
    (set_dir,) = (tmp_path / "data" / "features").glob("*/resnet50-random-t2-32px-*")
    manifest = store.read_manifest(set_dir)
    assert manifest.classes == [] and manifest.failures() == [] and manifest.complete, manifest
    assert manifest.splits == {"1": {"train": ["talks/a.avi"], "test": [far.as_posix()]}}
    (shard,) = manifest.shards
    with h5py.File(set_dir / shard.file) as f:
        ids = [v.decode() if isinstance(v, bytes) else v for v in f["video_ids"][()]]
        assert ids == [far.as_posix(), "talks/a.avi"] and f["labels"][()].tolist() == [-1, -1]
    assert "unlabelled (labels -1)" in run_make(tmp_path, "store-info", f"ID={set_dir.name}").stdout

    fs = FeatureStore(tmp_path / "data" / "features").open(set_dir.name)
    test = fs.arrays(split=1, part="test")
    assert test["video_ids"].tolist() == [far.as_posix()] and test["labels"].tolist() == [-1]
    assert test["features"].shape == (1, 2, 2048) and np.isfinite(test["features"]).all()
    assert [item["video_id"] for item in fs.dataset(split=1, part="train")] == ["talks/a.avi"]

    trained = run_make(tmp_path, "train", *where, f"FEATURES={set_dir.name}")
    assert trained.returncode == 2 and "Traceback" not in trained.stderr, trained
    assert "has no labels" in trained.stderr and "Add a label column to the CSV" in trained.stderr, trained
    assert "Error 2" in trained.stderr  # the command's own exit status 2 (a usage error), which make passes on
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("metrics.json"))
