"""Shard round trip, manifest commits, claims and verification."""

import json
import multiprocessing as mp
import os
import signal
import time

import h5py
import numpy as np
import pytest

from pipeline import store


def arrays(n=3, t=4, d=2048, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "features": rng.standard_normal((n, t, d)).astype(np.float16),
        "lengths": np.full(n, t, np.int32),
        "labels": np.arange(n, dtype=np.int32),
        "video_ids": [f'c/v{i} é "q".avi' for i in range(n)],
        "groups": [f"c/g{i}" for i in range(n)],
        "frame_indices": np.tile(np.arange(t, dtype=np.int32), (n, 1)),
        "timestamps": np.tile(np.arange(t, dtype=np.float32) / 10, (n, 1)),
    }


def empty_manifest(set_dir, num_shards=2):
    set_dir.mkdir(parents=True, exist_ok=True)
    store.create(set_dir, store.new_manifest("x", "d", {}, {}, 4, 2048, ["c"], {}, 3, 3, num_shards))


def test_shard_round_trip_with_plain_h5py(tmp_path):
    a = arrays()
    entry = store.write_shard(tmp_path / "shard-00000.h5", a, {"feature_set_id": "x", "config": {"frames": 4}})
    assert entry["videos"] == 3 and entry["bytes"] == (tmp_path / "shard-00000.h5").stat().st_size
    with h5py.File(tmp_path / "shard-00000.h5", "r") as f:
        assert f["features"].dtype == np.float16 and f["features"].shape == (3, 4, 2048)
        assert f["video_ids"].asstr()[()].tolist() == a["video_ids"]
        assert json.loads(f.attrs["config"]) == {"frames": 4} and f.attrs["schema_version"] == 1
    back = store.read_shard(tmp_path / "shard-00000.h5", entry["sha256"])
    for k in store.SHARD_FIELDS:
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(a[k]))
    assert not list(tmp_path.glob("*.tmp-*"))


def test_read_shard_refuses_a_flipped_byte(tmp_path):
    entry = store.write_shard(tmp_path / "shard-00000.h5", arrays(), {})
    raw = bytearray((tmp_path / "shard-00000.h5").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "shard-00000.h5").write_bytes(bytes(raw))
    with pytest.raises(store.IntegrityError):
        store.read_shard(tmp_path / "shard-00000.h5", entry["sha256"])


def test_commit_is_idempotent_and_failures_log_is_derived(tmp_path):
    empty_manifest(tmp_path)
    entry = store.write_shard(tmp_path / store.shard_name(1), arrays(), {})
    fails = [{"video_id": "c/bad.avi", "reason": "empty file (0 bytes)"}]
    store.commit_shard(tmp_path, 1, entry, fails)
    store.commit_shard(tmp_path, 1, entry, fails)  # a retried task commits again
    m = store.load_manifest(tmp_path)
    assert [s["index"] for s in m["shards"]] == [1] and m["num_stored"] == 3 and m["num_failed"] == 1
    assert [json.loads(x) for x in (tmp_path / store.FAILURES).read_text().splitlines()] == fails
    assert not store.mark_complete(tmp_path).complete
    store.commit_shard(tmp_path, 0, store.write_shard(tmp_path / store.shard_name(0), arrays(1), {}), [])
    assert store.mark_complete(tmp_path).complete
    assert store.verify(tmp_path) == []


def hold_claim(set_dir, ready):
    c = store.Claim(set_dir, 3)
    assert c.acquire()
    ready.set()
    time.sleep(60)


def test_claim_is_exclusive_and_released_when_its_holder_dies(tmp_path):
    ready = mp.get_context("fork").Event()
    proc = mp.get_context("fork").Process(target=hold_claim, args=(tmp_path, ready))
    proc.start()
    assert ready.wait(10)
    mine = store.Claim(tmp_path, 3)
    assert not mine.acquire() and mine.held_elsewhere()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert mine.acquire()  # the kernel dropped the dead holder's flock
    mine.release()


def test_garbage_lists_temp_files_and_unlisted_shards_only(tmp_path):
    empty_manifest(tmp_path)
    committed = store.write_shard(tmp_path / store.shard_name(0), arrays(), {})
    store.commit_shard(tmp_path, 0, committed, [])
    (tmp_path / "shard-00001.h5.tmp-host-999").write_bytes(b"partial")
    store.write_shard(tmp_path / store.shard_name(1), arrays(), {})  # written, never committed
    assert sorted(p.name for p in store.garbage(tmp_path)) == ["shard-00001.h5", "shard-00001.h5.tmp-host-999"]


def test_verify_reports_a_missing_shard(tmp_path):
    empty_manifest(tmp_path)
    store.commit_shard(tmp_path, 0, store.write_shard(tmp_path / store.shard_name(0), arrays(), {}), [])
    (tmp_path / store.shard_name(0)).unlink()
    assert store.verify(tmp_path) == ["shard-00000.h5: listed in the manifest but missing"]
