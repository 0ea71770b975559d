"""A store in an S3-compatible bucket (FEATURES_ROOT=s3://bucket/prefix), against a real S3 server
on loopback (tests/s3server.py: moto's server mode), never a mocked client.

One server for the module (the `s3` fixture, tests/conftest.py); each test uses a bucket of its own.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import random_set
from s3server import ClientError, environment

from pipeline import FeatureStore, store
from pipeline.errors import IntegrityError
from pipeline.store import cache as shard_cache
from pipeline.store import roots
from stages.cli import main as cli
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.train import trainer
from stages.train.config import TrainConfig


def bucket_root(s3, name: str, prefix: str = "store") -> Path:
    s3.bucket(name)
    return Path(f"s3://{name}/{prefix}")


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def test_the_server_refuses_stale_conditional_writes(s3):
    """What the manifest and the claims rely on: If-None-Match and If-Match on PutObject answer 412."""
    c = s3.client()
    s3.bucket("conditional")
    etag = c.put_object(Bucket="conditional", Key="m", Body=b"1", IfNoneMatch="*")["ETag"]
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123"'}):
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket="conditional", Key="m", Body=b"2", **condition)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    c.put_object(Bucket="conditional", Key="m", Body=b"3", IfMatch=etag)
    assert c.get_object(Bucket="conditional", Key="m")["Body"].read() == b"3"


# ---------------------------------------------------------------- stage one and two on a bucket
@pytest.fixture(scope="module")
def both_roots(s3, ucf_tree, tmp_path_factory):
    """The same extraction (32 px, T=4, 2 shards) into a local root and into a bucket."""
    made = {}
    for name, root in (("local", tmp_path_factory.mktemp("local-store")), ("s3", bucket_root(s3, "same"))):
        cfg = ExtractConfig(
            dataset="ucf101",
            data_dir=ucf_tree,
            features_root=root,
            weights="random",
            image_size=32,
            frames=4,
            shard_size=10,
            device="cpu",
            workers=2,
        )
        made[name] = extract_features(cfg, quiet=True).set_dir
    return made


def test_a_bucket_set_has_the_local_sets_bytes_and_trains_the_same_run(both_roots, s3, tmp_path):
    local, remote = both_roots["local"], both_roots["s3"]
    assert store.display(remote).startswith("s3://same/store/ucf101/") and remote.name == local.name
    entries = {d: store.read_manifest(d).shards for d in (local, remote)}
    assert [(s.file, s.videos) for s in entries[remote]] == [(s.file, s.videos) for s in entries[local]]
    assert len(entries[local]) == 2
    for mine, theirs in zip(entries[remote], entries[local]):
        body = s3.client().get_object(Bucket="same", Key=f"store/ucf101/{remote.name}/{mine.file}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == mine.sha256  # the object is the shard the manifest lists
        a, b = store.read_shard(remote / mine.file, mine.sha256), store.read_shard(local / theirs.file, theirs.sha256)
        for name in store.SHARD_FIELDS + ("fingerprints",):  # the same numbers; the attrs' config names its root
            np.testing.assert_array_equal(a[name], b[name])
    assert not [k for k in keys(s3, "same") if "/.claims/" in k]  # every claim released
    metrics = {}
    for name, set_dir in both_roots.items():
        cfg = TrainConfig(
            dataset="ucf101", features_root=set_dir.parent.parent, model="mean", epochs=3,
            out=tmp_path / name, progress=False, device="cpu",
        )  # fmt: skip
        run = trainer.train(cfg).runs[0]
        metrics[name] = run.metrics
    assert timeless(metrics["s3"]) == timeless(metrics["local"])
    evaluated = CliRunner().invoke(cli, ["evaluate", "--run", str(run.run_dir)])  # the bucket's run, re-read from it
    assert evaluated.exit_code == 0 and f"top1 {metrics['s3']['top1']:.4f}" in evaluated.output, evaluated.output


def timeless(value):
    """A run's metrics without the wall-clock figures (the only thing two identical runs differ in)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if "seconds" not in k and not k.endswith("_s")}
    return [timeless(v) for v in value] if isinstance(value, list) else value


