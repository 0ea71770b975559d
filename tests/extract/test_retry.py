"""`--retry-failures`: failed videos are decoded again; committed shards are superseded, never edited.

The tree is the session's folder tree (2 classes x 3 clips), copied, with one clip emptied
so that it fails ("empty file (0 bytes)"). Shards hold 2 videos, so the broken clip shares
its shard with a good one, and the other shards must not be touched at all.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import store
from pipeline.files import file_sha256
from stages.cli import main as cli
from stages.extract import extract_features
from stages.extract.config import ExtractConfig

BROKEN = "juggle/clip_01.mp4"


def config(tree: Path, root: Path, device: str = "cpu", **kw) -> ExtractConfig:
    return ExtractConfig(
        dataset="folder",
        data_dir=tree,
        features_root=root,
        name="tree",
        weights="random",
        image_size=32,
        frames=2,
        shard_size=2,
        workers=2,
        device=device,
        **kw,
    )


def rows(set_dir: Path) -> dict[str, np.ndarray]:
    """video_id -> features (T, D) of every committed video, read with checksums."""
    out = {}
    for s in store.load_manifest(set_dir)["shards"]:
        arrays = store.read_shard(set_dir / s["file"], s["sha256"])
        out.update(zip(arrays["video_ids"], arrays["features"]))
    return out


def entries(set_dir: Path) -> dict[int, tuple[str, str]]:
    return {s["index"]: (s["file"], s["sha256"]) for s in store.load_manifest(set_dir)["shards"]}


@pytest.fixture
def broken_tree(folder_tree, tmp_path) -> tuple[Path, bytes]:
    """A copy of the folder tree with BROKEN emptied; returns (tree, BROKEN's real bytes)."""
    tree = tmp_path / "tree"
    shutil.copytree(folder_tree, tree)
    good = (tree / BROKEN).read_bytes()
    (tree / BROKEN).write_bytes(b"")
    return tree, good


def test_a_fixed_video_is_recovered_and_only_its_shard_is_superseded(broken_tree, tmp_path):
    tree, good = broken_tree
    root = tmp_path / "store"
    first = extract_features(config(tree, root), quiet=True)
    set_dir = first.set_dir
    manifest = store.load_manifest(set_dir)
    assert manifest["complete"] and manifest["num_failed"] == 1 and manifest["num_stored"] == 5
    (failed,) = [json.loads(line) for line in (set_dir / store.FAILURES).read_text().splitlines()]
    assert failed["video_id"] == BROKEN and failed["reason"].startswith("empty file"), failed
    before, committed = rows(set_dir), entries(set_dir)
    (index,) = [s["index"] for s in manifest["shards"] if s["failures"]]

    # Without the option a complete set is reused as it is, failure and all.
    again = extract_features(config(tree, root), quiet=True)
    assert again.reused_set and again.computed == 0 and entries(set_dir) == committed

    (tree / BROKEN).write_bytes(good)
    retried = extract_features(config(tree, root, retry_failures=True), quiet=True)
    assert retried.set_dir == set_dir  # the option is not part of the identity
    assert (retried.computed, retried.failed) == (1, 0)

    manifest = store.load_manifest(set_dir)
    assert manifest["complete"] and manifest["num_failed"] == 0 and manifest["num_stored"] == 6
    assert (set_dir / store.FAILURES).read_text() == ""
    now = entries(set_dir)
    assert {i: e for i, e in now.items() if i != index} == {i: e for i, e in committed.items() if i != index}
    shard = next(s for s in manifest["shards"] if s["index"] == index)
    assert shard["file"] == store.shard_name(index, 1) and shard["revision"] == 1
    assert shard["replaces"] == store.shard_name(index) and shard["videos"] == 2
    assert store.verify(set_dir) == []

    after = rows(set_dir)
    assert set(after) == set(before) | {BROKEN}
    rewritten = store.read_shard(set_dir / shard["file"], shard["sha256"])
    assert list(rewritten["fingerprints"]) == [file_sha256(tree / v) for v in rewritten["video_ids"]]
    for vid, feats in before.items():  # copied bit for bit, not recomputed
        assert np.array_equal(after[vid], feats), vid
    reference = rows(extract_features(config(tree, tmp_path / "reference"), quiet=True).set_dir)
    assert np.allclose(after[BROKEN].astype(np.float32), reference[BROKEN].astype(np.float32), atol=1e-2)
    assert not np.array_equal(after[BROKEN], np.zeros_like(after[BROKEN]))

    # The superseded file is still there for readers that listed it, and is garbage for gc.
    old = set_dir / committed[index][0]
    assert old.exists() and store.garbage(set_dir) == [old]
    store.remove_garbage(set_dir)
    assert not old.exists() and store.verify(set_dir) == [] and rows(set_dir).keys() == after.keys()


def test_a_video_that_fails_again_leaves_the_set_as_it_was(broken_tree, tmp_path):
    tree, _ = broken_tree
    root = tmp_path / "store"
    args = [
        "features",
        "--dataset",
        "folder",
        "--data-dir",
        str(tree),
        "--features-root",
        str(root),
        "--name",
        "tree",
        "--weights",
        "random",
        "--size",
        "32",
        "--frames",
        "2",
        "--shard-size",
        "2",
        "--workers",
        "2",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    set_dir = next((root / "tree").iterdir())
    committed, listing = entries(set_dir), sorted(p.name for p in set_dir.iterdir())

    result = CliRunner().invoke(cli, args)  # reuse says how to retry
    assert result.exit_code == 0 and "1 failed video(s) listed" in result.output and "--retry-failures" in result.output

    result = CliRunner().invoke(cli, args + ["--retry-failures"])
    assert result.exit_code == 0, result.output
    assert "retry: decoding 1 failed video(s) of 1 shard(s) again" in result.output, result.output
    assert entries(set_dir) == committed
    assert sorted(p.name for p in set_dir.iterdir()) == listing  # no stray revision file
    manifest = store.load_manifest(set_dir)
    assert manifest["num_failed"] == 1 and manifest["complete"] and store.verify(set_dir) == []


def test_a_shard_another_run_is_rewriting_is_left_to_it(broken_tree, tmp_path, capsys):
    tree, good = broken_tree
    root = tmp_path / "store"
    set_dir = extract_features(config(tree, root), quiet=True).set_dir
    committed = entries(set_dir)
    (index,) = [s["index"] for s in store.load_manifest(set_dir)["shards"] if s["failures"]]
    (tree / BROKEN).write_bytes(good)
    other = store.Claim(set_dir, index)  # what a concurrent retry holds while it rewrites the shard
    assert other.acquire()
    try:
        summary = extract_features(config(tree, root, retry_failures=True))
    finally:
        other.release()
    assert f"retry: shard {index} is being rewritten by another run" in capsys.readouterr().err
    assert summary.computed == 0 and entries(set_dir) == committed
    assert extract_features(config(tree, root, retry_failures=True), quiet=True).computed == 1  # once it is free


def test_a_row_kept_by_a_retry_keeps_the_fingerprint_it_was_computed_from(broken_tree, tmp_path):
    """A shard-mate rewritten on disk since its row was computed: the kept row must not claim
    the new bytes, or another set would copy features of the old ones for them."""
    tree, good = broken_tree
    root = tmp_path / "store"
    set_dir = extract_features(config(tree, root), quiet=True).set_dir
    (entry,) = [s for s in store.load_manifest(set_dir)["shards"] if s["failures"]]
    old = store.read_shard(set_dir / entry["file"], entry["sha256"])
    (mate,) = old["video_ids"]
    (tree / mate).write_bytes((tree / mate).read_bytes() + b"\0" * 64)
    (tree / BROKEN).write_bytes(good)
    extract_features(config(tree, root, retry_failures=True), quiet=True)
    (entry,) = [s for s in store.load_manifest(set_dir)["shards"] if s["index"] == entry["index"]]
    new = store.read_shard(set_dir / entry["file"], entry["sha256"])
    fingerprints = dict(zip(new["video_ids"], new["fingerprints"]))
    assert fingerprints[mate] == old["fingerprints"][0] != file_sha256(tree / mate)
    assert fingerprints[BROKEN] == file_sha256(tree / BROKEN)
