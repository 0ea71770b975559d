"""Bad input (issue 5): real-world bad files each get a specific reason; every good video is stored.

The corpus is synth.make_bad_corpus (conftest `bad_corpus`): a folder-per-class tree of
files that must fail (empty, truncated, text, audio only, a FIFO that would hang any reader)
and files that must succeed however odd (1 frame, shorter than T, 4K, portrait, odd
sizes, VFR, MP4 named .avi, quotes/spaces/non-ASCII names, one name in two folders).
Also here: listed-but-missing and escaping paths, an unreadable file, and the rule that
ffmpeg only ever gets argument lists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import synth
from reliability_harness import REPO, run_cli_as_nobody

import stages.extract.decode.ffmpeg_cli
import stages.extract.inputs
from pipeline import store
from stages.extract import extract_features
from stages.extract.config import DECODERS, ExtractConfig
from stages.extract.decode import DecodeJob, decode_video
from stages.extract.decode.ffmpeg_cli import decode_video_cli

T = 8  # > the short clips' 1, 3 and 5 frames, < every other clip's 20+
TIMEOUT = 3  # s; no file of the corpus may cost this (the FIFO fails at once)

# Exact reason prefixes, as a user reads them in failures.jsonl.
EXPECTED_REASONS = {
    "must_fail/empty.avi": r"empty file \(0 bytes\)$",
    "must_fail/audio_only.avi": r"no video stream \(container: avi\)$",
    "must_fail/not_a_video.avi": r"not a readable video: ",
    "must_fail/truncated.avi": r"truncated: decoded \d+ of ~40 frames",
    "must_fail/hang.avi": r"not a regular file: it is a FIFO \(named pipe\)$",
}
EXPECTED_LENGTHS = {
    "must_succeed/one_frame.avi": 1,
    "must_succeed/short_5_frames.avi": 5,
    "must_succeed/uhd_3840x2160.avi": 3,
}


def stored_rows(set_dir: Path) -> dict[str, dict]:
    """video_id -> its row of every dataset, read with plain h5py from the listed shards."""
    rows = {}
    for s in store.load_manifest(set_dir)["shards"]:
        with h5py.File(set_dir / s["file"], "r") as f:
            cols = {
                name: (f[name].asstr()[()] if name in ("video_ids", "groups") else f[name][()])
                for name in store.SHARD_FIELDS
            }
        for i, vid in enumerate(cols["video_ids"]):
            assert vid not in rows, f"{vid} stored twice"
            rows[vid] = {name: cols[name][i] for name in store.SHARD_FIELDS}
    return rows


def failures_of(set_dir: Path) -> dict[str, str]:
    lines = [json.loads(line) for line in (set_dir / store.FAILURES).read_text().splitlines()]
    reasons = {f["video_id"]: f["reason"] for f in lines}
    assert len(reasons) == len(lines), "a failure is recorded twice"
    return reasons


@pytest.fixture(scope="module")
def bad_run(bad_corpus, tmp_path_factory):
    cfg = ExtractConfig(
        dataset="folder",
        data_dir=bad_corpus.root,
        features_root=tmp_path_factory.mktemp("bad-store"),
        weights="random",
        image_size=32,
        frames=T,
        shard_size=4,
        workers=2,
        timeout=TIMEOUT,
        device="cpu",
    )
    t0 = time.monotonic()
    summary = extract_features(cfg, quiet=True)
    return summary, time.monotonic() - t0


def test_the_run_completes_and_every_bad_file_has_its_specific_reason(bad_corpus, bad_run):
    summary, _ = bad_run
    manifest = store.load_manifest(summary.set_dir)
    assert manifest["complete"]
    reasons = failures_of(summary.set_dir)
    assert set(reasons) == set(bad_corpus.paths(synth.MUST_FAIL)), reasons
    for rel, pattern in EXPECTED_REASONS.items():
        assert re.match(pattern, reasons[rel]), f"{rel}: {reasons[rel]!r} does not start with /{pattern}/"
    for rel, reason in reasons.items():  # files added to the corpus later: still a reason a user can act on
        assert reason and "Traceback" not in reason and len(reason) < 400, (rel, reason)
    assert manifest["num_failed"] == len(reasons) and summary.failed == len(reasons)


def test_every_good_video_is_stored_once_and_short_ones_are_padded_not_failed(bad_corpus, bad_run):
    summary, _ = bad_run
    rows = stored_rows(summary.set_dir)
    assert sorted(rows) == sorted(bad_corpus.paths(synth.MUST_SUCCEED))
    for vid, row in rows.items():
        n = EXPECTED_LENGTHS.get(vid, T)
        assert row["lengths"] == n, (vid, row["lengths"])
        assert row["features"].shape == (T, 2048) and row["features"].dtype == np.float16
        assert np.abs(row["features"][:n].astype(np.float32)).sum(axis=1).min() > 0, (
            f"{vid}: a valid frame has no features"
        )
        assert not row["features"][n:].any(), f"{vid}: padding is not zero"
        assert (row["frame_indices"][n:] == -1).all() and (np.diff(row["frame_indices"][:n]) > 0).all()
        assert np.isnan(row["timestamps"][n:]).all() and not np.isnan(row["timestamps"][:n]).any()


def test_same_file_name_in_two_class_folders_is_two_videos(bad_run):
    rows = stored_rows(bad_run[0].set_dir)
    a, b = rows["must_succeed/same_name.avi"], rows["twin/same_name.avi"]
    assert a["labels"] != b["labels"]
    assert not np.array_equal(a["features"], b["features"])  # different content, not one file read twice


def test_odd_sizes_and_names_are_decoded_for_real(bad_run):
    rows = stored_rows(bad_run[0].set_dir)
    for vid in (
        "must_succeed/uhd_3840x2160.avi",
        "must_succeed/portrait_120x200.avi",
        "must_succeed/odd_161x97.avi",
        "must_succeed/really_mp4.avi",
        'must_succeed/it\'s a "clip" ü ñ.avi',
    ):
        assert vid in rows and rows[vid]["lengths"] > 0


def test_variable_frame_rate_keeps_each_frame_s_own_timestamp(bad_run):
    """vfr.mkv: frames 0.1 s apart up to frame 10, then 0.04 s apart (synth.make_vfr_clip)."""
    row = stored_rows(bad_run[0].set_dir)["must_succeed/vfr.mkv"]
    idx = row["frame_indices"][: row["lengths"]]
    expected = np.where(idx < 10, idx * 0.1, 1.0 + (idx - 10) * 0.04)
    np.testing.assert_allclose(row["timestamps"][: row["lengths"]], expected, atol=2e-3)


def test_the_fifo_costs_nothing_not_the_timeout(bad_run):
    _, elapsed = bad_run
    # The FIFO fails in preflight; the rest of the corpus, the model load included, takes seconds.
    assert elapsed < 60, f"stage one took {elapsed:.0f} s on 16 small files"


# ---------------------------------------------------------------- listed but missing, escaping paths
def test_missing_and_escaping_split_entries_are_reported_and_never_opened(missing_listed_tree, tmp_path, monkeypatch):
    src, missing = missing_listed_tree
    root = tmp_path / "ucf"
    shutil.copytree(src, root)
    for name in ("trainlist01.txt", "testlist02.txt"):  # CRLF, as the official lists
        with open(root / "ucfTrainTestlist" / name, "ab") as f:
            f.write(b"../../etc/passwd 1\r\n" if name.startswith("train") else b"Alpha/../../../../etc/shadow\r\n")
    opened = []

    def recording_decode(path, *args, **kwargs):
        opened.append(Path(path))
        return decode_video(path, *args, **kwargs)

    monkeypatch.setattr(stages.extract.inputs, "decode_video", recording_decode)
    cfg = ExtractConfig(
        dataset="ucf101",
        data_dir=root,
        features_root=tmp_path / "store",
        weights="random",
        image_size=32,
        frames=2,
        device="cpu",
    )
    summary = extract_features(cfg, quiet=True)
    reasons = failures_of(summary.set_dir)
    assert reasons[missing].startswith(f"listed in trainlist01.txt but missing: no file at UCF-101/{missing}"), reasons
    assert reasons["../../etc/passwd"].startswith(
        "listed in trainlist01.txt with a path that escapes the dataset root; not opened"
    )
    assert reasons["Alpha/../../../../etc/shadow"].startswith(
        "listed in testlist02.txt with a path that escapes the dataset root"
    )
    assert opened and all(p.resolve().is_relative_to((root / "UCF-101").resolve()) for p in opened), opened
    assert not any(missing in p.as_posix() for p in opened)
    assert store.load_manifest(summary.set_dir)["complete"] and len(stored_rows(summary.set_dir)) == len(opened)


# ---------------------------------------------------------------- an unreadable file
def test_an_unreadable_file_fails_with_permission_denied(unreadable_tree):
    """As root (CI), the run drops to nobody (65534): the chmod-000 file is unreadable to it, the rest is fine."""
    store_dir = Path(tempfile.mkdtemp(prefix="vidstore-unreadable-store-"))
    try:
        store_dir.chmod(0o777)
        args = [
            "features",
            "--dataset",
            "folder",
            "--data-dir",
            str(unreadable_tree.root),
            "--features-root",
            str(store_dir),
            "--weights",
            "random",
            "--size",
            "32",
            "--frames",
            "2",
            "--device",
            "cpu",
        ]
        r = run_cli_as_nobody(args)
        assert r.returncode == 0, r.stderr[-3000:]
        set_dir = next(store.feature_sets(store_dir))  # not the reuse index beside the sets
        assert failures_of(set_dir) == {"unreadable/locked.avi": "unreadable: permission denied"}
        assert list(stored_rows(set_dir)) == ["readable/ok.avi"]
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


def test_a_file_only_ffmpeg_cannot_read_also_says_permission_denied(unreadable_tree, monkeypatch):
    """When only the ffmpeg-cli decoder's processes are refused (they run as another user, or a
    root-squashed NFS), the reason is the same."""
    if not unreadable_tree.env:
        pytest.skip("needs root, to run ffmpeg as another user")
    for key, value in unreadable_tree.env.items():
        monkeypatch.setenv(key, value)
    dec = decode_video_cli(unreadable_tree.path, DecodeJob(2, 32, 37, timeout=30))
    assert dec.error is not None and dec.error.startswith("unreadable: permission denied"), dec.error


# ---------------------------------------------------------------- ffmpeg gets argument lists only
def test_ffmpeg_only_ever_gets_argument_lists_even_for_hostile_names(bad_corpus, tmp_path, monkeypatch):
    hostile = tmp_path / "$(touch PWNED); `touch PWNED2` 'x' \"y\" & | ; ü.avi"
    shutil.copy(bad_corpus.root / "must_succeed" / "normal.avi", hostile)
    calls = []
    real_run, real_popen = subprocess.run, subprocess.Popen

    def check(args, kwargs):
        assert isinstance(args, list) and all(isinstance(a, str) for a in args), f"not an argument list: {args!r}"
        assert kwargs.get("shell") is not True, f"shell=True for {args!r}"
        calls.append(args)

    def run(args, *a, **kw):
        check(args, kw)
        return real_run(args, *a, **kw)

    def popen(args, *a, **kw):
        check(args, kw)
        return real_popen(args, *a, **kw)

    cli = stages.extract.decode.ffmpeg_cli
    monkeypatch.setattr(cli.subprocess, "run", run)
    monkeypatch.setattr(cli.subprocess, "Popen", popen)
    for cached in (getattr(cli, n, None) for n in dir(cli)):
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()  # so the one-off capability probes run (and are checked) too
    monkeypatch.chdir(tmp_path)
    for kw in ({}, {"fps": 5.0}):  # the AVI-header path and the ffprobe path
        for decoder in DECODERS:  # pyav starts no process: the name reaches FFmpeg as a file object's
            dec = decode_video(hostile, DecodeJob(4, 32, 37, timeout=30, decoder=decoder, **kw))
            assert dec.error is None and len(dec.frames) == 4, (decoder, dec.error)
    assert dec.error is None and any(str(hostile) in c for c in calls)
    assert not list(tmp_path.glob("PWNED*")) and not list(REPO.glob("PWNED*"))


def test_no_shell_anywhere_in_the_product():
    for path in sorted((REPO / "pipeline").rglob("*.py")) + sorted((REPO / "stages").rglob("*.py")):
        text = path.read_text()
        for banned in ("shell=True", "os.system(", "os.popen(", "getoutput("):
            assert banned not in text, f"{path.relative_to(REPO)} uses {banned}"


def test_the_fifo_is_refused_at_once_by_every_decoder(bad_corpus):
    """Nobody opens the FIFO (an open would block until a writer comes): it fails in preflight,
    long before the timeout, with the same reason for both decoders."""
    fifo = bad_corpus.root / "must_fail" / "hang.avi"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    for decoder in DECODERS:
        t0 = time.monotonic()
        dec = decode_video(fifo, DecodeJob(4, 32, 37, timeout=60, decoder=decoder))
        assert dec.error == "not a regular file: it is a FIFO (named pipe)", (decoder, dec.error)
        assert time.monotonic() - t0 < 5, decoder
