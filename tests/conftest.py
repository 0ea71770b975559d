"""Shared fixtures: dataset trees in the official layouts, made of videos generated with ffmpeg.

Every tree is built once per test session (tests/synth/, all cores), for all of the session's
worker processes (tests/once.py), and only the ones a run asks for are built. Treat them as
read-only: copy a tree before changing it (except `bad_corpus`, whose FIFO would block a copy).

Also here: the session is offline (tests/offline.py, imported before anything else); ffmpeg must be installed (a missing one fails every test with the install hint,
it never skips them), and tests marked `gpu` are skipped where CUDA is not available.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import offline  # first of all: the session offline before any library reads its switches
import pytest
import synth
from helpers import UCF_TREE_CLASSES, UCF_TREE_SETTINGS, without_ffprobe
from once import once
from schedule import Schedule

pytest_plugins = ["pytester"]  # tests/test_offline.py runs a session of its own


def pytest_configure(config):
    config.pluginmanager.register(offline, "offline")  # its checks after each test phase
    config.pluginmanager.register(Schedule(config), "schedule")  # the longest files start first


def pytest_collection_modifyitems(config, items):
    """Skip tests marked gpu, with the reason, when torch sees no CUDA device."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False on this machine")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def ffmpeg_installed():
    """Every test needs generated videos: without ffmpeg, fail loudly (never skip) with the fix.

    ffprobe too, except where VIDSTORE_TESTS_WITHOUT_FFPROBE=1 says the machine has only a
    static ffmpeg (`make gpu-check` on a GPU machine: imageio-ffmpeg ships no ffprobe, and
    stage one probes with ffmpeg itself there).
    """
    names = ["ffmpeg"] + ([] if without_ffprobe() else ["ffprobe"])
    try:
        for name in names:
            synth.require_ffmpeg(name)
    except synth.SynthError as e:
        pytest.fail(f"the test suite needs {' and '.join(names)}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory) -> Path:
    """The embedded sample dataset (UCF101 layout, 6 classes, 48 clips), exactly as `make demo` makes it."""
    return once(tmp_path_factory, "sample", lambda root: str(synth.make_sample_dataset(root)))[0]


@pytest.fixture(scope="session")
def ucf_tree(tmp_path_factory) -> Path:
    """A UCF101-layout root (UCF-101/ + ucfTrainTestlist/, CRLF, 3 splits) of 18 clips; see UCF_TREE_CLASSES."""
    build = lambda root: synth.make_ucf101_tree(root, UCF_TREE_CLASSES, **UCF_TREE_SETTINGS)
    return once(tmp_path_factory, "ucf101", build)[0]


@pytest.fixture(scope="session")
def hmdb_tree(tmp_path_factory) -> Path:
    """An HMDB51-layout root: 3 classes x 3 films x 2 clips, testTrainMulti_7030_splits/ with marks 1/2/0."""
    return once(tmp_path_factory, "hmdb51", lambda root: list(synth.make_hmdb51_tree(root)))[0]


@pytest.fixture(scope="session")
def folder_tree(tmp_path_factory) -> Path:
    """root/<class>/<video>: 2 classes x 3 clips in .avi, .mp4 and .mkv."""
    return once(tmp_path_factory, "folder", synth.make_folder_tree)[0]


@pytest.fixture(scope="session")
def csv_dataset(tmp_path_factory) -> Path:
    """Path of a list.csv ('path,label,split', paths relative to its folder) over 9 clips of 3 classes."""
    return Path(once(tmp_path_factory, "csv", lambda root: str(synth.make_csv_dataset(root)))[1])


@pytest.fixture(scope="session")
def temporal_tree(tmp_path_factory) -> Path:
    """UCF101-layout root whose 4 classes hold the same 3 scenes in different orders (48 clips, 128x96).

    The class -> scene order table is synth.order_classes(4).
    """
    return once(tmp_path_factory, "temporal", lambda root: list(synth.make_temporal_order_dataset(root)))[0]


@dataclass(frozen=True)
class BadCorpus:
    root: Path  # a folder-per-class tree: must_fail/, must_succeed/, twin/
    expected: dict[str, str]  # relative path -> "must fail: ..." | "must succeed: ..."

    def paths(self, outcome: str) -> list[str]:
        """Relative paths whose expected outcome is synth.MUST_FAIL or synth.MUST_SUCCEED."""
        return [rel for rel, what in self.expected.items() if what.startswith(outcome)]


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory) -> BadCorpus:
    """The bad-input corpus of issue 5 (synth.make_bad_corpus). Holds a FIFO: never copytree it."""
    return BadCorpus(*once(tmp_path_factory, "bad", synth.make_bad_corpus))


