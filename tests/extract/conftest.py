"""Fixtures of the stage-one tests that need sets with sound: a UCF101-layout tree where some
classes have a sound track, and a visual and an audio set of it (made once per session); and
footage with hard cuts in both containers for the families' agreement with their libraries
(family_reference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import synth
from family_reference import make_cut_footage
from helpers import audio_cfg, file_hashes

from stages.extract import extract_features


@pytest.fixture(scope="session")
def sound_tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sound-tree")
    return root, synth.make_ucf101_sound_tree(root)


@pytest.fixture(scope="session")
def both(sound_tree, tmp_path_factory):
    """(store root, visual set dir, its file hashes before the audio run, audio set dir)."""
    tree, _ = sound_tree
    root = tmp_path_factory.mktemp("av-store")
    visual = extract_features(
        audio_cfg(tree, root, modality="rgb", weights="random", image_size=32), quiet=True
    ).set_dir
    before = file_hashes(visual)
    audio = extract_features(audio_cfg(tree, root), quiet=True).set_dir
    return root, visual, before, audio


@pytest.fixture(scope="session")
def cut_csv(tmp_path_factory) -> Path:
    """list.csv of family_reference.FOOTAGE: four clips of three scenes, .avi and .mp4, one portrait each."""
    return make_cut_footage(tmp_path_factory.mktemp("cuts"))
