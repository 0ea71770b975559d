"""Dense feature sets (FRAMES=all, issue 28's write side): the options, the identity, the rows
a video gives, the ragged shards, memory flat in the video's length.

Shards are read with h5py directly: the readers are changed elsewhere at the same time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ffmpeg_crops, reference_features

from pipeline.errors import ConfigError
from stages.extract import extract_features
from stages.extract import plan as plan_module
from stages.extract.config import ExtractConfig
from stages.extract.decode.common import Chunk, ChunkWriter, ClipSpec, DecodeJob, DenseSteps
from stages.extract.extractors import family_for
from stages.extract.plan import make_plan


@pytest.mark.parametrize(
    "settings, names",
    [
        (dict(frames="all"), ("--fps", "--stride", "neither")),
        (dict(frames="all", fps=1.0, stride=4), ("--fps", "--stride", "both")),
        (dict(stride=4), ("--stride", "FRAMES=all")),
        (dict(frames="every"), ("--frames", "'all'")),
        (dict(frames="all", stride=0), ("--stride",)),
        (dict(frames="all", fps=1.0, shard_rows=0), ("--shard-rows",)),
        (dict(frames="all", fps=1.0, decoder="ffmpeg-cli"), ("--decoder pyav", "DECODER=ffmpeg-cli")),
    ],
)
def test_dense_options_that_do_not_fit_are_config_errors_naming_them(settings, names):
    with pytest.raises(ConfigError) as e:
        ExtractConfig(**settings)
    for name in names:
        assert name in str(e.value)


def test_the_cli_takes_frames_all_and_exits_2_naming_the_missing_options(tmp_path):
    from click.testing import CliRunner

    from stages.cli import main

    result = CliRunner().invoke(main, ["features", "--frames", "all", "--features-root", str(tmp_path)])
    assert result.exit_code == 2
    assert "--stride" in result.output and "--fps" in result.output


def test_a_dense_set_says_all_and_its_rate_or_stride_in_its_id_and_keeps_fixed_ids_apart(sound_tree, tmp_path):
    tree, _ = sound_tree
    base = dict(dataset="ucf101", data_dir=tree, features_root=tmp_path, device="cpu", image_size=64)
    base |= dict(weights="random", precision="fp32")
    ident = lambda **kw: make_plan(ExtractConfig(**(base | kw)), download=False).identity
    per_second = ident(frames="all", fps=1.0)
    assert per_second.id.startswith("resnet50-random-all-64px-1fps-")
    assert per_second.sampling == {"mode": "dense", "fps": 1.0}
    strided = ident(frames="all", stride=4)
    assert strided.id.startswith("resnet50-random-all-64px-s4-") and strided.sampling == {"mode": "dense", "stride": 4}
    assert ident(fps=1.0).id.startswith("resnet50-random-t16-64px-1fps-")
    audio = ident(frames="all", fps=2.0, modality="audio")
    assert audio.id.startswith("audio-logmel-all-2fps-")


# ---------------------------------------------------------------- footage
def lavfi_video(path: Path, fps: int, seconds: float, colour: str) -> Path:
    """A changing picture (the game of life: every second differs from the last), 64x48: .avi as
    UCF101's MPEG-4 with B-frames, .mp4 H.264."""
    codec = ["-c:v", "mpeg4", "-bf", "2"] if path.suffix == ".avi" else ["-c:v", "libx264"]
    source = f"life=s=64x48:mold=10:r={fps}:ratio=0.3:death_color={colour}:life_color=#00ff00,format=yuv420p"
    subprocess.run(
        ["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", source, "-t", str(seconds), *codec, str(path)], check=True
    )
    return path


def zero_second_avi(path: Path) -> Path:
    """An AVI with a video stream and no frame in it."""
    subprocess.run(
        ["ffmpeg", "-y", "-v", "error", "-f", "lavfi", "-i", "color=s=64x48:r=25", "-frames:v", "0", "-c:v", "mpeg4",
         str(path)],
        check=True,
    )  # fmt: skip
    return path


