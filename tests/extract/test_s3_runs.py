"""Stage one into a bucket under stress (slow tier): runs killed with SIGKILL at random moments of
their work (shards computing, uploading, committing), then a rerun; two runs sharing one set.
Against a real S3 server on loopback (the `s3` fixture). The cheap versions of both claims are in
tests/pipeline/test_s3_store.py (a killed run's leftovers and its rerun; two manifest writers)."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from reliability_harness import features_cmd, make_tiny_tree, run_to_end, start

from pipeline import FeatureStore, store
from pipeline.store import cache as shard_cache

pytestmark = pytest.mark.slow

SHARD_SIZE = 1  # one video per shard: many uploads and commits for the kills to land among


def objects(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def committed(root: Path) -> list[tuple[str, str]]:
    (set_dir,) = [d for d in store.feature_sets(root)]
    return [(s.file, s.sha256) for s in store.read_manifest(set_dir).shards]


def forget(s3, bucket: str) -> None:
    """The bucket emptied, and this machine's reuse index of it (a cache) with it."""
    for key in objects(s3, bucket):
        s3.client().delete_object(Bucket=bucket, Key=key)
    shutil.rmtree(shard_cache.cache_dir() / "index" / bucket, ignore_errors=True)


def test_runs_killed_mid_upload_then_a_rerun_give_the_uninterrupted_set_bit_for_bit(s3, tmp_path):
    tree = tmp_path / "tree"
    make_tiny_tree(tree)
    s3.bucket("killed")
    root = Path("s3://killed/store")
    cmd = features_cmd(tree, root, shard_size=SHARD_SIZE, workers=1)
    t0 = time.monotonic()
    reference = run_to_end(cmd, tmp_path / "logs", "reference")
    assert reference.proc.returncode == 0, reference.stderr[-2000:]
    elapsed, want = time.monotonic() - t0, committed(root)
    assert len(want) == 8
    forget(s3, "killed")
    rng = random.Random(30)
    for k in range(4):
        run = start(cmd, tmp_path / "logs", f"killed-{k}")
        time.sleep(rng.uniform(0.4, 0.95) * elapsed)  # start-up is most of a run: kills land in its work
        run.kill()
        sets = list(store.feature_sets(root))
        for set_dir in sets:  # whatever the kill left, the manifest lists only sound shards
            assert store.verify(set_dir) == []
    rerun = run_to_end(cmd, tmp_path / "logs", "rerun")
    assert rerun.proc.returncode == 0, rerun.stderr[-2000:]
    assert committed(root) == want  # the same files with the same bytes as the uninterrupted run
    (set_dir,) = store.feature_sets(root)
    assert store.read_manifest(set_dir).complete and store.garbage(set_dir) == []


def test_two_runs_into_one_bucket_set_store_every_video_once(s3, tmp_path):
    tree = tmp_path / "tree"
    ids = make_tiny_tree(tree)
    s3.bucket("shared")
    root = Path("s3://shared/store")
    cmd = features_cmd(tree, root, shard_size=SHARD_SIZE, workers=1)
    runs = [start(cmd, tmp_path / "logs", f"run-{k}") for k in range(2)]
    for run in runs:
        assert run.wait(300) == 0, run.stderr[-2000:]
    (set_dir,) = store.feature_sets(root)
    manifest = store.read_manifest(set_dir)
    assert manifest.complete and [s.index for s in manifest.shards] == list(range(len(ids)))
    assert store.verify(set_dir) == [] and store.garbage(set_dir) == []
    view = FeatureStore(str(root)).open(set_dir.name)
    assert sorted(view.index.video_ids) == ids  # each video once
    alone = tmp_path / "alone"
    assert (
        run_to_end(
            features_cmd(tree, alone, shard_size=SHARD_SIZE, workers=1), tmp_path / "logs", "alone"
        ).proc.returncode
        == 0
    )
    reference = FeatureStore(alone).open(set_dir.name)
    rows = np.arange(len(ids))
    np.testing.assert_array_equal(view.read(rows), reference.read(reference.index.rows_of(view.index.video_ids)[0]))
    assert not [k for k in objects(s3, "shared") if "/.claims/" in k]  # both released every claim
