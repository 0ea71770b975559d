"""Stage one on a Dask cluster into a bucket (slow tier): the workers upload their shards, the
driver moves each into place and commits it; the set holds the numbers a local run stores.
Against a real S3 server on loopback (the `s3` fixture; the workers inherit its environment)."""

from __future__ import annotations

import logging
from pathlib import Path

import distributed
import numpy as np
import pytest
import torch

from pipeline import store
from stages.extract import extract_features
from stages.extract.config import ExtractConfig

pytestmark = pytest.mark.slow


def test_dask_workers_write_a_bucket_set_with_a_local_runs_numbers(s3, folder_tree, tmp_path):
    s3.bucket("dask")
    cfg = ExtractConfig(
        dataset="folder", data_dir=folder_tree, name="clips", weights="random", image_size=64, frames=4,
        gpu_batch=4, shard_size=2, workers=1, device="cpu",
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each single-thread worker computes: the same float sums, bit for bit
    try:
        local = extract_features(cfg.replace(features_root=tmp_path), quiet=True)
    finally:
        torch.set_num_threads(threads)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:  # fmt: skip
        remote = extract_features(
            cfg.replace(features_root=Path("s3://dask/store"), scheduler=cluster.scheduler_address), quiet=True
        )
    assert store.display(remote.set_dir).startswith("s3://dask/store/clips/") and remote.computed == 6
    manifest = store.read_manifest(remote.set_dir)
    assert manifest.complete and store.verify(remote.set_dir) == [] and store.garbage(remote.set_dir) == []
    for mine, theirs in zip(manifest.shards, store.read_manifest(local.set_dir).shards, strict=True):
        a = store.read_shard(remote.set_dir / mine.file, mine.sha256)
        b = store.read_shard(local.set_dir / theirs.file, theirs.sha256)
        for name in store.SHARD_FIELDS:
            np.testing.assert_array_equal(a[name], b[name])