def understated_avi(source: Path, path: Path) -> Path:
    """A copy of an AVI whose headers claim a third of its frames (a container that misreports
    its length): the stream header's dwLength and the main header's dwTotalFrames."""
    data = bytearray(source.read_bytes())
    for tag, at in ((b"strh", 32), (b"avih", 16)):  # offsets in the chunk's body
        body = data.index(tag) + 8
        frames = int.from_bytes(data[body + at : body + at + 4], "little")
        data[body + at : body + at + 4] = (frames // 3).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


FOOTAGE = (("life25.avi", 25, 8.4, "#C83232"), ("life30.mp4", 30, 7.6, "#3232C8"))


def with_sound(path: Path, out: Path) -> Path:
    """A copy of a video with a 440 Hz tone as its sound track (AAC)."""
    subprocess.run(
        ["ffmpeg", "-y", "-v", "error", "-i", str(path), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
         "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(out)],
        check=True,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """(list.csv, each listed video's true duration): the two changing clips, a copy of the .avi
    whose header understates it, and a 0-second video."""
    root = tmp_path_factory.mktemp("dense-footage")
    durations = {}
    for name, fps, seconds, colour in FOOTAGE:
        lavfi_video(root / name, fps, seconds, colour)
        durations[name] = round(seconds * fps) / fps
    understated_avi(root / "life25.avi", root / "understated.avi")
    durations["understated.avi"] = durations["life25.avi"]
    with_sound(root / "life30.mp4", root / "sound30.mp4")
    durations["sound30.mp4"] = durations["life30.mp4"]
    zero_second_avi(root / "zero.avi")
    (root / "list.csv").write_text("path\n" + "".join(f"{n}\n" for n in [*durations, "zero.avi"]))
    return root / "list.csv", durations


def shard_arrays(set_dir: Path) -> list[dict]:
    """Every shard of a set, read with h5py: {name: array} plus its attrs under "attrs"."""
    manifest = json.loads((set_dir / "manifest.json").read_text())
    shards = []
    for entry in manifest["shards"]:
        with h5py.File(set_dir / entry["file"], "r") as f:
            arrays = {k: (f[k].asstr()[()] if f[k].dtype == object else f[k][()]) for k in f}
            shards.append(arrays | {"attrs": dict(f.attrs)})
    return shards


def rows_by_video(set_dir: Path) -> dict[str, dict]:
    """Each stored video's rows: features (T_i, D), frame_indices, timestamps, spans, duration, fps."""
    out = {}
    for s in shard_arrays(set_dir):
        ends = np.cumsum(s["lengths"])
        for k, vid in enumerate(s["video_ids"]):
            rows = slice(int(ends[k] - s["lengths"][k]), int(ends[k]))
            out[vid] = {name: s[name][rows] for name in ("features", "frame_indices", "timestamps", "spans")}
            out[vid] |= {"duration": float(s["durations"][k]), "fps": float(s["video_fps"][k])}
    return out


def dense_cfg(csv: Path, root: Path, **kw) -> ExtractConfig:
    """FRAMES=all on the csv set, fp32 on the CPU, two decoders; kw overrides."""
    base = dict(dataset="csv", data_dir=csv, features_root=root, device="cpu", precision="fp32", frames="all")
    return ExtractConfig(**(base | dict(workers=2) | kw))


@pytest.fixture(scope="module")
def per_second(footage, weights_file, tmp_path_factory):
    """A dense set at FPS=1 of the footage: (set dir, summary, rows by video)."""
    csv, _ = footage
    cfg = dense_cfg(csv, tmp_path_factory.mktemp("dense-store"), weights=str(weights_file), image_size=SIZE, fps=1.0)
    summary = extract_features(cfg, quiet=True)
    return summary.set_dir, summary, rows_by_video(summary.set_dir)


SIZE = 32


def test_fps1_stores_a_row_per_second_spanning_the_whole_video(footage, per_second):
    _, durations = footage
    set_dir, _, videos = per_second
    assert sorted(videos) == sorted(durations)  # the 0-second video is not stored
    for vid, duration in durations.items():
        v = videos[vid]
        assert abs(len(v["features"]) - round(duration)) <= 1, (vid, len(v["features"]), duration)
        spans = v["spans"]
        np.testing.assert_allclose(spans[:, 0], np.arange(len(spans)), atol=1e-6)  # 1 s apart, from 0
        np.testing.assert_allclose(spans[:-1, 1], spans[1:, 0], atol=1e-6)  # no gap, no overlap
        assert spans[-1, 1] == pytest.approx(duration, abs=1e-3) and v["duration"] == pytest.approx(duration, abs=1e-3)
        # the decoder's timestamps: an AVI with B-frames stamps its frames a frame late, as the CLI does
        np.testing.assert_allclose(v["timestamps"], v["frame_indices"] / v["fps"], atol=1.01 / v["fps"])
        np.testing.assert_array_equal(v["frame_indices"], np.arange(len(spans)) * round(v["fps"]))  # frame k x fps
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["frames"] is None and manifest["layout"] == "ragged"
    assert all(s["attrs"]["layout"] == "ragged" for s in shard_arrays(set_dir))


def test_a_video_whose_header_understates_it_gets_every_row_it_has(per_second):
    _, _, videos = per_second
    ours, true = videos["understated.avi"], videos["life25.avi"]
    assert len(ours["features"]) == len(true["features"]) == 9  # 210 frames at 25/s: rows at 0, 1, ..., 8 s
    np.testing.assert_array_equal(ours["features"], true["features"])


def test_a_zero_second_video_is_a_failure_with_its_reason(per_second):
    set_dir, summary, _ = per_second
    failures = [json.loads(line) for line in (set_dir / "failures.jsonl").read_text().splitlines()]
    assert [f["video_id"] for f in failures] == ["zero.avi"]
    assert "no decodable frames" in failures[0]["reason"] and "0 s" in failures[0]["reason"]
    assert summary.failed == 1 and summary.computed == 4


def test_each_row_is_resnet50_on_an_independent_decode_of_its_frame(footage, per_second, weights_file):
    """Every stored row against torchvision's ResNet-50 on the ffmpeg command's own decode of the
    frame the row records, scaled as ResNet-50's sets are, in both containers: the fixed-T
    sets' distance (test_extract.py)."""
    _, _, videos = per_second
    resize = family_for(ExtractConfig(image_size=SIZE)).preprocessing().resize
    assert isinstance(resize, int)
    for vid in ("life25.avi", "life30.mp4"):
        v = videos[vid]
        pictures = ffmpeg_crops(footage[0].parent / vid, v["frame_indices"], SIZE, resize)
        np.testing.assert_allclose(
            v["features"].astype(np.float32), reference_features(weights_file, pictures), rtol=5e-3, atol=5e-3
        )


def test_an_audio_set_has_the_rows_of_the_picture_set_of_the_same_videos(footage, per_second):
    """MODALITY=audio with the same FRAMES=all FPS= and decoder: row for row the picture set's
    frame indices, times and spans; the sound track where there is one (has_audio)."""
    csv, _ = footage
    set_dir, _, pictures = per_second
    audio = extract_features(dense_cfg(csv, set_dir.parents[1], modality="audio", fps=1.0), quiet=True)
    assert audio.set_dir.name.startswith("audio-logmel-all-1fps-")
    sounds = rows_by_video(audio.set_dir)
    assert sorted(sounds) == sorted(pictures)
    for vid, rows in sounds.items():
        assert rows["features"].shape == (len(pictures[vid]["features"]), 128), vid
        for name in ("frame_indices", "timestamps", "spans"):
            np.testing.assert_array_equal(rows[name], pictures[vid][name], err_msg=f"{vid}: {name}")
    (shard,) = shard_arrays(audio.set_dir)
    has_audio = dict(zip(shard["video_ids"], shard["has_audio"]))
    assert has_audio["sound30.mp4"] == 1 and has_audio["life30.mp4"] == 0
    tone, silent = sounds["sound30.mp4"]["features"], sounds["life30.mp4"]["features"]
    assert not np.array_equal(tone, silent)


def test_dense_steps_lay_out_clips_every_s_frames_from_the_frames_that_decode():
    """The plan alone (no model): STRIDE=S clips start at frames 0, S, 2S, ... and run K frames a
    clip stride apart, clamped to the last frame that decoded; FPS= clips are centred; chunks of
    job.frames steps."""
    buffers: list[np.ndarray] = []
    job = DecodeJob(3, 8, 8, clip=ClipSpec(4, 12.5), dense=True, stride=10)  # 25 fps: every 2nd frame

    def chunks(job: DecodeJob, frames: int) -> list[Chunk]:
        steps, writer = (
            DenseSteps(job, 25.0),
            ChunkWriter(job, lambda: buffers.append(np.zeros(job.shape(), np.uint8)) or buffers[-1]),
        )
        out = []
        for n in range(frames):
            if steps.wants(n):
                out += writer.put(steps.add(n, np.full((8, 8, 3), n % 256, np.uint8), n / 25))
        out += writer.put(steps.end(frames - 1, lambda: (np.full((8, 8, 3), 255, np.uint8), (frames - 1) / 25)))
        return out + [writer.chunk(last=True)]

    got = chunks(job, 33)
    assert [len(c.timestamps) for c in got] == [3, 1]  # steps at 0, 10, 20, 30: a chunk of 3, the last of 1
    indices = np.concatenate([c.indices for c in got if len(c.timestamps)])
    np.testing.assert_array_equal(indices, [[0, 2, 4, 6], [10, 12, 14, 16], [20, 22, 24, 26], [30, 32, 32, 32]])
    assert got[1].frames[0, 1, 0, 0, 0] == 32  # the clamped frames are the last one's picture
    np.testing.assert_allclose(np.concatenate([c.spans for c in got if len(c.timestamps)])[:, 0], [0, 0.4, 0.8, 1.2])
    centred = np.concatenate(
        [c.indices for c in chunks(DecodeJob(3, 8, 8, clip=ClipSpec(4, 12.5), dense=True, fps=1.0), 60)]
    )
    np.testing.assert_array_equal(centred, [[0, 0, 0, 2], [21, 23, 25, 27], [46, 48, 50, 52]])


@pytest.mark.slow
def test_stride_with_a_clip_model_stores_a_clip_of_k_frames_every_s_frames(footage, tmp_path):
    """STRIDE=S with a clip model: clip i is K frames a clip stride apart from frame i*S
    (ActionFormer's clips), clamped to the last frame; its time the centre frame's, its span from
    its first frame to after its last."""
    csv, _ = footage
    cfg = dense_cfg(csv, tmp_path, backbone="torchvision:r2plus1d_18", weights="random", image_size=32, stride=48)
    videos = rows_by_video(extract_features(cfg, quiet=True).set_dir)
    v = videos["life25.avi"]  # 210 frames at 25/s; R(2+1)D's clips: 16 frames at 15/s, every 2nd frame here
    starts = np.arange(0, 210, 48)
    np.testing.assert_array_equal(v["frame_indices"], np.minimum(starts[:, None] + 2 * np.arange(16), 209))
    assert v["features"].shape == (len(starts), 512) and np.isfinite(v["features"]).all()
    assert len(np.unique(v["features"], axis=0)) == len(starts)  # each clip its own
    times = v["frame_indices"] / 25
    # the decoder's timestamps (an AVI with B-frames stamps a frame late), within a frame
    np.testing.assert_allclose(v["timestamps"], times[:, 8], atol=1.01 / 25)
    np.testing.assert_allclose(v["spans"][:, 0], times[:, 0], atol=1.01 / 25)
    widths = v["spans"][:, 1] - v["spans"][:, 0]
    np.testing.assert_allclose(widths[:-1], 15 * 2 / 25 + 1 / 25, atol=1e-4)  # the first frame to after the 16th
    assert v["spans"][-1, 1] == pytest.approx(v["duration"])  # the last clip, clamped, ends with the video


# ---------------------------------------------------------------- memory
PEAK_RSS = """
import resource, sys
from stages.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    print("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""
# The decoder alone, as a decoder process runs it: every chunk of the video decoded and dropped; the
# largest resident size seen at a chunk (the imports' own peak, before decoding, left out).
DECODER_RSS = """
import sys
import numpy as np
from stages.extract.decode.common import DecodeJob
from stages.extract.decode.pyav import decode_dense_pyav
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4
job = DecodeJob(64, 224, 256, fps=1.0, dense=True)
out = np.empty(job.shape(), np.uint8)
print("peak", max(rss() for _ in decode_dense_pyav(sys.argv[1], job, lambda: out)), file=sys.stderr)
"""


def peak_rss(code: str, *args: str) -> int:
    """The peak RSS (KiB) of `code` run with `args` in a Python process of its own."""
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return int(run.stderr.rsplit("peak ", 1)[1].split()[0])


def peak_memory(video: Path, root: Path) -> tuple[int, int]:
    """(a run's peak RSS, the decoder's alone), KiB: `vidstore features` FRAMES=all FPS=1 on one
    video at 224 px through a small backbone, and its decode at the same settings."""
    csv = root / f"{video.stem}.csv"
    csv.write_text(f"path\n{video}\n")
    args = ["features", "--dataset", "csv", "--data-dir", str(csv), "--features-root", str(root / "store"),
            "--frames", "all", "--fps", "1", "--backbone", "torchvision:mobilenet_v3_small", "--weights", "random",
            "--workers", "1", "--device", "cpu"]  # fmt: skip
    return peak_rss(PEAK_RSS, *args), peak_rss(DECODER_RSS, str(video))


@pytest.mark.slow
def test_peak_memory_of_a_30_minute_video_is_within_1_3x_of_a_3_minute_one(tmp_path):
    """Chunks stream through the batcher: neither the run nor its decoder process holds a
    video's frames, so ten times the video costs the same memory (its rows, 1800 x 576 float16,
    are what grows)."""
    short = lavfi_video(tmp_path / "short.mp4", 25, 180, "#C83232")
    long = lavfi_video(tmp_path / "long.mp4", 25, 1800, "#C83232")
    (short_own, short_decoder), (long_own, long_decoder) = peak_memory(short, tmp_path), peak_memory(long, tmp_path)
    print(f"peak RSS KiB: 3 min {short_own} (decoder {short_decoder}), 30 min {long_own} (decoder {long_decoder})")
    assert long_own <= 1.3 * short_own and long_decoder <= 1.3 * short_decoder


# ---------------------------------------------------------------- shards, reuse
def test_dense_shards_end_before_shard_rows_rows_from_each_videos_header(footage, tmp_path):
    """Rows per video estimated from its header (the understated .avi claims a third of its
    frames, the 0-second one none), shards cut before SHARD_ROWS rows and at SHARD_SIZE videos."""
    csv, _ = footage
    plan = make_plan(dense_cfg(csv, tmp_path, weights="random", fps=1.0, shard_rows=10), download=False)
    shards = {i: [r.video_id for r in recs] for i, recs in plan.shards.items()}
    assert shards == {
        0: ["life25.avi"],  # 9 rows: with the next 8, over 10
        1: ["life30.mp4"],
        2: ["sound30.mp4"],  # 8 + the understated .avi's 3: over 10
        3: ["understated.avi", "zero.avi"],
    }
    fewer = make_plan(dense_cfg(csv, tmp_path, weights="random", fps=1.0, shard_size=1), download=False)
    assert len(fewer.shards) == 5


def test_the_rerun_of_a_complete_dense_set_opens_no_video(footage, per_second, weights_file, monkeypatch):
    """A complete set is reused as it is: its shards, which a dense set works out from every
    video's header, are never worked out again (on thousands of videos that was minutes)."""
    csv, _ = footage
    set_dir, _, _ = per_second

    def opened(path, *args):
        raise AssertionError(f"{path}'s header opened to plan a complete set")

    monkeypatch.setattr(plan_module, "expected_steps", opened)
    again = extract_features(
        dense_cfg(csv, set_dir.parents[1], weights=str(weights_file), image_size=SIZE, fps=1.0), quiet=True
    )
    assert again.reused_set and again.set_dir == set_dir and again.computed == 0


def test_another_listing_of_the_same_videos_copies_their_rows(footage, per_second, weights_file, tmp_path):
    """Per-video reuse (reuse.md) on a dense set: a listing of two of the videos, same settings,
    copies their ragged rows bit for bit from the first set and computes nothing."""
    csv, _ = footage
    set_dir, _, videos = per_second
    subset = csv.parent / "subset.csv"
    subset.write_text("path\nlife25.avi\nlife30.mp4\n")
    again = extract_features(
        dense_cfg(subset, set_dir.parents[1], weights=str(weights_file), image_size=SIZE, fps=1.0), quiet=True
    )
    assert again.copied == 2 and again.computed == 0, again
    copied = rows_by_video(again.set_dir)
    for vid in ("life25.avi", "life30.mp4"):
        for name, value in copied[vid].items():
            np.testing.assert_array_equal(value, videos[vid][name], err_msg=f"{vid}: {name}")


def test_retry_failures_on_a_dense_set_keeps_the_other_videos_rows(footage, per_second, weights_file, tmp_path):
    """--retry-failures rewrites the shard of a failed video with its other videos' ragged rows
    copied, not decoded again; the 0-second video fails again with its reason."""
    csv, _ = footage
    set_dir, _, videos = per_second
    cfg = dense_cfg(csv, set_dir.parents[1], weights=str(weights_file), image_size=SIZE, fps=1.0)
    retried = extract_features(cfg.replace(retry_failures=True), quiet=True)
    assert retried.computed == 0 and retried.failed == 1, retried
    assert "no decodable frames" in retried.failures[0]["reason"]
    again = rows_by_video(set_dir)
    for vid, rows in videos.items():
        for name, value in rows.items():
            np.testing.assert_array_equal(again[vid][name], value, err_msg=f"{vid}: {name}")


@pytest.mark.slow
def test_a_dask_run_of_a_dense_set_stores_what_this_process_stores(footage, per_second, weights_file, tmp_path):
    """SCHEDULER=local:1: the same id and, video for video, the same ragged rows."""
    csv, _ = footage
    set_dir, _, videos = per_second
    cfg = dense_cfg(csv, tmp_path, weights=str(weights_file), image_size=SIZE, fps=1.0, scheduler="local:1")
    on_dask = extract_features(cfg, quiet=True)
    assert on_dask.set_dir.name == set_dir.name
    remote = rows_by_video(on_dask.set_dir)
    assert sorted(remote) == sorted(videos)
    for vid, rows in videos.items():
        for name, value in rows.items():
            np.testing.assert_array_equal(remote[vid][name], value, err_msg=f"{vid}: {name}")
