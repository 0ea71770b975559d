"""Dense decoding leaves non-reference frames no row needs undecoded (skip_frame NONREF) where the
timestamps number the frames, and stays exact: every row's frames, indices, times and spans
equal those of a decode of every frame (skip=False), on H.264 with B-frames, an H.264 file
whose timestamps start late, MPEG-4 Part 2 AVI (UCF101's), AVI with dropped frames, and a
variable frame rate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import synth

from stages.extract.decode import pyav
from stages.extract.decode.common import ClipSpec, DecodeJob

SIZE = 32


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """name -> path: 10 s of a changing picture at 25 fps in H.264 (B-frames: x264's default) and
    MPEG-4 AVI with B-frames, the H.264 file with its timestamps from 1.5 s, a VFR clip, and an AVI
    whose dropped frames are empty chunks (its pts count them)."""
    root = tmp_path_factory.mktemp("dense-skip")
    common = dict(scenes=["plasma", "box", "rings"], fps=25, size=(160, 120), scene_frames=[90, 80, 81])
    synth.make_clips(
        [
            dict(path=root / "h264.mp4", codec="libx264", seed="skip/h264", **common),
            dict(path=root / "mpeg4.avi", codec="mpeg4", bframes=2, seed="skip/mpeg4", **common),
        ]
    )
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(root / "h264.mp4"), "-c", "copy", "-output_ts_offset", "1.5",
         str(root / "late.mp4")],
        check=True,
    )  # fmt: skip
    synth.make_vfr_clip(root / "vfr.mkv", fast_after=30, frames=120)
    synth.make_dropped_frames_avi(root / "dropped.avi", drop=(30, 44), frames=120)
    return {p.name: p for p in root.iterdir()}


def rows(path: Path, job: DecodeJob, skip: bool) -> dict[str, np.ndarray]:
    """Every chunk of the dense decode of `path`, concatenated: frames, indices, timestamps, spans,
    and the last chunk's num_frames and duration."""
    out: dict[str, list] = {"frames": [], "indices": [], "timestamps": [], "spans": []}
    end = {}
    for chunk in pyav.decode_dense_pyav(path, job, lambda: np.empty(job.shape(), np.uint8), skip=skip):
        for name in out:
            out[name].append(np.array(getattr(chunk, name)))
        if chunk.last:
            end = {"num_frames": np.array(chunk.num_frames), "duration": np.array(chunk.duration)}
    return {name: np.concatenate([a for a in parts if a.size] or [np.empty(0)]) for name, parts in out.items()} | end


JOBS = {
    "fps1": DecodeJob(4, SIZE, 37, fps=1.0, dense=True),
    "fps3": DecodeJob(4, SIZE, 37, fps=3.0, dense=True),
    "stride10-clips": DecodeJob(4, SIZE, 37, stride=10, clip=ClipSpec(4, 15.0), dense=True),
}


@pytest.mark.parametrize("name", ["h264.mp4", "late.mp4", "mpeg4.avi", "vfr.mkv", "dropped.avi"])
@pytest.mark.parametrize("job", JOBS, ids=list(JOBS))
def test_skipping_non_reference_frames_gives_every_row_a_full_decode_gives(videos, name, job):
    skipped, full = rows(videos[name], JOBS[job], skip=True), rows(videos[name], JOBS[job], skip=False)
    assert len(full["timestamps"]) >= 3
    for key in full:
        np.testing.assert_array_equal(skipped[key], full[key], err_msg=f"{name} {job}: {key}")


def test_frames_are_numbered_by_timestamp_only_where_that_numbers_them_as_a_full_decode(videos):
    """H.264 (from 0 or from 1.5 s): its count; an AVI (pts count chunks, a frame late behind
    B-frames) and a variable frame rate: None, every frame decoded."""
    frames = lambda name, fps: pyav.timestamp_frames(videos[name], fps, float("inf"), 60.0)
    assert frames("h264.mp4", 25.0) == frames("late.mp4", 25.0) == 251
    assert frames("mpeg4.avi", 25.0) is None and frames("dropped.avi", 25.0) is None
    vfr_rate = pyav.stream_info(pyav.Input(videos["vfr.mkv"], float("inf"), 60.0)).fps
    assert frames("vfr.mkv", vfr_rate) is None


def test_fps1_on_h264_leaves_its_non_reference_frames_undecoded(videos, monkeypatch):
    """The frames out of the decoder: at most three quarters of H.264's 251 (x264's non-reference
    B-frames are not decoded; its reference ones, B-frames among them, are), all 251 of the AVI's."""
    counted = {"frames": 0}
    decoded_frames = pyav.decoded_frames

    def counting(*args, **kw):
        for frame in decoded_frames(*args, **kw):
            counted["frames"] += 1
            yield frame

    monkeypatch.setattr(pyav, "decoded_frames", counting)
    for name, most in (("h264.mp4", 251 * 3 // 4), ("mpeg4.avi", 251)):
        counted["frames"] = 0
        assert len(rows(videos[name], JOBS["fps1"], skip=True)["timestamps"]) == 11
        assert counted["frames"] <= most if name == "h264.mp4" else counted["frames"] == most, (name, counted)