@pytest.fixture(scope="session")
def missing_listed_tree(tmp_path_factory) -> tuple[Path, str]:
    """(UCF101-layout root, relative path listed in its split files but absent from UCF-101/)."""
    return once(tmp_path_factory, "missing", synth.make_missing_listed_tree)


@dataclass(frozen=True)
class UnreadableTree:
    root: Path  # folder-per-class tree: readable/ok.avi, unreadable/locked.avi (mode 000)
    path: Path  # locked.avi
    user: int | None  # the uid that cannot read it: 65534 (nobody) when we are root, else None (we cannot)
    env: dict[str, str]  # FFMPEG_BINARY/FFPROBE_BINARY wrappers that run ffmpeg as `user`; {} when not root


# Runs the real ffmpeg/ffprobe as an unprivileged user: started by root's interpreter, it
# drops to the uid, then execs the binary (world-executable, unlike a venv under /root).
WRAPPER = """#!{python}
import os, sys
os.setgroups([])
os.setgid({uid})
os.setuid({uid})
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


@pytest.fixture(scope="session")
def unreadable_tree() -> Iterator[UnreadableTree]:
    """A chmod 000 file, and how to make it unreadable for real.

    root reads any file whatever its mode, and CI runs as root. There, use `env`: with it
    set (monkeypatch.setenv), every ffmpeg/ffprobe the code under test starts runs as
    nobody (65534), for whom locked.avi is unreadable and the rest of the tree is readable.
    (Running the whole test interpreter as nobody does not work where the venv's python
    lives under /root, mode 0700.) The tree lives in a 0755 tempfile.mkdtemp(), since
    pytest's own tmp dirs are 0700 and nobody could not reach them.
    """
    base = Path(tempfile.mkdtemp(prefix="vidstore-unreadable-"))
    base.chmod(0o755)
    path = synth.make_unreadable_tree(base / "tree")
    user, env = None, {}
    if os.geteuid() == 0:
        user = 65534
        for name in ("ffmpeg", "ffprobe")[: 1 if without_ffprobe() else 2]:
            wrapper = base / f"{name}-as-nobody"
            wrapper.write_text(WRAPPER.format(python=sys.executable, uid=user, real=synth.require_ffmpeg(name)))
            wrapper.chmod(0o755)
            env[f"{name.upper()}_BINARY"] = str(wrapper)
    yield UnreadableTree(base / "tree", path, user, env)
    path.chmod(0o644)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    """A ResNet-50 state dict the tests write themselves (seeded), standing in for ImageNet's."""
    import torch
    import torchvision

    def write(folder: Path) -> str:
        torch.manual_seed(123)
        folder.mkdir()
        torch.save(torchvision.models.resnet50().state_dict(), folder / "resnet50.pth")
        return str(folder / "resnet50.pth")

    return Path(once(tmp_path_factory, "weights", write)[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 server on loopback (tests/s3server.py), with this process's environment pointed at
    it (endpoint, keys, none of the user's ~/.aws, a shard cache of the module's own) for the module;
    processes a test starts inherit it."""
    from s3server import S3Server, environment, s3_env

    server = S3Server()
    with environment(s3_env(server, tmp_path_factory.mktemp("s3-cache"))):
        yield server
    server.stop()
