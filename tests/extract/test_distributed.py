"""Stage one on a real Dask LocalCluster (127.0.0.1) and on several devices of one machine.

Every run here is compared with one single-machine run of the same config, array by
array. The numbers are expected to be *identical*, not close: each backbone batch holds
exactly one video (GPU_BATCH = FRAMES = 4), so batches do not depend on which worker
got which shard, and the reference runs with one intra-op thread, as every Dask worker
does (the nanny sets OMP_NUM_THREADS=1) and every loky worker does here (joblib gives
each cpu_count // n_jobs threads). oneDNN's fp32 results depend on the thread count.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import h5py
import numpy as np
import pytest
import torch

distributed = pytest.importorskip("distributed")

from helpers import assert_fp16_close  # noqa: E402

from pipeline import files, store  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from stages.extract import distributed as dist  # noqa: E402
from stages.extract import extract_features  # noqa: E402
from stages.extract.config import ExtractConfig  # noqa: E402
from stages.extract.errors import ClusterError  # noqa: E402
from stages.extract.plan import make_plan, open_feature_set  # noqa: E402


@pytest.fixture(scope="module")
def base_cfg(folder_tree) -> ExtractConfig:
    """6 clips (conftest's folder_tree) in 3 shards; frames 64 px, T = 4."""
    return ExtractConfig(
        dataset="folder",
        data_dir=folder_tree,
        name="clips",
        weights="random",
        image_size=64,
        frames=4,
        gpu_batch=4,
        shard_size=2,
        workers=1,
        device="cpu",
    )


@pytest.fixture(scope="module")
def reference(base_cfg, tmp_path_factory) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = extract_features(base_cfg.replace(features_root=tmp_path_factory.mktemp("single")), quiet=True)
    finally:
        torch.set_num_threads(threads)
    return read_set(summary.set_dir)


def gpu_workers(n: int) -> distributed.LocalCluster:
    """n single-thread worker processes on 127.0.0.1, each advertising GPU=1 (as `dask worker
    --resources GPU=1` does), so the tasks' resource requests are exercised."""
    return distributed.LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
        resources={"GPU": 1},
    )


@pytest.fixture(scope="module")
def cluster():
    """One 2-worker cluster for the module: workers importing torch take seconds to start.

    The workers advertise a GPU resource each, as GPU workers started with
    `--resources GPU=1` do, so the tasks' resource requests are exercised too (the
    `local:2` test below covers plain CPU workers).
    """
    with gpu_workers(2) as c:
        yield c


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster) as c:
        yield c
        c.wait_for_workers(2, timeout=60)  # a test that killed a worker leaves the cluster whole


def read_set(set_dir: Path) -> dict:
    """video_id -> (features (T, D) float16, length, label, frame_indices (T,)), with plain h5py."""
    out = {}
    for s in store.load_manifest(set_dir)["shards"]:
        with h5py.File(set_dir / s["file"], "r") as f:
            rows = zip(
                f["video_ids"].asstr()[()], f["features"][()], f["lengths"][()], f["labels"][()], f["frame_indices"][()]
            )
            for vid, x, n, y, idx in rows:
                assert vid not in out, f"{vid} stored twice"
                out[vid] = (x, int(n), int(y), idx)
    return out


