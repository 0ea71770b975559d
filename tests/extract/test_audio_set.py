"""Stage one with MODALITY=audio, on generated UCF101-layout trees with and without sound tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from helpers import AUDIO_T, audio_cfg, file_hashes, shard_arrays

from pipeline import store
from stages.extract import extract_features
from stages.extract.extractors.vggish import VGGish

REPO = Path(__file__).resolve().parents[2]
T = AUDIO_T


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


def test_a_rerun_is_a_no_op(both, sound_tree, capfd):
    tree, _ = sound_tree
    root, _, _, audio = both
    before = file_hashes(audio)
    again = extract_features(audio_cfg(tree, root))
    assert again.reused_set and again.set_dir == audio and file_hashes(audio) == before
    assert "reusing feature set audio-logmel-t4-" in capfd.readouterr().err


def test_the_audio_id_covers_the_audio_settings_not_resnets(sound_tree, tmp_path):
    from stages.extract.plan import make_plan

    tree, _ = sound_tree
    base = make_plan(audio_cfg(tree, tmp_path)).identity.id
    assert make_plan(audio_cfg(tree, tmp_path, image_size=64, weights="random", precision="fp32")).identity.id == base
    assert make_plan(audio_cfg(tree, tmp_path, audio_window=0.5)).identity.id != base
    assert make_plan(audio_cfg(tree, tmp_path, frames=6)).identity.id.startswith("audio-logmel-t6-")


def test_vggish_embeddings_from_a_weights_file(sound_tree, tmp_path):
    tree, _ = sound_tree
    torch.manual_seed(0)
    weights = tmp_path / "vggish.pth"
    torch.save(VGGish().state_dict(), weights)
    s = extract_features(
        audio_cfg(tree, tmp_path / "store", audio_features="vggish", audio_weights=str(weights)), quiet=True
    )
    m = store.load_manifest(s.set_dir)
    assert s.set_dir.name.startswith("audio-vggish-sha256-t4-") and m["identity"]["weights"].startswith("sha256:")
    assert m["complete"] and m["num_failed"] == 0 and m["feature_dim"] == 128
