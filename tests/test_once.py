"""tests/once.py: what the session's worker processes share is built once, under a lock, and a
failed build is started afresh."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from once import once


def worker_factory(basetemp: Path) -> SimpleNamespace:
    """A stand-in for a worker's tmp_path_factory: only its basetemp matters to once()."""
    basetemp.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(getbasetemp=lambda: basetemp)


def test_workers_of_one_session_build_it_once_and_all_get_its_result(tmp_path, monkeypatch):
    """Two workers (sibling basetemps, as xdist makes them) ask at once; the build takes a while."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    builds = []

    def build(path: Path) -> dict:
        builds.append(path)
        time.sleep(0.3)  # long enough for the other worker to ask meanwhile
        path.mkdir()
        (path / "clip.avi").write_bytes(b"x")
        return {"clips": ["clip.avi"]}

    got = []
    workers = [worker_factory(tmp_path / f"popen-gw{k}") for k in range(2)]
    threads = [threading.Thread(target=lambda w=w: got.append(once(w, "tree", build))) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1, builds
    assert got == [(tmp_path / "built-once" / "tree", {"clips": ["clip.avi"]})] * 2
    assert (tmp_path / "built-once" / "tree" / "clip.avi").read_bytes() == b"x"


def test_without_workers_it_lives_in_the_sessions_own_basetemp(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    path, result = once(worker_factory(tmp_path / "pytest-7"), "weights", lambda p: p.mkdir() or "made")
    assert (path, result) == (tmp_path / "pytest-7" / "built-once" / "weights", "made")


def test_a_build_that_failed_halfway_is_started_afresh(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    factory = worker_factory(tmp_path)

    def broken(path: Path) -> None:
        path.mkdir()
        (path / "half.avi").write_bytes(b"half")
        raise RuntimeError("ffmpeg died")

    with pytest.raises(RuntimeError, match="ffmpeg died"):
        once(factory, "tree", broken)
    path, result = once(factory, "tree", lambda p: p.mkdir() or sorted(x.name for x in p.iterdir()))
    assert result == [] and not (path / "half.avi").exists()