def assert_same_features(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for vid, (x, n, y, idx) in want.items():
        gx, gn, gy, gidx = got[vid]
        assert (gn, gy) == (n, y) and np.array_equal(gidx, idx), vid
        # Bit for bit where every process runs the backbone with the same number of threads;
        # oneDNN splits its reductions by thread count (Dask's workers and joblib's processes
        # run with fewer), which moves a value by about one fp16 step, and a value near zero (a
        # sum that almost cancels) by up to 1.2e-5 (seen on a 16-core Xeon; features reach ~40).
        np.testing.assert_allclose(gx.astype(np.float32), x.astype(np.float32), rtol=2**-10, atol=1e-4, err_msg=vid)


def assert_complete_and_clean(set_dir: Path, videos: int) -> None:
    m = store.load_manifest(set_dir)
    assert m["complete"] and m["num_stored"] == videos and m["num_failed"] == 0
    assert [s["index"] for s in m["shards"]] == list(range(m["num_shards"]))
    assert store.verify(set_dir) == []
    assert not [p.name for p in set_dir.iterdir() if files.TMP_MARK in p.name]


def test_dask_features_identical_to_a_single_machine_run(cluster, base_cfg, reference, tmp_path, capfd):
    cfg = base_cfg.replace(features_root=tmp_path, scheduler=cluster.scheduler_address)
    summary = extract_features(cfg)
    assert summary.computed == len(reference) and summary.failed == 0
    assert_complete_and_clean(summary.set_dir, len(reference))
    assert_same_features(read_set(summary.set_dir), reference)
    err = capfd.readouterr().err
    assert "2 worker(s) on 1 host(s), 2 thread(s), 2 GPU(s) advertised" in err
    assert "3 of 3 shards to compute on the cluster" in err
    assert extract_features(cfg, quiet=True).reused_set  # a rerun never reaches the cluster


def test_dask_workers_copy_rows_another_set_holds(cluster, base_cfg, tmp_path):
    """Reuse across sets on a cluster: the tasks copy on the workers, the driver counts and indexes."""
    first = extract_features(base_cfg.replace(features_root=tmp_path, name="first"), quiet=True)
    cfg = base_cfg.replace(features_root=tmp_path, name="second", scheduler=cluster.scheduler_address)
    second = extract_features(cfg, quiet=True)
    assert (second.computed, second.copied, second.copied_from) == (0, 6, {first.feature_set_id: 6})
    got, want = read_set(second.set_dir), read_set(first.set_dir)
    assert sorted(got) == sorted(want)
    for vid, (x, n, y, idx) in want.items():
        assert np.array_equal(got[vid][0], x) and np.array_equal(got[vid][3], idx), vid  # copied: bit for bit
    m = store.load_manifest(second.set_dir)
    assert sum(s["copied"][first.feature_set_id] for s in m["shards"]) == 6


def test_a_worker_killed_mid_run_still_gives_a_complete_correct_set(client, base_cfg, reference, tmp_path, capfd):
    """SIGKILL the worker computing a shard; Dask reschedules it, each video is stored once."""
    cfg = base_cfg.replace(features_root=tmp_path, scheduler=client.scheduler.address, shard_size=1)
    pids = client.run(os.getpid)  # worker address -> pid
    outcome: dict = {}
    run = threading.Thread(target=lambda: outcome.update(summary=extract_features(cfg)))
    run.start()
    victim, deadline = None, time.monotonic() + 120
    while victim is None and run.is_alive() and time.monotonic() < deadline:
        busy = [
            addr for addr, keys in client.processing().items() if any(str(k).startswith("vidstore-shard") for k in keys)
        ]
        victim = busy[0] if busy else time.sleep(0.05)
    assert victim is not None, "no shard task was ever seen running"
    os.kill(pids[victim], signal.SIGKILL)
    run.join(timeout=300)
    summary = outcome["summary"]
    client.wait_for_workers(2, timeout=60)
    assert pids[victim] not in client.run(os.getpid).values()  # it really died (the nanny started another)
    assert "dask: lost worker(s)" in capfd.readouterr().err
    assert summary.computed == len(reference)
    assert_complete_and_clean(summary.set_dir, len(reference))
    assert_same_features(read_set(summary.set_dir), reference)


def test_driver_leaves_a_shard_claimed_by_another_run_and_takes_it_over_when_that_run_ends(
    cluster, base_cfg, reference, tmp_path
):
    cfg = base_cfg.replace(features_root=tmp_path, scheduler=cluster.scheduler_address)
    p = make_plan(cfg)
    open_feature_set(p)
    other = store.Claim(p.set_dir, 0)  # a concurrent local run computing shard 0
    assert other.acquire()
    outcome: dict = {}
    run = threading.Thread(target=lambda: outcome.update(summary=extract_features(cfg, quiet=True)))
    run.start()
    try:
        others_done = lambda: {1, 2} <= {s["index"] for s in store.load_manifest(p.set_dir)["shards"]}
        assert store.wait_for(others_done, timeout=120, poll=0.1)
        time.sleep(1.0)  # the driver keeps polling; it must still leave shard 0 alone
        assert 0 not in {s["index"] for s in store.load_manifest(p.set_dir)["shards"]}
        assert not list(p.set_dir.glob("shard-00000.h5*")), "shard 0 was computed while another run held it"
    finally:
        other.release()  # "that run dies": the driver takes shard 0 over
    run.join(timeout=120)
    assert outcome["summary"].computed == len(reference)
    assert_complete_and_clean(p.set_dir, len(reference))
    assert_same_features(read_set(p.set_dir), reference)


def test_devices_cpu_cpu_equal_the_single_process_result(base_cfg, reference, tmp_path, capfd):
    summary = extract_features(base_cfg.replace(features_root=tmp_path, devices=("cpu", "cpu"), workers=2))
    assert summary.computed == len(reference)
    assert_complete_and_clean(summary.set_dir, len(reference))
    assert_same_features(read_set(summary.set_dir), reference)
    err = capfd.readouterr().err
    assert "one backbone process per device: cpu, cpu (1 decoders each" in err
    assert "helping:" not in err  # siblings sharing shards is not worth a line each


def test_a_second_commit_of_the_same_shard_is_ignored(tmp_path):
    """A retried task (or a duplicate attempt) never lists a shard, or a video, twice."""
    store.create(tmp_path, store.new_manifest("x", "d", {}, {}, 4, 2048, ["c"], {}, 4, 2, 2))
    first = {"file": "shard-00000.h5", "videos": 2, "bytes": 10, "sha256": "a" * 64}
    store.commit_shard(tmp_path, 0, first, [])
    m = store.commit_shard(tmp_path, 0, first | {"sha256": "b" * 64}, [{"video_id": "x", "reason": "r"}])
    assert [s.sha256 for s in m.shards] == ["a" * 64] and m.num_stored == 2 and m.num_failed == 0


def test_jobs_and_configs_pickle_and_carry_one_shard(base_cfg, tmp_path):
    p = make_plan(base_cfg.replace(features_root=tmp_path, scheduler="local:2"))
    again = cloudpickle.loads(cloudpickle.dumps(p))
    assert again.identity.id == p.identity.id and again.cfg == p.cfg and again.shards == p.shards
    job = cloudpickle.loads(cloudpickle.dumps(p.only(1)))
    assert job.shards == {1: p.shards[1]} and len(job.shards[1]) == 2 and job.set_dir == p.set_dir
    assert job.dataset is None  # a task carries its shard's records, not the whole listing


def test_scheduler_and_device_errors_name_the_option(base_cfg, tmp_path):
    with pytest.raises(ConfigError, match="--scheduler.*local:N with N >= 1"):
        dist.parse_local("local:zero")
    with pytest.raises(ConfigError, match="--scheduler"):
        base_cfg.replace(scheduler="http://host:8786")
    with pytest.raises(ConfigError, match="--devices .*cannot be combined with --scheduler"):
        base_cfg.replace(scheduler="local:1", devices=("cpu", "cpu"))


def test_an_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(dist, "CONNECT_TIMEOUT", 1.0)
    with pytest.raises(ClusterError, match=r"no Dask scheduler answers at tcp://127.0.0.1:1 .*dask scheduler"):
        dist.connect("tcp://127.0.0.1:1")


def test_decoders_share_the_cores_of_a_host():
    cfg = ExtractConfig(workers=0)
    cores = len(os.sched_getaffinity(0))
    if cores < (os.cpu_count() or 1):
        pytest.skip("this process is pinned to some cores; the share is then all of them")
    assert dist.decoders_here(cfg, siblings=cores) == 1
    assert dist.decoders_here(cfg, siblings=1) == cores
    assert dist.decoders_here(cfg.replace(workers=3), siblings=8) == 3


def test_make_features_scheduler_local_2_from_the_command_line(base_cfg, reference, tmp_path):
    """`python -m stages features --scheduler local:2` starts and stops its own cluster."""
    args = [
        sys.executable,
        "-m",
        "stages",
        "features",
        "--dataset",
        "folder",
        "--data-dir",
        str(base_cfg.data_dir),
        "--name",
        "clips",
        "--features-root",
        str(tmp_path),
        "--weights",
        "random",
        "--size",
        "64",
        "--frames",
        "4",
        "--gpu-batch",
        "4",
        "--shard-size",
        "2",
        "--device",
        "cpu",
        "--workers",
        "1",
        "--scheduler",
        "local:2",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting a local cluster of 2 worker process(es)" in proc.stderr
    (set_dir,) = [d for d in store.feature_sets(tmp_path)]
    assert_complete_and_clean(set_dir, len(reference))
    assert_same_features(read_set(set_dir), reference)


@pytest.mark.gpu
def test_dask_gpu_worker_matches_a_local_gpu_run(base_cfg, tmp_path):
    """One GPU worker advertising GPU=1 (dask-cuda style) against a local run on the same GPU."""
    cfg = base_cfg.replace(device="cuda", precision="fp16", workers=4)
    local = read_set(extract_features(cfg.replace(features_root=tmp_path / "local"), quiet=True).set_dir)
    with gpu_workers(1) as c:
        summary = extract_features(
            cfg.replace(features_root=tmp_path / "dask", scheduler=c.scheduler_address), quiet=True
        )
    got = read_set(summary.set_dir)
    assert sorted(got) == sorted(local)
    for vid, (x, *_) in local.items():  # cuDNN may pick other kernels in another process: fp16 noise
        assert_fp16_close(got[vid][0], x.astype(np.float32), vid)
