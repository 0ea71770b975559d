"""Fault injection for the reliability tests (issue 5): run stage one as users run it,
kill it, and look at the store exactly as a reader in another team would.

Stage one runs as `python -m stages features ...` in its own process group, so a
test can SIGKILL it together with its ffmpeg children at any moment (a pre-empted
machine), or only the Python process (the OOM killer). `check_feature_set` asserts the
store contract on whatever is on disk at that instant: raw `json.loads` of the
manifest, plain h5py on every listed shard, `store.read_shard` with the manifest's
sha256, no temp name listed, no video twice, shard i holding the planned videos.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import synth

from pipeline import files, store
from pipeline.config import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[1]
# Tiny settings: CPU ResNet-50 at 32 px and T=4 costs ~0.1 s per video after start-up. The device is
# pinned to the CPU, so a machine with CUDA runs these tests as a CPU-only one does.
TINY = {"weights": "random", "size": 32, "frames": 4, "device": "cpu"}
TINY_CLASSES = {"alpha": ("bars", "plasma"), "beta": ("life", "sunset"), "gamma": ("checker", "box")}


def make_tiny_tree(root: Path, clips_per_class: int = 4, classes: int = 2, frames: int = 12) -> list[str]:
    """root/<class>/clip_NN.avi, 64x48 px, `frames` frames each (idempotent). Returns the sorted video ids."""
    chosen = dict(list(TINY_CLASSES.items())[:classes])
    half = frames // 2
    synth.make_clips(
        [
            dict(
                path=Path(root) / cls / f"clip_{i:02d}.avi",
                scenes=list(scenes),
                scene_frames=[half, frames - half],
                size=(64, 48),
                seed=f"reliability/{cls}/{i}",
            )
            for cls, scenes in chosen.items()
            for i in range(clips_per_class)
        ]
    )
    return sorted(f"{cls}/clip_{i:02d}.avi" for cls in chosen for i in range(clips_per_class))


def features_cmd(data_dir: Path, features_root: Path, dataset: str = "folder", **options) -> list[str]:
    """`python -m stages features ...` with the TINY settings unless overridden."""
    args = [
        sys.executable,
        "-m",
        "stages",
        "features",
        "--dataset",
        dataset,
        "--data-dir",
        str(data_dir),
        "--features-root",
        str(features_root),
    ]
    for key, value in (TINY | options).items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


@dataclass
class Run:
    """A stage-one process; stdout/stderr go to files (a pipe nobody drains could block it)."""

    proc: subprocess.Popen
    out: Path
    err: Path
    started: float

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self, whole_group: bool = True) -> bool:
        """SIGKILL the run (and, whole_group, its ffmpeg children); False if it had already exited."""
        if not self.running():
            return False
        try:
            if whole_group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.proc.wait()
        return True

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"stage one did not finish within {timeout} s; stderr:\n{self.stderr[-3000:]}"
            ) from None

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def start(cmd: list[str], logs: Path, name: str, env: dict | None = None) -> Run:
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Run(proc, out, err, time.monotonic())


def run_to_end(cmd: list[str], logs: Path, name: str, timeout: float = 180, env: dict | None = None) -> Run:
    run = start(cmd, logs, name, env)
    rc = run.wait(timeout)
    assert rc == 0, f"{name}: exit {rc}\nstderr:\n{run.stderr[-3000:]}"
    return run


def only_set_dir(features_root: Path) -> Path | None:
    """The one feature-set directory under features_root (None before a run created it)."""
    dirs = [p for p in Path(features_root).glob("*/*") if p.is_dir()]
    assert len(dirs) <= 1, f"more than one feature set under {features_root}: {dirs}"
    return dirs[0] if dirs else None


def check_feature_set(set_dir: Path | None, plan: list[list[str]] | None = None) -> dict[str, np.ndarray]:
    """Assert the store contract on what is on disk now; return {video_id: features (T, D) float16}.

    plan: shard i -> the video ids it must hold (a failed video may be missing from it).
    """
    if set_dir is None or not (set_dir / store.MANIFEST).exists():
        return {}
    manifest = json.loads((set_dir / store.MANIFEST).read_bytes())  # never a half-written file
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert store.verify(set_dir) == []
    seen: dict[str, np.ndarray] = {}
    indices = [s["index"] for s in manifest["shards"]]
    assert len(indices) == len(set(indices)), f"a shard index is listed twice: {indices}"
    for s in manifest["shards"]:
        name = s["file"]
        assert store.SHARD_NAME.fullmatch(name) and files.TMP_MARK not in name, f"a temp/partial name is listed: {name}"
        assert name == store.shard_name(s["index"])
        data = store.read_shard(set_dir / name, s["sha256"])
        with h5py.File(set_dir / name, "r") as f:  # plain h5py, as another team reads it
            ids = list(f["video_ids"].asstr()[()])
            feats = f["features"][()]
            assert f["features"].dtype == np.float16 and len(f["lengths"]) == len(ids) == s["videos"]
        assert ids == list(data["video_ids"]) and np.array_equal(feats, data["features"])
        if plan is not None:
            assert set(ids) <= set(plan[s["index"]]), f"{name} holds videos of another shard: {ids}"
            failed = {f["video_id"] for f in s.get("failures", [])}
            assert set(ids) | failed == set(plan[s["index"]])
        for vid, x in zip(ids, feats):
            assert vid not in seen, f"{vid} is stored twice"
            seen[vid] = x
    failures = set_dir / store.FAILURES
    if failures.exists():
        for line in failures.read_text().splitlines():
            json.loads(line)
    return seen


def read_set(set_dir: Path) -> tuple[list[str], np.ndarray]:
    """(video ids, features (N, T, D) float16) of a feature set, in manifest order."""
    ids, feats = [], []
    for s in store.load_manifest(set_dir)["shards"]:
        data = store.read_shard(set_dir / s["file"], s["sha256"])
        ids += list(data["video_ids"])
        feats.append(data["features"])
    return ids, np.concatenate(feats) if feats else np.zeros((0, 0, 0), np.float16)


def wait_until(predicate, timeout: float, poll: float = 0.01) -> bool:
    """store.wait_for at a finer poll: kills must land at precise moments."""
    return store.wait_for(predicate, timeout, poll)


def temp_files(set_dir: Path | None) -> list[Path]:
    if set_dir is None or not set_dir.exists():
        return []
    return [p for p in set_dir.iterdir() if files.TMP_MARK in p.name]


NOBODY = 65534
# Run the CLI as an unprivileged user from a root interpreter. Everything stage one needs is
# imported first: the interpreter's own files may live where nobody cannot read (/root).
DROP_PRIVILEGES = """
import os, sys
sys.path.insert(0, {repo!r})
import concurrent.futures, json, logging, queue, h5py, numpy, torch, torchvision, tqdm
import stages.cli, pipeline.store, stages.extract.entry_points
import av.subtitles.stream  # PyAV imports it on opening the first file, when the venv may be unreadable
os.setgroups([])
os.setgid({uid})
os.setuid({uid})
sys.exit(stages.cli.main(sys.argv[1:], standalone_mode=True))
"""


def run_cli_as_nobody(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m stages ARGS` as uid/gid 65534 when we are root, else as ourselves."""
    if os.geteuid() == 0:
        code = DROP_PRIVILEGES.format(repo=str(REPO), uid=NOBODY)
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd="/", timeout=timeout
        )
    return subprocess.run(
        [sys.executable, "-m", "stages", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )
