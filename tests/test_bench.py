"""`make bench` at a tiny size (1 clip of 1 s, 64 px): every figure is there and positive."""

import contextlib
import dataclasses
import io
import json
import mmap
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import stages.bench.run
from stages.bench import TIMED_DECODERS, BenchConfig, run_bench
from stages.bench.config import BenchError

FIGURES = (
    "audio_videos_per_s",
    "audio_cpu_ms_per_video",
    "videos_per_s",
    "frames_per_s",
    "decode_ceiling_videos_per_s",
    "baseline_videos_per_s",
    "backbone_images_per_s",
    "dense_real_time_factor",
    "dense_decode_s_per_video_minute",
)


def this_process_allocator() -> str:
    """What the bench must report for the test process it runs in, read here from the process's
    own mappings and environment, not through allocator.describe(), the function under test."""
    maps = Path("/proc/self/maps").read_text()
    if "libjemalloc.so.2" in maps:
        conf = os.environ.get("MALLOC_CONF")
        return f"jemalloc (loaded; {f'MALLOC_CONF={conf}' if conf else 'its default settings'})"
    if os.environ.get("GLIBC_TUNABLES"):
        return f"glibc (GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']})"
    return "glibc defaults (large blocks go back to the kernel at free)"


def tiny(tmp_path, out) -> BenchConfig:
    """1 clip of 1 s at 64 px on the CPU, one round, no stage two."""
    return BenchConfig(
        clips=1,
        seconds=1.0,
        size=64,
        device="cpu",
        baseline_clips=1,
        baseline_reader="ffmpeg",
        backbone_seconds=0.3,
        rounds=1,
        skip_train=True,
        dense_seconds=6.0,
        clips_dir=tmp_path / "clips",
        out=out,
    )


# The bench's measurements, by the names stages.bench.run looks them up under.
MEASUREMENTS = ("measure_decoder", "measure_end_to_end", "measure_baseline", "measure_backbone")


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory) -> tuple[dict, dict, str, dict[str, list]]:
    """One tiny bench, shared: (what run_bench returned, results.json, its report on stderr, each
    measurement's return values in call order)."""
    tmp_path = tmp_path_factory.mktemp("bench")
    measured: dict[str, list] = {name: [] for name in MEASUREMENTS}

    def recording(name: str):
        real = getattr(stages.bench.run, name)
        return lambda *a, **kw: measured[name].append(real(*a, **kw)) or measured[name][-1]

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(io.StringIO()) as err:
        for name in MEASUREMENTS:
            mp.setattr(stages.bench.run, name, recording(name))
        returned = run_bench(tiny(tmp_path, tmp_path / "results.json"))
    return returned, json.loads((tmp_path / "results.json").read_text()), err.getvalue(), measured