def test_another_set_in_the_bucket_copies_the_rows_it_holds(both_roots, ucf_tree):
    """Per-video reuse within a bucket: the same videos under another name are copied, not computed
    (the bucket's reuse index lives in the local cache directory)."""
    cfg = ExtractConfig(
        dataset="ucf101", data_dir=ucf_tree, name="ucf-again", features_root=both_roots["s3"].parent.parent,
        weights="random", image_size=32, frames=4, shard_size=10, device="cpu", workers=2,
    )  # fmt: skip
    summary = extract_features(cfg, quiet=True)
    assert (summary.copied, summary.computed) == (18, 0)
    assert store.index_path(cfg.store_root).is_file() and not store.is_remote(store.index_path(cfg.store_root))
    again = FeatureStore(str(cfg.store_root)).open(summary.set_dir.name)
    first = FeatureStore(str(cfg.store_root)).open(both_roots["s3"].name)
    rows, _ = first.index.rows_of(again.index.video_ids)
    np.testing.assert_array_equal(again.read(np.arange(again.num_videos)), first.read(rows))


def test_store_commands_on_a_bucket_list_verify_and_gc(both_roots, s3):
    remote = both_roots["s3"]
    root = "s3://same/store"
    c, prefix = s3.client(), f"store/ucf101/{remote.name}"
    listed = CliRunner().invoke(cli, ["store", "list", "--features-root", root])
    assert listed.exit_code == 0 and remote.name in listed.output and "complete" in listed.output
    info = CliRunner().invoke(cli, ["store", "info", remote.name, "--features-root", root])
    assert info.exit_code == 0 and f"directory:  s3://same/{prefix}" in info.output and "train 12/12" in info.output
    c.put_object(Bucket="same", Key=f"{prefix}/shard-00009.h5", Body=b"left by a killed run")
    gc = CliRunner().invoke(cli, ["store", "gc", "--features-root", root])
    assert gc.exit_code == 0, gc.output
    assert f"removed s3://same/{prefix}/shard-00009.h5" in gc.output
    assert f"{prefix}/shard-00009.h5" not in keys(s3, "same") and f"{prefix}/shard-00000.h5" in keys(s3, "same")
    ok = CliRunner().invoke(cli, ["store", "verify", "--features-root", root])
    assert ok.exit_code == 0 and "OK (2 shards checked)" in ok.output


