"""The reliability suite for audio sets: a silent video, a bad sound track, kill -9 during an audio run.

The fixtures (a UCF101-layout tree with and without sound, a visual and an audio set of it)
are test_audio_set.py's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import synth
from helpers import AUDIO_T, audio_cfg, shard_arrays, stored

from pipeline import store
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.extract.logmel import SILENCE_LOG_MEL

REPO = Path(__file__).resolve().parents[2]
T = AUDIO_T


def test_a_video_without_a_sound_track_has_silence_features(both, sound_tree):
    _, _, _, audio = both
    a = shard_arrays(audio)
    silent = a["has_audio"] == 0
    assert silent.any() and (~silent).any()
    x = a["features"].astype(np.float32)
    np.testing.assert_allclose(x[silent][..., :64], SILENCE_LOG_MEL, atol=1e-2)  # log(0 + 0.01) in every band
    np.testing.assert_allclose(x[silent][..., 64:], 0.0, atol=1e-3)  # nothing changes within a window
    assert np.abs(x[~silent][..., :64] - SILENCE_LOG_MEL).max() > 1.0  # the tones are there


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
    m = store.read_manifest(s.set_dir)
    assert m.complete and m.num_stored == 4 and m.num_failed == 1
    (failure,) = m.failures()
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
        "stages",
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
    again = extract_features(audio_cfg(tree, root, shard_size=2, workers=1), quiet=True)
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
