"""Sampling indices, and that both decoders return exactly the frames asked for, or a reason at once.

What holds for every decoder runs once per decoder (the `decoder` fixture); the ffmpeg-cli
decoder's own machinery (argument lists, probing with or without ffprobe) is tested on its
own. The PyAV decoder against the CLI, file by file, is in test_decode_pyav.py.
"""

import dataclasses
import os
import socket
import subprocess
import time

import numpy as np
import pytest
import synth
from helpers import skip_where_ffmpeg_crashes_on

from stages.extract.config import DECODERS, ExtractConfig
from stages.extract.decode import DecodeJob, decode_video
from stages.extract.decode.common import (
    ClipSpec,
    DecodeError,
    clip_indices,
    fps_indices,
    preflight,
    read_avi_header,
    uniform_indices,
)
from stages.extract.decode.ffmpeg_cli import build_decode_args, decode_video_cli, first_count, probe
from stages.extract.decode.processes import (
    DecoderProcesses,
    SoundRequest,
    VideoRequest,
    decode_request,
    encode_request,
)
from stages.extract.extractors import family_for
from stages.extract.inputs import TIMES_RESIZE, TIMES_SIZE, decode_job


@pytest.fixture(params=DECODERS)
def decoder(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def numbered_clip(tmp_path_factory):
    """48 frames at 12 fps, 96x64; each frame's brightness encodes its index (lossless)."""
    path = tmp_path_factory.mktemp("clip") / "numbered.mkv"
    # geq paints every pixel with 5*N (N = frame number), so a decoded frame names itself.
    subprocess.run(
        [
            synth.require_ffmpeg(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=black:size=96x64:rate=12:duration=4",
            "-vf",
            "format=gray,geq=lum='5*N',format=yuv444p",
            "-c:v",
            "ffv1",
            str(path),
        ],
        check=True,
    )
    return path


def test_uniform_indices_are_segment_centres():
    assert uniform_indices(175, 16).tolist() == [int((i + 0.5) * 175 / 16) for i in range(16)]
    assert uniform_indices(16, 16).tolist() == list(range(16))
    idx = uniform_indices(1000, 7)
    assert (np.diff(idx) > 0).all() and idx[0] >= 0 and idx[-1] < 1000


def test_short_video_gives_all_its_frames():
    assert uniform_indices(5, 16).tolist() == [0, 1, 2, 3, 4]
    assert uniform_indices(1, 4).tolist() == [0]


def test_fps_indices_follow_time_and_cap():
    assert fps_indices(175, 25.0, 2.0, 100).tolist() == [0, 12, 25, 37, 50, 62, 75, 87, 100, 112, 125, 137, 150, 162]
    assert len(fps_indices(175, 25.0, 2.0, 5)) == 5
    assert fps_indices(10, 5.0, 25.0, 100).tolist() == list(range(10))  # faster than the source: every frame once


def test_probe_reads_count_rate_and_size(numbered_clip):
    info = probe(numbered_clip)
    assert (info.frames, info.width, info.height) == (48, 96, 64)
    assert info.fps == pytest.approx(12.0)


def test_decode_returns_the_sampled_frames_in_order(numbered_clip, decoder):
    dec = decode_video(numbered_clip, DecodeJob(6, 32, 48, decoder=decoder))
    assert dec.error is None
    assert dec.frames.shape == (6, 32, 32, 3) and dec.frames.dtype == np.uint8
    assert dec.indices.tolist() == uniform_indices(48, 6).tolist()
    # the brightness of each returned frame is 5 * its index in the source
    brightness = dec.frames.reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(brightness, 5 * dec.indices, atol=2.5)
    np.testing.assert_allclose(dec.timestamps, dec.indices / 12.0, atol=1e-3)


def test_decode_pads_nothing_and_reports_true_length_for_short_video(numbered_clip, decoder):
    dec = decode_video(numbered_clip, DecodeJob(100, 32, 48, decoder=decoder))
    assert len(dec.frames) == 48 and dec.indices.tolist() == list(range(48))


def test_a_clip_is_k_frames_at_the_weights_rate_centred_on_its_step_and_clamped():
    # 30 fps video, weights at 15 fps: every 2nd frame; frame K // 2 of a clip is its step
    assert clip_indices(np.array([10]), 100, 30.0, ClipSpec(4, 15.0)).tolist() == [[6, 8, 10, 12]]
    assert clip_indices(np.array([1, 98]), 100, 30.0, ClipSpec(4, 15.0)).tolist() == [[0, 0, 1, 3], [94, 96, 98, 99]]
    # never finer than every frame, and halves round up (25 fps / 15 = 1.67 -> 2; 22.5 / 15 -> 2)
    assert [ClipSpec(16, 15.0).stride(f) for f in (10.0, 25.0, 22.5, 30.0, 60.0)] == [1, 2, 2, 2, 4]
    assert ClipSpec(16, 7.5).stride(30.0) == 4


def clip_brightness(frames: np.ndarray) -> np.ndarray:
    """(k, K, S, S, 3) -> (k, K) mean brightness: 5 x the frame's index in numbered_clip."""
    return frames.reshape(*frames.shape[:2], -1).mean(axis=2)


@pytest.mark.parametrize("fps", [None, 3.0], ids=["uniform", "fps3"])
def test_clips_hold_every_frame_of_every_clip_in_place(numbered_clip, decoder, fps):
    """12 fps source, weights at 6 fps: stride 2; the clips of neighbouring steps overlap (a frame
    two clips share is decoded once, stored in both), the first and last are clamped."""
    clip = ClipSpec(6, 6.0)
    out = np.zeros((4, 6, 32, 32, 3), np.uint8)  # a slot: T steps of K frames
    dec = decode_video(numbered_clip, DecodeJob(4, 32, 48, fps=fps, clip=clip, decoder=decoder), out=out)
    assert dec.error is None and dec.frames.shape == (4, 6, 32, 32, 3) and np.shares_memory(dec.frames, out)
    steps = fps_indices(48, 12.0, fps, 4) if fps else uniform_indices(48, 4)
    assert dec.indices.tolist() == clip_indices(steps, 48, 12.0, clip).tolist()
    assert dec.indices[0, 0] == 0 and dec.indices[:, 3].tolist() == steps.tolist()
    np.testing.assert_allclose(clip_brightness(dec.frames), 5 * dec.indices, atol=2.5)
    np.testing.assert_allclose(dec.timestamps, steps / 12.0, atol=1e-3)  # the steps' times


def test_decoder_processes_give_the_same_clips(numbered_clip):
    clip = ClipSpec(4, 4.0)  # stride 3
    here = decode_video(numbered_clip, DecodeJob(3, 32, (40, 56), clip=clip))
    with DecoderProcesses(1) as procs:
        there = decode_video(numbered_clip, DecodeJob(3, 32, (40, 56), clip=clip), procs=procs)
    assert there.error is None and there.frames.shape == (3, 4, 32, 32, 3)
    np.testing.assert_array_equal(there.frames, here.frames)
    np.testing.assert_array_equal(there.indices, here.indices)
    np.testing.assert_array_equal(there.timestamps, here.timestamps)


def test_a_fixed_resize_scales_to_exactly_that_size(numbered_clip, decoder):
    """(H, W) = (32, 80) from 96x64, then the 32 px centre crop: the whole height is kept."""
    dec = decode_video(numbered_clip, DecodeJob(2, 32, (32, 80), decoder=decoder))
    assert dec.error is None and dec.frames.shape == (2, 32, 32, 3)
    args = build_decode_args(numbered_clip, np.array([1]), DecodeJob(1, 32, (32, 80)))
    assert "scale=flags=bilinear:h=32:w=80" in args[args.index("-filter_complex") + 1]


def test_decode_args_are_an_argument_list_with_one_thread(numbered_clip):
    args = build_decode_args(numbered_clip, np.array([1, 5]), DecodeJob(2, 32, 48))
    assert isinstance(args, list) and all(isinstance(a, str) for a in args)
    assert args[args.index("-threads") + 1] == "1"
    assert str(numbered_clip) in args


def test_portrait_video_is_scaled_on_its_shorter_side(tmp_path, decoder):
    path = tmp_path / "portrait.avi"
    subprocess.run(
        [
            synth.require_ffmpeg(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x112:rate=10:duration=1",
            "-c:v",
            "mpeg4",
            str(path),
        ],
        check=True,
    )
    dec = decode_video(path, DecodeJob(3, 32, 40, decoder=decoder))
    assert dec.error is None and dec.frames.shape == (3, 32, 32, 3)


def test_an_unknown_decoder_is_a_programming_error(numbered_clip):
    with pytest.raises(ValueError, match="unknown decoder 'opencv'; choose one of pyav, ffmpeg-cli"):
        decode_video(numbered_clip, DecodeJob(4, 32, 40, decoder="opencv"))


def test_garbage_file_is_a_reason_not_an_exception(tmp_path, decoder):
    bad = tmp_path / "bad.avi"
    bad.write_text("this is not a video")
    dec = decode_video(bad, DecodeJob(4, 32, 40, decoder=decoder))
    assert dec.frames is None and dec.error.startswith("not a readable video")


# ---------------------------------------------------------------- fast paths and ffprobe-less machines
def test_avi_header_gives_exactly_what_ffprobe_says(bad_corpus):
    checked = 0
    for rel in bad_corpus.expected:
        path = bad_corpus.root / rel
        header = read_avi_header(path)  # must not block on the FIFO (hang.avi)
        if header is None:
            continue
        info = probe(path)
        assert (header.frames, header.width, header.height) == (info.frames, info.width, info.height), rel
        assert header.fps == pytest.approx(info.fps), rel
        checked += 1
    assert checked >= 8  # the ordinary AVIs, the truncated one (its header still says 40) included
    for rel in (
        "must_fail/hang.avi",
        "must_fail/empty.avi",
        "must_fail/not_a_video.avi",
        "must_fail/audio_only.avi",
        "must_succeed/really_mp4.avi",
        "must_succeed/vfr.mkv",
    ):
        assert read_avi_header(bad_corpus.root / rel) is None, rel


@pytest.fixture(params=["system", "imageio-ffmpeg"])
def no_ffprobe(request, tmp_path, monkeypatch):
    """PATH with ffmpeg only: the system's, and imageio-ffmpeg's static build (another
    ffmpeg major version, as on the GPU machines), with no ffprobe beside it."""
    import shutil

    if request.param == "system":
        binary = shutil.which("ffmpeg")
    else:
        binary = pytest.importorskip("imageio_ffmpeg").get_ffmpeg_exe()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").symlink_to(binary)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("FFPROBE_BINARY", raising=False)
    monkeypatch.delenv("FFMPEG_BINARY", raising=False)


def test_probe_and_decode_work_without_ffprobe(numbered_clip, bad_corpus, no_ffprobe, tmp_path):
    from pipeline.ffmpeg_tools import find_binary

    assert find_binary("ffprobe") is None
    info = probe(numbered_clip)  # Matroska: no frame count in the header, packets are counted
    assert (info.frames, info.width, info.height) == (48, 96, 64) and info.fps == pytest.approx(12.0)
    dec = decode_video_cli(numbered_clip, DecodeJob(6, 32, 48))
    assert dec.error is None and dec.indices.tolist() == uniform_indices(48, 6).tolist()
    np.testing.assert_allclose(dec.frames.reshape(6, -1).mean(axis=1), 5 * dec.indices, atol=2.5)
    assert probe(bad_corpus.root / "must_fail/truncated.avi").frames == 40  # the header's count, as ffprobe's
    corpus = bad_corpus.root / "must_fail"
    assert decode_video_cli(corpus / "truncated.avi", DecodeJob(16, 32, 40)).error.startswith("truncated")
    assert decode_video_cli(corpus / "audio_only.avi", DecodeJob(4, 32, 40)).error.startswith("no video stream")
    bad = tmp_path / "bad.avi"
    bad.write_text("this is not a video")
    assert decode_video_cli(bad, DecodeJob(4, 32, 40)).error.startswith("not a readable video")


def test_imageio_ffmpeg_is_found_when_ffmpeg_is_not_on_path(tmp_path, monkeypatch):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    from pipeline.ffmpeg_tools import find_binary

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FFMPEG_BINARY", raising=False)
    assert find_binary("ffmpeg") == imageio_ffmpeg.get_ffmpeg_exe()
    assert find_binary("ffprobe") is None


def test_frames_are_read_into_the_callers_buffer(numbered_clip, decoder):
    out = np.zeros((8, 32, 32, 3), np.uint8)
    dec = decode_video(numbered_clip, DecodeJob(6, 32, 48, decoder=decoder), out=out)
    assert dec.error is None and np.shares_memory(dec.frames, out) and dec.frames.shape == (6, 32, 32, 3)
    assert (out[6:] == 0).all()  # nothing past the frames asked for


def test_decode_args_stop_after_the_last_kept_frame(numbered_clip):
    args = build_decode_args(numbered_clip, np.array([1, 5, 9]), DecodeJob(3, 32, 48))
    assert args[args.index("-frames:v") + 1] == "3"
    default = build_decode_args(numbered_clip, np.array([1]), DecodeJob(1, 32, 48), threads=None)
    assert "-threads" not in default


# ---------------------------------------------------------------- MPEG-TS
def test_mpeg_ts_is_counted_and_starts_at_zero(tmp_path, decoder):
    """ffprobe lists an MPEG-TS stream twice (under its program too): the count is its first line."""
    path = tmp_path / "clip.ts"
    pattern = "testsrc2=size=96x64:rate=25:duration=3"
    subprocess.run(
        [synth.require_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", pattern, "-c:v", "mpeg4", str(path)], check=True
    )
    if decoder == "ffmpeg-cli":
        skip_where_ffmpeg_crashes_on(path)
    dec = decode_video(path, DecodeJob(8, 32, 40, decoder=decoder))
    assert dec.error is None and dec.num_frames == 75, dec.error
    assert dec.indices.tolist() == uniform_indices(75, 8).tolist()
    assert 0 <= dec.timestamps[0] < 1.0  # the file starts at 1.4 s; its start time is subtracted


def test_first_count_reads_the_first_line_ffprobe_prints():
    assert first_count(b"75\n\n75\n") == 75 and first_count(b"\n40\n") == 40
    assert first_count(b"") == -1 and first_count(b"N/A\n") == -1


# ---------------------------------------------------------------- files that are not videos, at once
@pytest.fixture
def not_regular_files(tmp_path):
    """reason -> a path that is no regular file: a FIFO with no writer, a character device, a socket."""
    fifo = tmp_path / "pipe.avi"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "socket.avi"))
    yield {
        "not a regular file: it is a FIFO (named pipe)": fifo,
        "not a regular file: it is a character device": "/dev/null",
        "not a regular file: it is a socket": tmp_path / "socket.avi",
    }
    sock.close()


def test_a_fifo_a_device_or_a_socket_fails_at_once(not_regular_files, decoder):
    """Neither decoder opens them (a FIFO with no writer would block whoever opens it): the
    reason comes from the shared preflight, long before the timeout."""
    for reason, path in not_regular_files.items():
        t0 = time.monotonic()
        dec = decode_video(path, DecodeJob(4, 32, 37, timeout=30, decoder=decoder))
        assert dec.error == reason and time.monotonic() - t0 < 5, (path, dec.error)
        assert decode_video(path, DecodeJob(4, 32, 37, fps=2.0, timeout=30, decoder=decoder)).error == reason
        with pytest.raises(DecodeError, match="not a regular file"):
            preflight(path)
        assert read_avi_header(path) is None


# ---------------------------------------------------------------- timeouts
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """10 s of 640x360 mpeg4 (480 KB): about 0.1 s of PyAV decoding, 0.5 s with an ffmpeg process."""
    path = tmp_path_factory.mktemp("long") / "long.avi"
    pattern = "testsrc2=size=640x360:rate=25:duration=10"
    subprocess.run(
        [synth.require_ffmpeg(), "-v", "error", "-f", "lavfi", "-i", pattern, "-c:v", "mpeg4", str(path)], check=True
    )
    return path


def test_a_decode_that_outlasts_the_timeout_ends_there(long_clip, decoder):
    """pyav checks the deadline for every packet (and every read); ffmpeg-cli kills its process."""
    t0 = time.monotonic()
    dec = decode_video(long_clip, DecodeJob(8, 32, 37, timeout=0.01, decoder=decoder))
    assert dec.error is not None and dec.error.startswith("timeout after 0.01 s ("), dec.error
    assert time.monotonic() - t0 < 5
    assert decode_video(long_clip, DecodeJob(8, 32, 37, timeout=30, decoder=decoder)).error is None


# ---------------------------------------------------------------- the job
def test_the_job_is_built_from_the_familys_preprocessing_and_the_config():
    """A clip model's job: its crop, (H, W) and clip, the config's steps, timeout and decoder;
    a frame model's: its preprocessing, no clip; a sound family's: the picture decode that only
    gives the times. Frozen, and the same value after the JSON round trip a decoder process's request makes."""
    cfg = ExtractConfig(backbone="torchvision:r2plus1d_18", frames=4, fps=2.0, timeout=30, decoder="ffmpeg-cli")
    job = decode_job(family_for(cfg))
    assert job == DecodeJob(
        4, 112, (128, 171), fps=2.0, clip=ClipSpec(16, 15.0), interpolation="rgb24:bilinear", timeout=30,
        decoder="ffmpeg-cli",
    )  # fmt: skip
    sent = decode_request(encode_request(VideoRequest("/v.avi", job)))
    assert sent == VideoRequest("/v.avi", job) and job.shape() == (4, 16, 112, 112, 3)
    assert decode_request(encode_request(SoundRequest("/v.avi", 30.0))) == SoundRequest("/v.avi", 30.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.frames = 8
    resnet = family_for(ExtractConfig(image_size=64, frames=8))
    pre, frames = resnet.preprocessing(), decode_job(resnet)
    assert (frames.size, frames.resize, frames.interpolation, frames.clip) == (64, pre.resize, "bilinear", None)
    assert frames.shape() == (8, 64, 64, 3) and frames.decoder == "pyav" and frames.fps is None
    sound = decode_job(family_for(ExtractConfig(modality="audio", frames=8)))
    assert (sound.frames, sound.size, sound.resize, sound.clip) == (8, TIMES_SIZE, TIMES_RESIZE, None)


def test_a_job_the_decoders_cannot_do_is_refused_before_any_video():
    with pytest.raises(ValueError, match="no FFmpeg scaler for the interpolation 'hamming'"):
        DecodeJob(4, 32, 40, interpolation="hamming")
    assert DecodeJob(4, 32, [40, 56]).resize == (40, 56)  # an (H, W) read back from JSON
