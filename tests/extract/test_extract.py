"""Stage one end to end on generated videos in the real UCF101 layout."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import synth
import torch
import torchvision
from helpers import stored

from pipeline import files, store
from pipeline.files import file_sha256
from stages.extract import config_from_manifest, extract_features
from stages.extract.config import ExtractConfig
from stages.extract.datasets import load_ucf101
from stages.extract.decode import DecodeJob, decode_video
from stages.extract.plan import make_plan

# Small frames keep ResNet-50 cheap on a 2-core CPU; T stays the product default (16).
SIZE = 32


@pytest.fixture(scope="module")
def ucf_cfg(ucf_tree, weights_file, tmp_path_factory):
    return ExtractConfig(
        dataset="ucf101",
        data_dir=ucf_tree,
        features_root=tmp_path_factory.mktemp("store"),
        weights=str(weights_file),
        image_size=SIZE,
        shard_size=4,
        workers=2,
        device="cpu",
    )


@pytest.fixture(scope="module")
def ucf_set(ucf_cfg):
    summary = extract_features(ucf_cfg)
    return summary, store.load_manifest(summary.set_dir)


def test_every_video_once_with_classind_labels_and_three_splits(ucf_set, ucf_tree):
    summary, m = ucf_set
    ds = load_ucf101(ucf_tree)
    assert m["complete"] and summary.failed == 0
    rows = stored(summary.set_dir)
    assert sorted(rows) == [r.video_id for r in ds.records]
    for vid, (x, n, y) in rows.items():
        assert x.shape == (16, 2048) and x.dtype == np.float16 and n == 16
        assert m["classes"][y].lower() == vid.split("/")[0].lower()
    assert m["classes"] == ds.classes
    assert sorted(m["splits"]) == ["1", "2", "3"]
    for k in ("1", "2", "3"):
        assert set(m["splits"][k]["train"]) | set(m["splits"][k]["test"]) <= set(rows)


def test_rerun_computes_nothing_and_says_so(ucf_cfg, ucf_set, capfd):
    again = extract_features(ucf_cfg)
    assert again.reused_set and again.computed == 0 and again.set_dir == ucf_set[0].set_dir
    assert "reusing feature set" in capfd.readouterr().err


def test_other_settings_make_another_feature_set(ucf_cfg, ucf_set):
    a = extract_features(ucf_cfg.replace(frames=4, shard_size=64))
    assert a.set_dir != ucf_set[0].set_dir and a.set_dir.parent == ucf_set[0].set_dir.parent
    assert store.load_manifest(ucf_set[0].set_dir)["complete"]  # untouched
    x, n, _ = next(iter(stored(a.set_dir).values()))
    assert x.shape == (4, 2048)


def test_the_decoder_is_in_the_id_and_its_libraries_in_the_manifest(ucf_cfg, ucf_set):
    _, m = ucf_set
    assert ucf_cfg.decoder == "pyav" and m["identity"]["decoder"] == "pyav"
    versions = m["config"]["decoder_versions"]
    assert versions["pyav"] and versions["ffmpeg"] and versions["libavcodec"], versions
    other = make_plan(ucf_cfg.replace(decoder="ffmpeg-cli"))  # another FFmpeg build may give other pixels
    assert other.identity.decoder == "ffmpeg-cli" and other.identity.id != m["feature_set_id"]
    assert config_from_manifest(m)[0].decoder == "pyav"
    made_before_the_option = m | {"config": {k: v for k, v in m["config"].items() if k != "decoder"}}
    assert config_from_manifest(made_before_the_option)[0].decoder == "ffmpeg-cli"


def test_features_equal_direct_torchvision_forward_of_the_same_frames(ucf_set, ucf_cfg, weights_file):
    """Stage one with the default decoder (pyav) against an independent fp32 forward of the
    frames that decoder gives, within fp16 noise."""
    summary, m = ucf_set
    vid, (x, n, _) = sorted(stored(summary.set_dir).items())[3]
    dec = decode_video(Path(m["video_root"]) / vid, DecodeJob(16, SIZE, ucf_cfg.resize_to, decoder=ucf_cfg.decoder))
    model = torchvision.models.resnet50()
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    model.fc = torch.nn.Identity()
    frames = torch.from_numpy(dec.frames.copy()).permute(0, 3, 1, 2).float() / 255
    frames = torchvision.transforms.functional.normalize(frames, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        ref = model.eval()(frames).numpy()
    np.testing.assert_allclose(x.astype(np.float32), ref, rtol=5e-3, atol=5e-3)


def test_shards_carry_schema_config_frame_indices_and_timestamps(ucf_set):
    summary, m = ucf_set
    s = m["shards"][0]
    with h5py.File(summary.set_dir / s["file"], "r") as f:
        assert f.attrs["schema_version"] == 1 and f.attrs["feature_set_id"] == m["feature_set_id"]
        assert json.loads(f.attrs["config"])["image_size"] == SIZE
        idx, ts = f["frame_indices"][()], f["timestamps"][()]
        assert idx.dtype == np.int32 and (np.diff(idx, axis=1) > 0).all()
        assert ts.dtype == np.float32 and (np.diff(ts, axis=1) > 0).all()
    assert store.verify(summary.set_dir) == []
    assert all(s["sha256"] == file_sha256(summary.set_dir / s["file"]) for s in m["shards"])


def test_interrupted_run_resumes_only_the_missing_shards(ucf_cfg, ucf_set, tmp_path):
    """SIGKILL a real run once its first shard is committed; the rerun does the rest."""
    cfg = ucf_cfg.replace(features_root=tmp_path / "store", shard_size=2, workers=1)
    args = [
        sys.executable,
        "-m",
        "stages",
        "features",
        "--dataset",
        "ucf101",
        "--data-dir",
        str(cfg.data_dir),
        "--features-root",
        str(cfg.features_root),
        "--weights",
        cfg.weights,
        "--size",
        str(SIZE),
        "--shard-size",
        "2",
        "--workers",
        "1",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifests = lambda: list((tmp_path / "store").glob("*/*/manifest.json"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (manifests() and json.loads(manifests()[0].read_text())["shards"]):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = json.loads(manifests()[0].read_text())
    assert before["shards"] and not before["complete"]
    resumed = extract_features(cfg)
    assert resumed.reused == before["num_stored"] and resumed.computed == resumed.total - before["num_stored"]
    final, reference = stored(resumed.set_dir), stored(ucf_set[0].set_dir)
    assert sorted(final) == sorted(reference)
    for vid in final:
        np.testing.assert_allclose(
            final[vid][0].astype(np.float32), reference[vid][0].astype(np.float32), rtol=1e-2, atol=1e-2
        )
    assert not [p for p in resumed.set_dir.iterdir() if files.TMP_MARK in p.name]


def test_corrupt_and_short_videos_among_good_ones(ucf_tree, ucf_cfg, tmp_path):
    """A garbage file lands in failures.jsonl with its reason; a short clip is padded, not failed."""
    root = tmp_path / "tree"  # a folder-per-class tree with one class of the UCF tree
    cls = sorted((ucf_tree / "UCF-101").iterdir())[0]
    shutil.copytree(cls, root / cls.name)
    (root / cls.name / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage")
    subprocess.run(
        [
            synth.require_ffmpeg(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=96x72:rate=10",
            "-frames:v",
            "5",
            "-c:v",
            "mpeg4",
            str(root / cls.name / "short.avi"),
        ],
        check=True,
    )
    cfg = ucf_cfg.replace(dataset="folder", data_dir=root, features_root=tmp_path / "store")
    summary = extract_features(cfg)
    m = store.load_manifest(summary.set_dir)
    fails = [json.loads(line) for line in (summary.set_dir / "failures.jsonl").read_text().splitlines()]
    assert [f["video_id"] for f in fails] == [f"{cls.name}/broken.avi"]
    assert fails[0]["reason"] == "no video stream (container: avi)"  # an AVI header with nothing inside
    rows = stored(summary.set_dir)
    assert len(rows) == len(list((root / cls.name).iterdir())) - 1 and m["complete"] and m["num_failed"] == 1
    x, n, _ = rows[f"{cls.name}/short.avi"]
    assert n == 5 and not x[5:].any() and x[:5].any()


def test_plain_h5py_with_the_readme_schema_equals_the_projects_reader(ucf_set):

    set_dir = ucf_set[0].set_dir
    sets = store.open_feature_sets([set_dir])
    index = store.read_index(sets)
    features = store.read_features(sets, index, np.arange(len(index.video_ids)))
    plain = stored(set_dir)
    assert sorted(index.video_ids.tolist()) == sorted(plain)
    for i, vid in enumerate(index.video_ids):
        x, n, y = plain[vid]
        np.testing.assert_array_equal(features[i], x)
        assert index.lengths[i] == n and index.labels[i] == y