def test_a_flipped_byte_in_a_shard_object_is_refused_by_verify_and_the_api(s3, tmp_path):
    root = bucket_root(s3, "flipped")
    set_dir = random_set(tmp_path / "local" / "synthetic" / "set", n=24, shard_size=8)
    store.copy_set(set_dir, root)
    remote = root / "synthetic" / "set"
    entry = store.read_manifest(remote).shards[1]
    c, key = s3.client(), f"store/synthetic/set/{entry.file}"
    body = bytearray(c.get_object(Bucket="flipped", Key=key)["Body"].read())
    body[len(body) // 2] ^= 1
    c.put_object(Bucket="flipped", Key=key, Body=bytes(body))
    verify = CliRunner().invoke(cli, ["store", "verify", "--features-root", str(root)])
    assert verify.exit_code == 1 and f"{entry.file}: sha256" in verify.output and "(corrupt)" in verify.output
    with pytest.raises(IntegrityError, match="corrupt"):
        FeatureStore(str(root)).open("set").arrays(split=1, part="train")
    assert shard_cache.shard_cache().get(entry.sha256) is None  # the damaged bytes never entered the cache


def test_shards_are_read_from_the_cache_the_second_time(s3, tmp_path, monkeypatch):
    root = bucket_root(s3, "cached")
    store.copy_set(random_set(tmp_path / "l" / "synthetic" / "set", n=24, shard_size=8, seed=3), root)
    fetched = []
    real = roots.S3Root.read_tagged
    monkeypatch.setattr(roots.S3Root, "read_tagged", lambda self, p: fetched.append(p.name) or real(self, p))
    first = FeatureStore(str(root)).open("set").arrays(split=1, part="train")["features"]
    assert sorted(n for n in fetched if n.startswith("shard-")) == [
        "shard-00000.h5",
        "shard-00001.h5",
        "shard-00002.h5",
    ]
    fetched.clear()
    second = FeatureStore(str(root)).open("set").arrays(split=1, part="train")["features"]
    assert not [n for n in fetched if n.startswith("shard-")]  # local files: only the manifest was read
    np.testing.assert_array_equal(first, second)
    streamed = list(FeatureStore(str(root)).open("set").stream(split=1, part="train", shuffle=False))
    np.testing.assert_array_equal(np.stack([item["features"].numpy() for item in streamed]), first.astype(np.float32))
    entry = store.read_manifest(root / "synthetic" / "set").shards[0]
    cached = shard_cache.shard_cache().get(entry.sha256)
    data = bytearray(cached.read_bytes())
    data[100] ^= 1
    cached.write_bytes(bytes(data))  # a cache damaged on disk is refused like a damaged object
    with pytest.raises(IntegrityError, match="corrupt"):
        FeatureStore(str(root)).open("set").arrays(split=1, part="train")


def test_the_cache_keeps_its_bound_least_recently_used_out_first(tmp_path):
    cache = shard_cache.ShardCache(tmp_path, limit=250)
    paths = {}
    for k, name in enumerate("abc"):
        paths[name] = cache.put(name * 64, bytes(100))
        os.utime(paths[name], (k, k))  # a, then b, then c used
        if name == "b":
            assert cache.get("a" * 64) is not None  # a used again: now the most recent
    assert cache.get("b" * 64) is None and cache.get("a" * 64) and cache.get("c" * 64) and cache.size() <= 250


# ---------------------------------------------------------------- two writers, claims, a killed run
def commit_shards(set_dir: str, indices: list[int]) -> None:
    for i in indices:
        entry = {"file": f"shard-{i:05d}.h5", "videos": 1, "bytes": 1, "sha256": f"{i:064x}"}
        store.commit_shard(Path(set_dir), i, entry, [])


def test_two_writers_of_one_manifest_lose_nothing(s3, tmp_path):
    root = bucket_root(s3, "writers")
    set_dir = root / "d" / "set"
    store.create(set_dir, store.new_manifest("set", "d", {}, {}, 4, 8, ["a"], {}, 40, 1, 40))
    ctx = mp.get_context("fork")  # each makes its own client (roots.py drops the parent's in a child)
    procs = [ctx.Process(target=commit_shards, args=(str(set_dir), list(range(k, 40, 2)))) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [s.index for s in store.read_manifest(set_dir).shards] == list(range(40))
    manifest, tag = store.Manifest.read_tagged(set_dir)
    manifest.unlisted_failures = [{"video_id": "a.avi", "reason": "one writer's change"}]
    assert store.write_manifest(set_dir, manifest, expect=tag)
    manifest.unlisted_failures = [{"video_id": "a.avi", "reason": "another's, from the same read"}]
    assert not store.write_manifest(set_dir, manifest, expect=tag)  # the ETag it read is stale now


def hold_claim(set_dir: str, ready) -> None:
    claim = store.Claim(Path(set_dir), 3)
    assert claim.acquire()
    ready.set()
    time.sleep(120)


def test_a_claim_is_exclusive_and_taken_over_when_its_holder_is_gone(s3):
    set_dir = bucket_root(s3, "claims") / "d" / "set"
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=hold_claim, args=(str(set_dir), ready))
    holder.start()
    assert ready.wait(60)
    mine = store.Claim(set_dir, 3)
    assert not mine.acquire() and mine.held_elsewhere() and f" {holder.pid} " in mine.holder()
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    assert mine.acquire() and not mine.held_elsewhere()  # a dead process of this host holds nothing
    mine.release()
    assert "store/d/set/.claims/00003" not in keys(s3, "claims")
    # another host's claim past its expiry is taken over, on the condition that it is still that one
    other = {"host": "elsewhere", "pid": 1, "since": "", "expires": time.time() - 1}
    s3.client().put_object(Bucket="claims", Key="store/d/set/.claims/00003", Body=json.dumps(other).encode())
    assert not mine.held_elsewhere() and mine.acquire()
    assert store.Claim(set_dir, 3).held_elsewhere()  # live, and ours: another claim object sees it held
    mine.release()


def test_a_killed_run_leaves_unlisted_objects_and_its_rerun_gives_the_same_set(both_roots, s3, ucf_tree):
    """What a kill -9 between an upload and its commit leaves: an unlisted shard object and a dead
    process's claim; the rerun takes the claim over, computes the shard again and ends with the
    uninterrupted set's bytes. (tests/extract/test_s3_runs.py kills a real run mid-upload, slow tier.)"""
    remote, c = both_roots["s3"], s3.client()
    prefix = f"store/ucf101/{remote.name}"
    before = store.read_manifest(remote)
    manifest = store.load_manifest(remote)
    manifest["shards"], manifest["complete"] = manifest["shards"][:1], False
    manifest.pop("completed_at")
    store.write_manifest(remote, manifest)
    c.put_object(Bucket="same", Key=f"{prefix}/shard-00001.h5", Body=b"half of nothing")  # not listed
    dead = {"host": socket.gethostname(), "pid": 2**22 + 1, "since": "", "expires": time.time() + 300}
    c.put_object(Bucket="same", Key=f"{prefix}/.claims/00001", Body=json.dumps(dead).encode())
    cfg = ExtractConfig(
        dataset="ucf101", data_dir=ucf_tree, features_root=remote.parent.parent, weights="random", image_size=32,
        frames=4, shard_size=10, device="cpu", workers=2,
    )  # fmt: skip
    extract_features(cfg, quiet=True)
    after = store.read_manifest(remote)
    assert after.complete and [(s.file, s.sha256) for s in after.shards] == [(s.file, s.sha256) for s in before.shards]


# ---------------------------------------------------------------- moving sets
def test_push_and_pull_copy_a_set_verified_and_resume_after_an_interruption(s3, tmp_path):
    root = bucket_root(s3, "moved")
    src = random_set(tmp_path / "a" / "synthetic" / "set", n=24, shard_size=8)
    c, prefix = s3.client(), "store/synthetic/set"
    # an interrupted push: one shard there, one damaged, no manifest yet
    data = (src / "shard-00000.h5").read_bytes()
    c.put_object(Bucket="moved", Key=f"{prefix}/shard-00000.h5", Body=data)
    c.put_object(Bucket="moved", Key=f"{prefix}/shard-00001.h5", Body=data[:100])
    pushed = CliRunner().invoke(
        cli, ["store", "push", "set", "--features-root", str(tmp_path / "a"), "--to", str(root)]
    )
    assert pushed.exit_code == 0, pushed.output
    assert "2 shard(s) sent" in pushed.output and "1 already there" in pushed.output
    pulled = CliRunner().invoke(
        cli, ["store", "pull", "synthetic/set", "--features-root", str(tmp_path / "b"), "--from", str(root)]
    )
    assert pulled.exit_code == 0, pulled.output
    back = tmp_path / "b" / "synthetic" / "set"
    for s in store.read_manifest(src).shards:
        assert (back / s.file).read_bytes() == (src / s.file).read_bytes()
    assert store.verify(back) == [] and store.read_manifest(back).complete
    again = CliRunner().invoke(cli, ["store", "push", "set", "--features-root", str(tmp_path / "a"), "--to", str(root)])
    assert "0 shard(s) sent" in again.output and "3 already there" in again.output


# ---------------------------------------------------------------- one clear error, exit 2, nothing written
@pytest.mark.parametrize(
    "case, words",
    [
        ("no such bucket", "the bucket 'nosuchbucket' does not exist"),
        ("unreachable endpoint", "the endpoint cannot be reached"),
        ("refused credentials", "the endpoint refused the credentials"),
    ],
)
def test_a_bucket_that_cannot_be_used_is_one_clear_error_with_exit_2(s3, ucf_tree, tmp_path, case, words):
    bucket = "nosuchbucket" if case == "no such bucket" else "refusing"
    if bucket == "refusing":
        s3.bucket(bucket)
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"} if case == "unreachable endpoint" else {}
    from moto import settings

    auth = settings.INITIAL_NO_AUTH_ACTION_COUNT
    if case == "refused credentials":
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # the server checks keys now: ours are unknown to it
    try:
        with environment(env):
            t0 = time.monotonic()
            result = CliRunner().invoke(
                cli,
                ["features", "--dataset", "ucf101", "--data-dir", str(ucf_tree), "--features-root",
                 f"s3://{bucket}/store", "--weights", "random", "--size", "32", "--frames", "4", "--device", "cpu"],
            )  # fmt: skip
            elapsed = time.monotonic() - t0
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = auth
    assert result.exit_code == 2, result.output
    assert f"FEATURES_ROOT=): s3://{bucket} at " in result.output and words in result.output
    assert result.output.count("Error:") == 1 and "Traceback" not in result.output
    assert "RANDOM WEIGHTS" not in result.output  # stopped before anything else: no model was built
    assert elapsed < 30
    if bucket == "refusing":
        assert keys(s3, bucket) == []  # nothing written
