"""The parts of the CUDA path that can be checked without a GPU: which device each process
and Dask worker binds, and which settings are refused before any work. The GPU itself is
exercised by tests/test_gpu.py."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest
import torch

from pipeline.devices import inference_precision, training_precision
from pipeline.errors import ConfigError
from stages.extract import distributed as dist
from stages.extract import local, plan
from stages.extract.config import ExtractConfig
from stages.extract.extractors.base import picture_precision
from stages.extract.extractors.resnet50 import ResNet50


def test_a_local_dask_cluster_deals_the_gpus_out_one_per_worker():
    """SCHEDULER=local:N on a GPU machine: worker k sees GPU k mod n alone, and advertises it."""
    from distributed import Client

    with dist.start_local_cluster(3, ["3", "5"]) as cluster, Client(cluster) as client:
        client.wait_for_workers(3, timeout=60)
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        resources = [w["resources"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    assert sorted(seen.values()) == ["3", "3", "5"]
    assert resources == [{"GPU": 1}] * 3


def test_the_gpus_to_deal_out_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert dist.local_gpus("auto") == ["4", "6"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert dist.local_gpus("cuda") == ["0", "1"]
    assert dist.local_gpus("cpu") == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert dist.local_gpus("auto") == []


def test_a_cpu_local_cluster_stays_a_plain_one():
    with dist.start_local_cluster(1, []) as cluster:
        assert type(cluster).__name__ == "LocalCluster"


def test_auto_device_with_a_remote_scheduler_must_be_said(tmp_path):
    cfg = ExtractConfig(dataset="folder", data_dir=tmp_path, scheduler="tcp://10.0.0.1:8786")
    with pytest.raises(ConfigError, match="--device .*DEVICE=cuda"):
        picture_precision(cfg)
    assert picture_precision(cfg.replace(device="cuda")) == "fp16"
    assert picture_precision(cfg.replace(device="cpu")) == "fp32"
    assert picture_precision(cfg.replace(precision="fp16")) == "fp16"


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    for resolve in (inference_precision, training_precision):
        with pytest.raises(ConfigError, match="--precision .*bf16.*V100"):
            resolve("bf16", torch.device("cuda"))


def test_a_device_process_binds_its_gpu_before_anything_else(monkeypatch, tmp_path):
    """DEVICES=cuda:0,cuda:1: the second process's pinned memory and context belong on cuda:1."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", str(device))))
    monkeypatch.setattr(
        local, "extract_in_process", lambda p, summary, show_progress: calls.append(("extract", p.cfg.device))
    )
    cfg = ExtractConfig(dataset="folder", data_dir=tmp_path, device="cuda:1", devices=("cuda:1",))
    p = plan.ExtractionPlan(
        cfg,
        family=ResNet50(cfg),
        precision="fp16",
        weights=None,
        identity=dataclasses.make_dataclass("I", ["id"])("x"),
        set_dir=tmp_path,
        assigned={},
    )
    local.device_worker(p)
    assert calls == [("set_device", "cuda:1"), ("extract", "cuda:1")]
    calls.clear()
    local.device_worker(dataclasses.replace(p, cfg=cfg.replace(device="cpu", devices=("cpu",))))
    assert calls == [("extract", "cpu")]


def test_an_error_in_the_inference_loop_is_logged_and_raised(caplog):
    """Raised on the main thread with its own type (no Python 3.11-only add_note, which on
    3.10 turned the error into a hang), and logged where it happened."""
    from helpers import FakeExtractor

    from stages.extract.batching import Batcher

    with caplog.at_level(logging.ERROR, logger="stages.extract.batching"):
        batcher = Batcher(FakeExtractor(fail=True), batch=2, frames=2, workers=1, sink=lambda *a: None)
        slot = batcher.slots.acquire()
        batcher.add(slot, 2, owner=0)
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.close()
    assert "inference loop stopped: RuntimeError" in caplog.text
