"""PyAV in decoder processes (decode/processes.py), as stage one runs the default decoder.

The processes must give exactly what decode_video_pyav gives in this process (frames,
indices, timestamps, reasons) for good, bad and odd files, uniform and FPS= sampling; a
process that hangs or dies costs its video only, and is replaced; none outlives the pool;
and a decoder process never imports torch (sixteen of them would each load it).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import synth

import stages.extract.decode.processes as decode_procs
from stages.extract.decode.common import ClipSpec, DecodeJob
from stages.extract.decode.processes import DecoderProcesses
from stages.extract.decode.pyav import decode_video_pyav

T, SIZE, RESIZE = 8, 32, 37
JOB = DecodeJob(T, SIZE, RESIZE)
ROOT = Path(__file__).resolve().parents[2]


def assert_same(a, b, what: str) -> None:
    assert a.error == b.error, f"{what}: {a.error!r} vs {b.error!r}"
    assert a.num_frames == b.num_frames, what
    if a.error is None:
        np.testing.assert_array_equal(a.indices, b.indices, err_msg=what)
        np.testing.assert_array_equal(a.timestamps, b.timestamps, err_msg=what)
        assert b.indices.dtype == np.int32 and b.timestamps.dtype == np.float32, what
        np.testing.assert_array_equal(a.frames, b.frames, err_msg=what)


@pytest.mark.parametrize("fps", [None, 5.0], ids=["uniform", "fps5"])
def test_processes_give_what_this_process_gives(bad_corpus, ucf_tree, fps):
    paths = sorted(bad_corpus.root.rglob("*.*")) + sorted(ucf_tree.rglob("*.avi"))[:4]
    job = DecodeJob(T, SIZE, RESIZE, fps=fps, timeout=3)
    with DecoderProcesses(2) as procs, ThreadPoolExecutor(2) as pool:
        buffers = [np.empty((T, SIZE, SIZE, 3), np.uint8) for _ in paths]
        got = list(pool.map(lambda p, out: procs.decode(p, job, out=out), paths, buffers))
        assert len(procs.all) <= 2
    for path, out, dec in zip(paths, buffers, got):
        assert_same(decode_video_pyav(path, job), dec, path.name)
        if dec.error is None:
            assert np.shares_memory(dec.frames, out), "the frames must land in the caller's buffer"


def test_a_relative_path_is_the_callers(ucf_tree, monkeypatch):
    clip = sorted(ucf_tree.rglob("*.avi"))[0]
    monkeypatch.chdir(clip.parent)
    with DecoderProcesses(1) as procs:
        dec = procs.decode(Path(clip.name), JOB)
    assert dec.error is None, dec.error


def test_a_process_that_stops_answering_is_killed_and_replaced(ucf_tree, monkeypatch):
    monkeypatch.setattr(decode_procs, "GRACE_S", 0.5)
    clip = sorted(ucf_tree.rglob("*.avi"))[0]
    with DecoderProcesses(1) as procs:
        assert procs.decode(clip, JOB).error is None
        stuck = procs.all[0]
        os.kill(stuck.proc.pid, signal.SIGSTOP)  # as a read hung in the kernel would
        t0 = time.monotonic()
        dec = procs.decode(clip, DecodeJob(T, SIZE, RESIZE, timeout=0.5))
        assert time.monotonic() - t0 < 5
        assert dec.error == "timeout after 0.5 s (PyAV did not finish decoding; its process was killed)"
        assert stuck.proc.poll() is not None and stuck not in procs.all
        again = procs.decode(clip, JOB)
        assert again.error is None and procs.all and procs.all[0] is not stuck


def test_a_process_that_dies_fails_its_video_only(ucf_tree):
    clips = sorted(ucf_tree.rglob("*.avi"))[:2]
    with DecoderProcesses(1) as procs:
        assert procs.decode(clips[0], JOB).error is None
        procs.all[0].proc.kill()  # as a crash inside libav would
        procs.all[0].proc.wait()
        dec = procs.decode(clips[1], JOB)
        assert dec.error == "the PyAV decoder process died on this file (killed by signal 9)"
        assert_same(decode_video_pyav(clips[1], JOB), procs.decode(clips[1], JOB), "after")


def test_no_process_outlives_the_pool_and_cpu_is_counted(ucf_tree):
    clips = sorted(ucf_tree.rglob("*.avi"))[:6]
    with DecoderProcesses(3) as procs, ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda p: procs.decode(p, JOB), clips))
        children = [c.proc for c in procs.all]
        assert 1 <= len(children) <= 3
        assert procs.cpu_seconds() > 0
    assert all(p.poll() is not None for p in children)


def test_a_decoder_process_does_not_import_torch():
    """What a decoder process runs (its requests end at once here), then whether torch was imported."""
    code = decode_procs.CHILD + "; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, input="")
    assert out.stdout.strip() == "False"


def test_where_no_process_can_start_it_decodes_in_this_process_and_says_so(ucf_tree, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decode_procs.subprocess, "Popen", refuse)
    clip = sorted(ucf_tree.rglob("*.avi"))[0]
    with DecoderProcesses(2) as procs:
        dec = procs.decode(clip, JOB)
        again = procs.decode(clip, JOB)
    assert_same(decode_video_pyav(clip, JOB), dec, clip.name)
    assert again.error is None and not procs.all
    warned = [r.getMessage() for r in caplog.records if "cannot start a PyAV decoder process" in r.getMessage()]
    assert len(warned) == 1 and "Permission denied" in warned[0], warned


def test_the_job_reaches_the_process_as_it_is(ucf_tree):
    """Every field of the job counts in the process as here: FPS= steps, a clip, an (H, W)
    resize, the model's filter (bicubic, whose frames are not the bilinear ones)."""
    clip = sorted(ucf_tree.rglob("*.avi"))[0]
    job = DecodeJob(3, 32, (40, 56), fps=4.0, clip=ClipSpec(3, 5.0), interpolation="bicubic", timeout=30)
    with DecoderProcesses(1) as procs:
        there = procs.decode(clip, job)
        assert procs.all, "decoded in a process"
    here = decode_video_pyav(clip, job)
    assert_same(here, there, clip.name)
    assert there.frames.shape == (3, 3, 32, 32, 3)
    bilinear = decode_video_pyav(clip, dataclasses.replace(job, interpolation="bilinear"))
    assert not np.array_equal(bilinear.frames, there.frames)


def test_a_decoder_process_samples_an_avi_whose_header_counts_dropped_frames(tmp_path):
    """Its header says 95 frames, 90 decode: the process samples the 90, as this process does."""
    path = synth.make_dropped_frames_avi(tmp_path / "drops.avi")
    job = DecodeJob(16, SIZE, RESIZE)
    with DecoderProcesses(1) as procs:
        dec = procs.decode(path, job, out=np.empty(job.shape(), np.uint8))
    assert dec.error is None and dec.num_frames == 90, dec.error
    assert_same(decode_video_pyav(path, job), dec, path.name)