def test_bench_reports_every_figure(tiny_bench):
    returned, results, report, _ = tiny_bench
    assert results.keys() == returned.keys()
    for key in FIGURES:
        assert results[key] > 0, key
    assert "train_50_epochs_s" in results and results["train"] == {"skipped": "--skip-train"}
    assert results["ratios"]["end_to_end_vs_ceiling"] > 0 and results["ratios"]["end_to_end_vs_baseline"] > 0
    e2e = results["end_to_end"]
    assert e2e["videos"] == 1 and e2e["failed"] == 0
    # the kernel's share of stage one: page faults per embedded frame and system CPU
    assert e2e["page_faults"] > 0 and e2e["page_faults_per_frame"] == e2e["page_faults"] / e2e["timings"]["images"]
    assert 0 <= e2e["system_cpu_share"] < 1 and e2e["cpu_user_s"] > 0
    assert results["baseline"]["frames"] == 25  # every frame of a 1 s clip at 25 fps
    dense = results["dense"]  # FRAMES=all FPS=1 on one 6 s video
    assert dense["rows"] == 6 and dense["real_time_factor"] == pytest.approx(6 / dense["seconds"])
    assert dense["decode_s_per_video_minute"] == pytest.approx(dense["timings"]["decode"] / 0.1)
    assert dense["end_to_end_vs_backbone"] >= 1 and "x real time" in report and "decoder s per video-minute" in report
    machine = results["machine"]
    assert (
        machine["cores"] >= 1 and machine["ram_gib"] > 0 and machine["torch"] and machine["ffmpeg_version"] != "unknown"
    )
    assert machine["allocator"] == this_process_allocator()
    assert results["settings"]["size"] == 64 and results["settings"]["clips"] == 1
    # every decoder as stage one runs it (pyav in its decoder processes), and PyAV in threads
    assert results["decoder"] == "pyav" and set(results["decoders"]) == {"pyav", "ffmpeg-cli", "pyav-threads"}
    for name, d in results["decoders"].items():
        assert d["cpu_ms_per_video"] > 0 and d["videos_per_s"] > 0 and d["videos"] >= 64, name
    assert results["decoders"]["pyav"]["processes"] == results["settings"]["workers"]
    assert results["decoders"]["pyav-threads"]["processes"] == 0
    fastest = max(TIMED_DECODERS, key=lambda name: results["decoders"][name]["videos_per_s"])
    assert results["decode_ceiling"]["decoder"] == fastest
    assert results["decode_ceiling_videos_per_s"] == results["decoders"][fastest]["videos_per_s"]
    vs = results["ratios"]["decoder_vs_ffmpeg_cli"]
    cli = results["decoders"]["ffmpeg-cli"]
    assert vs["cpu_ms_per_video"] == results["decoders"]["pyav"]["cpu_ms_per_video"] / cli["cpu_ms_per_video"]
    assert len(vs["videos_per_s_by_round"]) == 1
    assert (
        "end to end / baseline" in report
        and "where stage one's" in report
        and "64 px instead of stage one's 224" in report
        and "decoders alone" in report
        and "pyav / ffmpeg-cli" in report
        and "per embedded frame" in report
        and f"allocator: {this_process_allocator()}" in report
    )


def test_fewer_epochs_are_scaled_to_50_and_labelled(monkeypatch):
    import torch

    from stages.bench import report, training

    calls = []

    def timed(**kw) -> float:
        """Stands in for the epochs: writes 64 MiB of fresh pages, a new anonymous mapping of its
        own (whatever memory malloc keeps from earlier tests in this process): at least 32 page
        faults for the measurement to count, one per 2 MiB huge page, 16,384 in 4 KiB pages."""
        calls.append(kw)
        pages = mmap.mmap(-1, 64 << 20)
        view = np.frombuffer(pages, np.uint8)
        view[:] = 1
        del view
        pages.close()
        return 3.0

    monkeypatch.setattr(training, "time_training", timed)
    measured = training.measure_training(BenchConfig(train_epochs=2), torch.device("cpu"))
    assert calls == [{"epochs": 2, "device": "cpu"}]
    assert measured["train_50_epochs_s"] == 75.0 and "EXTRAPOLATED" in report.train_line(measured)
    assert measured["page_faults"] >= 32, measured
    assert f"{measured['page_faults']:,} page faults" in report.train_line(measured)
    full = training.measure_training(BenchConfig(train_epochs=50), torch.device("cpu"))
    assert full["train_50_epochs_s"] == 3.0 and "extrapolated" not in full


def test_a_part_that_fails_is_reported_and_the_others_are_kept(tiny_bench, tmp_path, monkeypatch, capsys):
    """A bench that cannot measure one part (here the audio set) still writes every other
    figure, names the part and why, and ends with an error. The other parts replay the shared
    tiny bench's measurements (each measured for real there): what is under test is the run's
    handling of a failed part."""
    measured = tiny_bench[3]

    def broken(cfg):
        raise RuntimeError("no sound today")

    def replay(name: str):
        figures = iter(measured[name])
        return lambda *a, **kw: next(figures)

    for name in MEASUREMENTS:
        monkeypatch.setattr(stages.bench.run, name, replay(name))
    monkeypatch.setattr(stages.bench.run, "measure_audio", broken)  # where the run looks it up
    out = tmp_path / "results.json"
    cfg = tiny(tmp_path, out)
    with pytest.raises(BenchError, match="audio could not be measured"):
        run_bench(cfg)
    results = json.loads(out.read_text())
    assert results["audio"] == {"error": "RuntimeError: no sound today"}
    assert (
        results["videos_per_s"] > 0 and results["backbone_images_per_s"] > 0 and results["audio_videos_per_s"] is None
    )
    assert "no sound today" in capsys.readouterr().err


