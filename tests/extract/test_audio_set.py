"""Stage one with MODALITY=audio, on generated UCF101-layout trees with and without sound tracks."""

from __future__ import annotations

import hashlib
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
import torch

from helpers import stored
from pipeline import store, synth
from pipeline.config import ExtractConfig
from stages.extract import extract_features
from stages.extract.logmel import SILENCE_LOG_MEL
from stages.extract.vggish import VGGish

REPO = Path(__file__).resolve().parents[2]
T = 4


def cfg_for(tree: Path, root: Path, **kw) -> ExtractConfig:
    return ExtractConfig(
        **(
            {
                "dataset": "ucf101",
                "data_dir": tree,
                "features_root": root,
                "frames": T,
                "device": "cpu",
                "workers": 2,
                "modality": "audio",
            }
            | kw
        )
    )


def file_hashes(set_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(set_dir.iterdir()) if p.is_file()}


def shard_arrays(set_dir: Path) -> dict[str, np.ndarray]:
    """Every committed shard's datasets, concatenated in shard order (plain h5py)."""
    parts: dict[str, list] = {}
    for s in store.load_manifest(set_dir)["shards"]:
        with h5py.File(set_dir / s["file"], "r") as f:
            for name in f:
                parts.setdefault(name, []).append(f[name].asstr()[()] if f[name].dtype.kind == "O" else f[name][()])
    return {k: np.concatenate(v) for k, v in parts.items()}


@pytest.fixture(scope="module")
def sound_tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sound-tree")
    return root, synth.make_ucf101_sound_tree(root)


@pytest.fixture(scope="module")
def both(sound_tree, tmp_path_factory):
    """(store root, visual set dir, its file hashes before the audio run, audio set dir)."""
    tree, _ = sound_tree
    root = tmp_path_factory.mktemp("av-store")
    visual = extract_features(cfg_for(tree, root, modality="rgb", weights="random", image_size=32), quiet=True).set_dir
    before = file_hashes(visual)
    audio = extract_features(cfg_for(tree, root), quiet=True).set_dir
    return root, visual, before, audio


def test_an_audio_set_lists_every_video_and_leaves_the_visual_set_alone(both, sound_tree):
    root, visual, before, audio = both
    _, clips = sound_tree
    m = store.load_manifest(audio)
    assert m["modality"] == "audio" and m["feature_dim"] == 128 and m["complete"] and m["frames"] == T
    assert m["num_stored"] == m["num_videos"] == len(clips) and m["num_failed"] == 0
    assert audio.name.startswith("audio-logmel-t4-") and audio.parent == visual.parent
    assert file_hashes(visual) == before  # the visual set of the same dataset is untouched
    vm = store.load_manifest(visual)
    assert vm["modality"] == "rgb" and (m["classes"], m["splits"]) == (vm["classes"], vm["splits"])
    a, v = shard_arrays(audio), shard_arrays(visual)
    for key in ("video_ids", "labels", "groups", "lengths", "frame_indices"):
        np.testing.assert_array_equal(a[key], v[key], err_msg=key)
    np.testing.assert_array_equal(a["timestamps"], v["timestamps"])  # step t is the same instant in both
    assert a["features"].shape == (len(clips), T, 128) and np.isfinite(a["features"].astype(np.float32)).all()
    has = dict(zip(a["video_ids"], a["has_audio"]))
    assert has == {vid: int(clip is not None) for vid, clip in clips.items()}


def test_a_video_without_a_sound_track_has_silence_features(both, sound_tree):
    _, _, _, audio = both
    a = shard_arrays(audio)
    silent = a["has_audio"] == 0
    assert silent.any() and (~silent).any()
    x = a["features"].astype(np.float32)
    np.testing.assert_allclose(x[silent][..., :64], SILENCE_LOG_MEL, atol=1e-2)  # log(0 + 0.01) in every band
    np.testing.assert_allclose(x[silent][..., 64:], 0.0, atol=1e-3)  # nothing changes within a window
    assert np.abs(x[~silent][..., :64] - SILENCE_LOG_MEL).max() > 1.0  # the tones are there


def test_a_rerun_is_a_no_op(both, sound_tree, capfd):
    tree, _ = sound_tree
    root, _, _, audio = both
    before = file_hashes(audio)
    again = extract_features(cfg_for(tree, root))
    assert again.reused_set and again.set_dir == audio and file_hashes(audio) == before
    assert "reusing feature set audio-logmel-t4-" in capfd.readouterr().err


