"""Concurrency (issue 5): readers during stage one, two runs on one feature set, a dead claim holder.

Readers take no lock: they trust the manifest (replaced atomically) and the shards it
lists (renamed into place before they are listed, immutable after). Writers share the
work through one flock per shard (`.claims/NNNNN`), which the kernel drops when its
holder dies, so a SIGKILLed run never blocks the next one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from reliability_harness import (
    REPO,
    Run,
    check_feature_set,
    features_cmd,
    make_tiny_tree,
    only_set_dir,
    read_set,
    run_cli_as_nobody,
    start,
    wait_until,
)

from pipeline import store
from pipeline.store.claims import lock_held
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.extract.plan import make_plan, open_feature_set

SHARD_SIZE = 1


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("concurrency-tree")
    return root, make_tiny_tree(root, clips_per_class=5)


def plan(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + SHARD_SIZE] for i in range(0, len(ids), SHARD_SIZE)]


class Reader(threading.Thread):
    """Polls a feature set as another team would, until stopped; keeps the first error."""

    def __init__(self, features_root: Path, ids: list[str]):
        super().__init__(daemon=True)
        self.features_root, self.ids = features_root, ids
        self.stop, self.polls, self.states, self.error = threading.Event(), 0, set(), None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                stored = check_feature_set(only_set_dir(self.features_root), plan(self.ids))
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.error = e
                return
            self.polls += 1
            self.states.add(len(stored))
            time.sleep(0.005)


def pause_outside_the_manifest_lock(run: Run, set_dir: Path) -> None:
    """SIGSTOP the run's process group at a moment it does not hold the set's manifest lock
    (paused inside it, it would block every other run)."""
    for _ in range(500):
        os.killpg(run.proc.pid, signal.SIGSTOP)
        if not lock_held(set_dir):
            return
        os.killpg(run.proc.pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"{run.proc.pid} kept the manifest lock of {set_dir}")


def holds_a_claim(run: Run, set_dir: Path) -> bool:
    """True once `run` has claimed a shard (.claims/NNNNN says 'host pid time')."""
    return any(f" {run.proc.pid} " in p.read_text(errors="replace") for p in (set_dir / ".claims").glob("[0-9]*"))


def done_count(stdout: str) -> int:
    m = re.search(r"computed (\d+), copied", stdout)
    return int(m.group(1)) if m else 0


def test_two_runs_at_once_share_the_work_while_a_reader_sees_only_committed_shards(tree, tmp_path, capfd):
    root, ids = tree
    features_root = tmp_path / "store"
    reader = Reader(features_root, ids)
    reader.start()
    # a batch of one video (T=4): a run claims only the shards it is decoding or embedding, not
    # the 8 a default batch of 32 frames would gather before its first forward pass
    cmd = features_cmd(root, features_root, shard_size=SHARD_SIZE, workers=1, gpu_batch=4)

    def committed() -> int:
        set_dir = only_set_dir(features_root)
        return len(store.load_manifest(set_dir)["shards"]) if set_dir and (set_dir / store.MANIFEST).exists() else 0

    # Each run computes at least one shard whatever the machine's load: a is paused (SIGSTOP, its
    # decoder with it) once it has committed one, outside the manifest's lock; b starts and takes
    # a shard of its own (a claim file with its pid); then a goes on and both share what is left.
    a = start(cmd, tmp_path, "a")
    try:
        assert wait_until(lambda: committed() >= 1 or not a.running(), 120) and a.running(), a.stderr[-3000:]
        set_dir = only_set_dir(features_root)
        pause_outside_the_manifest_lock(a, set_dir)
        b = start(cmd, tmp_path, "b")
        assert wait_until(lambda: holds_a_claim(b, set_dir) or not b.running(), 120), b.stderr[-3000:]
        os.killpg(a.proc.pid, signal.SIGCONT)
        assert a.wait(180) == 0, a.stderr[-3000:]
        assert b.wait(180) == 0, b.stderr[-3000:]
    finally:
        if a.running():
            os.killpg(a.proc.pid, signal.SIGCONT)
        reader.stop.set()
        reader.join(30)
    if reader.error is not None:
        raise AssertionError(f"a reader saw a broken store during stage one: {reader.error!r}") from reader.error
    partial = [n for n in reader.states if 0 < n < len(ids)]
    assert reader.polls > 10 and partial, (
        f"the reader never saw the set half-written: {reader.polls} polls, states {reader.states}"
    )

    set_dir = only_set_dir(features_root)
    stored = check_feature_set(set_dir, plan(ids))
    assert sorted(stored) == ids and store.load_manifest(set_dir)["complete"]
    assert read_set(set_dir)[0] == ids  # every video once, in order
    # No video was computed twice, both runs computed some, and a run that did not compute everything says why.
    assert done_count(a.stderr) + done_count(b.stderr) == len(ids), (a.stderr[-2000:], b.stderr[-2000:])
    assert done_count(a.stderr) > 0 and done_count(b.stderr) > 0, (a.stderr[-2000:], b.stderr[-2000:])
    for run in (a, b):
        if done_count(run.stderr) < len(ids):
            # a note while it ran, or (when the other run committed every shard before this one
            # looked) its summary counts the rest as reused
            rest = len(ids) - done_count(run.stderr)
            said = re.search(r"^(helping|waiting|reusing)", run.stderr, re.M) or re.search(
                rf"computed \d+, copied 0, reused {rest}, failed 0", run.stderr
            )
            assert said, run.stderr[-3000:]
    # A third run, once the set is complete, reuses it and says so.
    cfg = ExtractConfig(
        dataset="folder",
        data_dir=root,
        features_root=features_root,
        weights="random",
        image_size=32,
        frames=4,
        shard_size=SHARD_SIZE,
        device="cpu",
    )
    again = extract_features(cfg)
    assert again.reused_set and again.computed == 0 and again.set_dir == set_dir
    assert "reusing feature set" in capfd.readouterr().err


HOLDER = """
import sys, time
from pathlib import Path
from pipeline import store
from pipeline.store.claims import lock_held
claim = store.Claim(Path(sys.argv[1]), int(sys.argv[2]))
assert claim.acquire(), "claim already taken"
print("held", flush=True)
time.sleep(600)
"""


def test_a_claim_held_by_a_killed_process_is_taken_over(tree, tmp_path):
    """A run waits for a shard another process claimed; when that process is SIGKILLed, it takes the shard over."""
    root, ids = tree
    features_root = tmp_path / "store"
    cmd = features_cmd(root, features_root, shard_size=4)
    # Open the feature set the command will work on (and learn its directory), computing nothing.
    p = make_plan(
        ExtractConfig(
            dataset="folder",
            data_dir=root,
            features_root=features_root,
            weights="random",
            image_size=32,
            frames=4,
            shard_size=4,
            device="cpu",
        )
    )
    open_feature_set(p)
    set_dir = p.set_dir
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(set_dir), "1"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        waiter = start(cmd, tmp_path, "waiter")
        assert wait_until(lambda: "waiting:" in waiter.stderr or not waiter.running(), 120), waiter.stderr[-3000:]
        assert waiter.running(), f"finished without shard 1:\n{waiter.stderr[-3000:]}"
        assert "helping: shard 1 is being computed by another run" in waiter.stderr
        manifest = store.load_manifest(set_dir)
        assert not manifest["complete"] and 1 not in {s["index"] for s in manifest["shards"]}
    finally:
        holder.kill()  # SIGKILL: the kernel drops its flock
        holder.wait()
    assert waiter.wait(120) == 0, waiter.stderr[-3000:]
    stored = check_feature_set(set_dir, [ids[i : i + 4] for i in range(0, len(ids), 4)])
    assert sorted(stored) == ids and store.load_manifest(set_dir)["complete"]


def test_a_team_with_read_only_access_reuses_a_complete_set():
    """Another team may read the shared store but not write it: `features` still reuses the set, and writes nothing."""
    base = Path(tempfile.mkdtemp(prefix="vidstore-readonly-"))
    try:
        base.chmod(0o755)  # reachable by nobody (pytest's own tmp dirs are 0700)
        tree, root = base / "tree", base / "store"
        make_tiny_tree(tree, clips_per_class=1, frames=6)
        cfg = ExtractConfig(
            dataset="folder", data_dir=tree, features_root=root, weights="random", image_size=32, frames=2, device="cpu"
        )
        set_dir = extract_features(cfg, quiet=True).set_dir
        for p in [base, *base.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)  # owned by us: others may read, not write
        before = {p: p.stat().st_mtime_ns for p in set_dir.rglob("*")}
        r = run_cli_as_nobody(
            [
                "features",
                "--dataset",
                "folder",
                "--data-dir",
                str(tree),
                "--features-root",
                str(root),
                "--weights",
                "random",
                "--size",
                "32",
                "--frames",
                "2",
                "--device",
                "cpu",
            ]
        )
        assert r.returncode == 0 and "reusing feature set" in r.stderr, r.stderr[-3000:]
        assert {p: p.stat().st_mtime_ns for p in set_dir.rglob("*")} == before
    finally:
        shutil.rmtree(base, ignore_errors=True)