@pytest.mark.parametrize(
    "backbone, dim",
    [("timm:test_vit", 64), ("open_clip:ViT-B-32:openai", 512), ("torchvision:mobilenet_v3_small", 1024)],
)
def test_any_backbone_is_timed_alone_and_end_to_end(tmp_path, monkeypatch, backbone, dim):
    """BACKBONE= of each library family, random weights offline: the backbone alone and stage one
    end to end run that model (its D in the stored set), at SIZE=64 on 1 clip of 1 s."""
    from stages.bench.model import measure_backbone
    from stages.bench.run import prepare_clips
    from stages.bench.stage_one import measure_end_to_end

    cfg = dataclasses.replace(tiny(tmp_path, tmp_path / "results.json"), backbone=backbone).resolved()
    alone = measure_backbone(cfg, torch.device("cpu"), "fp32")
    assert alone["images_per_s"] > 0 and alone["backbone"] == backbone and alone["dim"] == dim
    _, listing = prepare_clips(cfg)
    e2e = measure_end_to_end(cfg, listing, tmp_path)
    assert e2e["videos"] == 1 and e2e["failed"] == 0 and e2e["frames_per_s"] > 0
    (set_dir,) = (tmp_path / "store" / "bench").iterdir()
    assert set_dir.name.startswith(backbone.replace(":", "-") + "-random-t16-64px-")
    assert json.loads((set_dir / "manifest.json").read_text())["feature_dim"] == dim


def test_published_weights_that_are_not_cached_stop_the_bench_with_where_to_put_them(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from stages.bench.model import measure_backbone
    from stages.extract.errors import WeightsError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = BenchConfig(backbone="timm:test_vit", weights="pretrained", size=64, device="cpu").resolved()
    with pytest.raises(WeightsError, match="not cached at .*WEIGHTS=/path/to/"):
        measure_backbone(cfg, torch.device("cpu"), "fp32")


def test_a_clip_model_is_timed_in_clips_with_stage_ones_clip_batch(tmp_path):
    """BACKBONE=torchvision:r2plus1d_18: the bench's batch is stage one's in clips (as many 16-frame
    clips as hold ResNet-50's 32 frames of 224 px: 8 at 112 px), and the backbone alone is reported
    in clips/s with the frames/s they hold; a model that cannot take 112 px is timed at its own size."""
    from stages.bench.model import measure_backbone
    from stages.bench.report import backbone_row

    default = BenchConfig(device="cpu", backbone="torchvision:r2plus1d_18").resolved()
    assert (default.size, default.gpu_batch) == (112, 8)
    assert BenchConfig(device="cpu", backbone="torchvision:mvit_v2_s").resolved().size == 224
    assert BenchConfig(device="cpu").resolved().gpu_batch == 32  # ResNet-50's frames

    cfg = dataclasses.replace(
        tiny(tmp_path, tmp_path / "results.json"), backbone="torchvision:r2plus1d_18", size=32, gpu_batch=2
    ).resolved()
    alone = measure_backbone(cfg, torch.device("cpu"), "fp32")
    assert alone["unit"] == "clips" and alone["batch"] == 2 and alone["dim"] == 512
    assert alone["frames_per_s"] == pytest.approx(16 * alone["images_per_s"])
    label, rate, detail = backbone_row(alone)
    assert label == "backbone alone (torchvision:r2plus1d_18)"
    assert rate == f"{alone['images_per_s']:.4g} clips/s" and detail.startswith(f"{alone['frames_per_s']:.4g} frames/s")