def test_the_audio_id_covers_the_audio_settings_not_resnets(sound_tree, tmp_path):
    from stages.extract.plan import make_plan

    tree, _ = sound_tree
    base = make_plan(cfg_for(tree, tmp_path)).identity.id
    assert make_plan(cfg_for(tree, tmp_path, image_size=64, weights="random", precision="fp32")).identity.id == base
    assert make_plan(cfg_for(tree, tmp_path, audio_window=0.5)).identity.id != base
    assert make_plan(cfg_for(tree, tmp_path, frames=6)).identity.id.startswith("audio-logmel-t6-")


def test_vggish_embeddings_from_a_weights_file(sound_tree, tmp_path):
    tree, _ = sound_tree
    torch.manual_seed(0)
    weights = tmp_path / "vggish.pth"
    torch.save(VGGish().state_dict(), weights)
    s = extract_features(
        cfg_for(tree, tmp_path / "store", audio_features="vggish", audio_weights=str(weights)), quiet=True
    )
    m = store.load_manifest(s.set_dir)
    assert s.set_dir.name.startswith("audio-vggish-sha256-t4-") and m["identity"]["weights"].startswith("sha256:")
    assert m["complete"] and m["num_failed"] == 0 and m["feature_dim"] == 128


def test_a_bad_sound_track_fails_with_its_reason_and_the_rest_is_stored(tmp_path):
    corpus = synth.make_sound_corpus(tmp_path / "corpus")
    tree = tmp_path / "tree"
    for name in ("mp3_44k_stereo.avi", "aac_48k_stereo.mp4", "vorbis_8k_mono.mkv", "no_sound.avi", "corrupt_sound.avi"):
        (tree / "clips").mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus[name].path, tree / "clips" / name)
    s = extract_features(
        ExtractConfig(
            dataset="folder", data_dir=tree, features_root=tmp_path / "store", frames=T, modality="audio", workers=2
        ),
        quiet=True,
    )
    m = store.load_manifest(s.set_dir)
    assert m["complete"] and m["num_stored"] == 4 and m["num_failed"] == 1
    (failure,) = store.all_failures(m)
    assert failure["video_id"] == "clips/corrupt_sound.avi" and failure["reason"].startswith("audio: not decodable")
    a = shard_arrays(s.set_dir)
    assert dict(zip(a["video_ids"], a["has_audio"].tolist())) == {
        "clips/aac_48k_stereo.mp4": 1,
        "clips/mp3_44k_stereo.avi": 1,
        "clips/no_sound.avi": 0,
        "clips/vorbis_8k_mono.mkv": 1,
    }


def test_kill_9_during_an_audio_run_then_the_rerun_completes_the_same_set(sound_tree, both, tmp_path):
    """SIGKILL a real audio run once its first shard is committed: committed shards stay, the
    rerun computes the rest, and the set equals one made in a single run."""
    tree, _ = sound_tree
    root = tmp_path / "store"
    args = [
        sys.executable,
        "-m",
        "pipeline",
        "features",
        "--dataset",
        "ucf101",
        "--data-dir",
        str(tree),
        "--features-root",
        str(root),
        "--frames",
        str(T),
        "--modality",
        "audio",
        "--shard-size",
        "2",
        "--workers",
        "1",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    manifests = lambda: list(root.glob("*/*/manifest.json"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifests() and store.load_manifest(manifests()[0].parent)["shards"]:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    set_dir = manifests()[0].parent
    before = store.load_manifest(set_dir)
    assert not before["complete"] and before["shards"]
    committed = {s["file"]: s["sha256"] for s in before["shards"]}
    again = extract_features(cfg_for(tree, root, shard_size=2, workers=1), quiet=True)
    after = store.load_manifest(set_dir)
    assert after["complete"] and again.computed == after["num_stored"] - sum(s["videos"] for s in before["shards"])
    assert all(s["sha256"] == committed[s["file"]] for s in after["shards"] if s["file"] in committed)
    assert store.verify(set_dir) == []
    _, _, _, reference = both  # the same settings in one run (another shard size: compared video by video)
    got, want = stored(set_dir), stored(reference)
    assert sorted(got) == sorted(want)
    for vid, (x, n, y) in want.items():
        np.testing.assert_array_equal(got[vid][0], x, err_msg=vid)
        assert got[vid][1:] == (n, y)
