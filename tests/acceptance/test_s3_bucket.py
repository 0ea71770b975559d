"""The README's bucket commands through make (slow tier): `make features ... FEATURES_ROOT=s3://...`
then `make train` on a bucket, against a real S3 server on loopback (the `s3` fixture), beside the
same commands on the shared home's local store; the store targets on the bucket; push and pull.

The endpoint and keys are given on make's command line (`AWS_ENDPOINT_URL=...`), which make puts
in its commands' environment as a shell's `VAR=... make ...` would. The cheap version of each
claim is in tests/pipeline/test_s3_store.py (default tier)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from make_runs import SMALL, run_make
from s3server import s3_env

from pipeline import store

pytestmark = [pytest.mark.acceptance, pytest.mark.slow]


def aws(s3, tmp_path) -> list[str]:
    """The server's endpoint, keys and a shard cache, as make variables."""
    return [f"{k}={v}" for k, v in s3_env(s3, tmp_path / "cache").items()]


def test_make_features_and_train_on_a_bucket_match_a_local_root(ucf_home, s3, tmp_path):
    s3.bucket("team-features")
    bucket = ("FEATURES_ROOT=s3://team-features/store", *aws(s3, tmp_path))
    features = run_make(ucf_home.root, "features", "DATASET=ucf101", "WEIGHTS=random", *SMALL, *bucket)
    assert features.returncode == 0, features
    assert "stage one complete: " in features.stderr and "features: s3://team-features/store/ucf101/" in features.stderr
    (local,) = store.feature_sets(ucf_home.store)
    remote = store.read_manifest(local).feature_set_id
    set_dir = store.as_path("s3://team-features/store") / "ucf101" / remote
    for mine, theirs in zip(store.read_manifest(set_dir).shards, store.read_manifest(local).shards, strict=True):
        a, b = store.read_shard(set_dir / mine.file, mine.sha256), store.read_shard(local / theirs.file, theirs.sha256)
        for name in store.SHARD_FIELDS:
            np.testing.assert_array_equal(a[name], b[name])
    runs = {}
    for name, where in (("bucket", bucket), ("local", ())):
        out = run_make(ucf_home.root, "train", "DATASET=ucf101", f"OUT={tmp_path / name}", *where)
        assert out.returncode == 0 and " split 1: top1 " in out.stdout, out
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    drop = lambda m: {k: v for k, v in m.items() if k not in ("history", "train_seconds", "read_seconds")}
    assert drop(runs["bucket"]) == drop(runs["local"])
    assert [h["train_loss"] for h in runs["bucket"]["history"]] == [h["train_loss"] for h in runs["local"]["history"]]
    listed = run_make(ucf_home.root, "store-list", *bucket)
    assert listed.returncode == 0 and remote in listed.stdout and "under s3://team-features/store" in listed.stdout
    verified = run_make(ucf_home.root, "store-verify", *bucket)
    assert verified.returncode == 0 and f"ucf101/{remote}: OK (1 shard checked)" in verified.stdout, verified
    s3.client().put_object(Bucket="team-features", Key=f"store/ucf101/{remote}/shard-00007.h5", Body=b"left over")
    gc = run_make(ucf_home.root, "store-gc", *bucket)
    assert gc.returncode == 0 and "in 1 file(s) of 1 feature set(s)" in gc.stdout, gc
    pulled = run_make(tmp_path, "store-pull", f"ID={remote}", "FROM=s3://team-features/store", *aws(s3, tmp_path))
    assert pulled.returncode == 0 and "every one verified on arrival" in pulled.stdout, pulled
    assert store.verify(tmp_path / "data" / "features" / "ucf101" / remote) == []


def test_make_features_into_a_bucket_that_does_not_exist_is_exit_2(ucf_home, s3, tmp_path):
    out = run_make(
        ucf_home.root, "features", "DATASET=ucf101", "WEIGHTS=random", *SMALL, "FEATURES_ROOT=s3://no-such-bucket/store",
        *aws(s3, tmp_path),
    )  # fmt: skip
    assert out.returncode == 2 and "the bucket 'no-such-bucket' does not exist" in out.stderr, out
    assert "Error 2" in out.stderr  # the command's own exit status 2 (a usage error), which make passes on
    assert "Traceback" not in out.stderr and out.stderr.count("Error: ") == 1
