"""Integrity (issue 5): flipped bytes are caught, stage two refuses bad shards, a full disk costs nothing.

Also the safety rules that protect stored data: metadata is JSON (never pickle) and
every torch.load of a file a user hands us is weights_only=True.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from reliability_harness import REPO, check_feature_set, make_tiny_tree, read_set

from pipeline import files, store
from stages.cli import main as cli
from stages.extract import extract_features
from stages.extract.config import ExtractConfig

SHARD_SIZE = 3


def tiny_cfg(tree: Path, features_root: Path, **kw) -> ExtractConfig:
    return ExtractConfig(
        **{
            "dataset": "folder",
            "data_dir": tree,
            "features_root": features_root,
            "weights": "random",
            "image_size": 32,
            "frames": 4,
            "shard_size": SHARD_SIZE,
            "workers": 2,
            "device": "cpu",
            **kw,
        }
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity-tree")
    make_tiny_tree(root, clips_per_class=4)  # 8 videos -> 3 shards
    return root


@pytest.fixture(scope="module")
def reference(tree, tmp_path_factory) -> tuple[Path, list[str], np.ndarray]:
    """(set_dir, ids, features) of a complete set: copy it before changing anything."""
    summary = extract_features(tiny_cfg(tree, tmp_path_factory.mktemp("integrity-store")), quiet=True)
    ids, feats = read_set(summary.set_dir)
    return summary.set_dir, ids, feats


def copy_set(set_dir: Path, root: Path) -> Path:
    dest = root / set_dir.parent.name / set_dir.name
    shutil.copytree(set_dir, dest, ignore=shutil.ignore_patterns(".claims", ".lock"))
    return dest


def flip_feature_byte(shard: Path) -> None:
    """Flip one bit inside the stored features: h5py still reads the file without complaint."""
    with h5py.File(shard, "r") as f:
        offset = f["features"].id.get_offset() + f["features"].id.get_storage_size() // 2
    with open(shard, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)[0]
        fh.seek(offset)
        fh.write(bytes([byte ^ 0x01]))
    with h5py.File(shard, "r") as f:
        f["features"][()]  # silent corruption: plain h5py cannot tell


# ---------------------------------------------------------------- store verify
def test_store_verify_catches_a_single_flipped_byte_and_repair_recomputes_only_that_shard(tree, reference, tmp_path):
    set_dir = copy_set(reference[0], tmp_path)
    ok = CliRunner().invoke(cli, ["store", "verify", "--features-root", str(tmp_path)])
    assert ok.exit_code == 0 and "OK (3 shards checked)" in ok.output, ok.output

    flip_feature_byte(set_dir / "shard-00001.h5")
    bad = subprocess.run(
        [sys.executable, "-m", "stages", "store", "verify", "--features-root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )  # the command users run
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "CORRUPT" in bad.stdout and "shard-00001.h5: sha256" in bad.stdout
    assert "shard-00000.h5" not in bad.stdout and "shard-00002.h5" not in bad.stdout

    fixed = CliRunner().invoke(cli, ["store", "verify", "--features-root", str(tmp_path), "--repair"])
    assert fixed.exit_code == 0 and "dropped 1 shard(s)" in fixed.output, fixed.output
    summary = extract_features(tiny_cfg(tree, tmp_path), quiet=True)
    assert summary.computed == SHARD_SIZE  # only the dropped shard
    ids, feats = read_set(set_dir)
    assert ids == reference[1] and np.array_equal(feats, reference[2])
    assert CliRunner().invoke(cli, ["store", "verify", "--features-root", str(tmp_path)]).exit_code == 0


def test_store_verify_catches_a_truncated_or_missing_shard(reference, tmp_path):
    set_dir = copy_set(reference[0], tmp_path)
    with open(set_dir / "shard-00000.h5", "r+b") as f:
        f.truncate(1000)
    (set_dir / "shard-00002.h5").unlink()
    result = CliRunner().invoke(cli, ["store", "verify", "--features-root", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert (
        "shard-00000.h5: size 1000" in result.output
        and "shard-00002.h5: listed in the manifest but missing" in result.output
    )


# ---------------------------------------------------------------- stage two refuses bad shards
def test_stage_two_reader_refuses_a_corrupt_shard(reference, tmp_path):
    set_dir = copy_set(reference[0], tmp_path)
    flip_feature_byte(set_dir / "shard-00001.h5")
    sets = store.open_feature_sets([set_dir])
    index = store.read_index(sets)  # ids/labels only: still readable
    with pytest.raises(store.IntegrityError, match=r"shard-00001\.h5: sha256 does not match the manifest"):
        store.read_features(sets, index, np.arange(len(index.video_ids)))
    with pytest.raises(store.IntegrityError):
        sets[0].read_shard("shard-00001.h5")
    # The intact shards still read, so nothing good is lost.
    assert sets[0].read_shard("shard-00000.h5")["features"].shape == (SHARD_SIZE, 4, 2048)
    entry = store.load_manifest(set_dir)["shards"][1]
    with pytest.raises(store.IntegrityError):
        store.read_shard(set_dir / entry["file"], entry["sha256"])


def test_stage_two_training_stops_on_a_corrupt_shard_with_a_clear_error(reference, tmp_path):
    set_dir = copy_set(reference[0], tmp_path)
    flip_feature_byte(set_dir / "shard-00001.h5")
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--features",
            str(set_dir),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1 and "Usage:" not in result.output, result.output
    assert "shard-00001.h5: sha256 does not match the manifest" in result.output and "store verify" in result.output


def test_stage_two_reader_refuses_a_shard_the_manifest_does_not_list(reference, tmp_path):
    set_dir = copy_set(reference[0], tmp_path)
    shutil.copy(set_dir / "shard-00000.h5", set_dir / "shard-00003.h5")  # a stray file: copied, or left by a crash
    sets = store.open_feature_sets([set_dir])
    with pytest.raises(store.IntegrityError, match="not listed"):
        sets[0].read_shard("shard-00003.h5")
    index = store.read_index(sets)
    assert sorted(index.video_ids) == reference[1]  # the stray copy adds no duplicate
    assert [s.file for s in index.shards] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]


# ---------------------------------------------------------------- a full disk
def injected_enospc(monkeypatch, victim: str) -> None:
    """Make fsync fail with ENOSPC for files whose name starts with `victim` (as delayed allocation does)."""
    real = os.fsync

    def fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if name.startswith(victim):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("victim", ["shard-00001.h5", "manifest.json"])
def test_injected_disk_full_is_clear_keeps_committed_data_and_a_rerun_completes(
    tree, reference, tmp_path, monkeypatch, victim
):
    """ENOSPC while writing a shard, or the manifest that would list it: a clear error, nothing committed lost."""
    cfg = tiny_cfg(tree, tmp_path, workers=1)
    if victim == "manifest.json":
        # Let shard 0 commit, then fail every manifest write after it.
        real_commit = store.commit_shard

        def commit_shard(set_dir, index, entry, failures):
            if index >= 1:
                injected_enospc(monkeypatch, victim)
            return real_commit(set_dir, index, entry, failures)

        monkeypatch.setattr(store, "commit_shard", commit_shard)
    else:
        injected_enospc(monkeypatch, victim)
    with pytest.raises(store.StoreError, match=r"^disk full while writing .*: nothing committed was touched"):
        extract_features(cfg, quiet=True)
    monkeypatch.undo()
    set_dir = tmp_path / reference[0].parent.name / reference[0].name
    manifest = store.load_manifest(set_dir)
    assert not manifest["complete"] and 0 in {s["index"] for s in manifest["shards"]}
    assert 1 not in {s["index"] for s in manifest["shards"]}
    check_feature_set(set_dir)
    assert not [p for p in set_dir.iterdir() if files.TMP_MARK in p.name]  # no temp file left behind

    summary = extract_features(cfg, quiet=True)  # space is back: the same process resumes
    ids, feats = read_set(summary.set_dir)
    assert ids == reference[1] and np.array_equal(feats, reference[2])
    assert store.load_manifest(set_dir)["complete"] and store.garbage(set_dir) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a real file system that fills up. Skipped only where mounting is impossible."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs needs root (the injected-ENOSPC tests cover the behaviour)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); the injected-ENOSPC tests cover the behaviour")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.timeout(120)
def test_real_full_disk_is_clear_keeps_committed_data_and_a_rerun_after_freeing_space_completes(
    tree, reference, small_disk
):
    shard_bytes = max(s["bytes"] for s in store.load_manifest(reference[0])["shards"])
    features_root = small_disk / "store"
    # The store's reuse index (under the store root) is made and holds every video's fingerprint
    # first, by sets of other settings (nothing is copied from them); the second of those runs
    # shows how much disk the index takes in one run of this size.
    extract_features(tiny_cfg(tree, features_root, frames=2), quiet=True)
    before = os.statvfs(small_disk).f_bavail
    extract_features(tiny_cfg(tree, features_root, frames=3), quiet=True)
    st = os.statvfs(small_disk)
    index_room = max(0, before - st.f_bavail) * st.f_frsize - 2 * shard_bytes  # the index's part of that run
    # Leave room for about one and a half shards (plus manifests): the second shard cannot be written.
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - int(1.5 * shard_bytes) - 24 * 1024 - max(0, index_room)))
    result = CliRunner().invoke(
        cli,
        [
            "features",
            "--dataset",
            "folder",
            "--data-dir",
            str(tree),
            "--features-root",
            str(features_root),
            "--weights",
            "random",
            "--size",
            "32",
            "--frames",
            "4",
            "--shard-size",
            str(SHARD_SIZE),
            "--workers",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code != 0, result.output
    assert "disk full while writing" in result.output and "free some space" in result.output, result.output
    set_dir = features_root / reference[0].parent.name / reference[0].name
    manifest = store.load_manifest(set_dir)
    assert not manifest["complete"] and len(manifest["shards"]) >= 1
    stored = check_feature_set(set_dir)  # committed shards verify, the manifest is whole
    assert stored and len(stored) < len(reference[1])
    assert not [p for p in set_dir.iterdir() if files.TMP_MARK in p.name]

    filler.unlink()
    summary = extract_features(tiny_cfg(tree, features_root), quiet=True)
    assert summary.computed == len(reference[1]) - len(stored)
    ids, feats = read_set(set_dir)
    assert ids == reference[1] and np.array_equal(feats, reference[2])


# ---------------------------------------------------------------- safety of stored metadata
def test_stored_metadata_is_json_never_pickle(reference):
    set_dir = reference[0]
    manifest = json.loads((set_dir / store.MANIFEST).read_text())  # JSON through and through
    assert manifest["shards"]
    for line in (set_dir / store.FAILURES).read_text().splitlines():
        json.loads(line)
    for s in manifest["shards"]:
        raw = (set_dir / s["file"]).read_bytes()
        assert b"\x80\x04\x95" not in raw and b"\x80\x05\x95" not in raw  # no pickle stream (protocol 4/5) anywhere
        with h5py.File(set_dir / s["file"], "r") as f:
            for name, value in f.attrs.items():
                assert isinstance(value, (str, int, float, np.integer, np.floating)), f"attr {name} is {type(value)}"
                if name in ("config", "identity"):
                    json.loads(value)
            for name, ds in f.items():
                assert ds.dtype.kind in "fiub" or h5py.check_string_dtype(ds.dtype) is not None, f"{name}: {ds.dtype}"


def torch_load_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "torch"
    ]


def test_every_torch_load_in_the_product_is_weights_only():
    sources = sorted((REPO / "pipeline").rglob("*.py")) + sorted((REPO / "stages").rglob("*.py"))
    calls = [(p, c) for p in sources for c in torch_load_calls(p)]
    assert calls, "no torch.load found: the scan is broken"
    for path, call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        assert (
            "weights_only" in kw and isinstance(kw["weights_only"], ast.Constant) and kw["weights_only"].value is True
        ), f"{path.relative_to(REPO)}:{call.lineno}: torch.load without weights_only=True"
    for path in sources:
        text = path.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, f"{path.relative_to(REPO)} uses pickle"


class Payload:
    """Unpickling this runs code: exactly what weights_only=True must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_weights_file_that_runs_code_when_unpickled_is_refused_and_never_runs(folder_tree, tmp_path):
    import torch

    from stages.extract.errors import WeightsError
    from stages.extract.weights import load_state_dict

    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    evil = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload(marker)}, evil)
    with pytest.raises(WeightsError, match="not a loadable PyTorch state dict"):
        load_state_dict(evil, "--weights (WEIGHTS=)")
    assert not marker.exists()
    result = CliRunner().invoke(
        cli,
        [
            "features",
            "--dataset",
            "folder",
            "--data-dir",
            str(folder_tree),  # videos to embed: the run gets as far as loading the weights
            "--weights",
            str(evil),
            "--features-root",
            str(tmp_path / "store"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 1 and "not a loadable PyTorch state dict" in result.output, result.output
    assert not marker.exists()
