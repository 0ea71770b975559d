"""Stage two on several modalities: fusion heads, absent sound tracks, modality dropout, MODALITIES=, compare.

The audio-visual set (helpers.audio_visual_sets) is built so that neither modality alone can
name the class: the pictures show one of two scenes, the sound plays two sounds in one of
two orders (the mean over frames is the same for both orders), and class = scene x order.
Chance is 0.25; a modality alone can expect 0.5 at best.

FUSION_FIGURES: test top-1 of an LSTM on it with FUSION_SETTINGS (data seed 0, training seed
0, 32 test videos, 2 of them without a sound track; CPU, fp32). Over data seeds 0-4 x training
seeds 0-1 the means were rgb 0.44, audio 0.48, early 0.963, late 0.966, gated 0.978 (lowest
0.94, 0.94, 0.97): gated is FUSION='s default. With 2 layers: early 0.966, late 0.956, gated
0.966. Modality dropout 0 / 0.1 / 0.15 / 0.3 gave gated 0.974 / 0.974 / 0.979 / 0.974 (6 runs).
"""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import audio_visual_sets, random_set
from reliability_harness import REPO

from pipeline import FeatureSetView
from pipeline.errors import ConfigError, ReaderError
from stages.cli import main as cli
from stages.train import compare, evaluate_run, load_run, train, trainer
from stages.train.config import TrainConfig
from stages.train.fusion import FusedClassifier, ModalityDropout, build_fused, drop_modalities
from stages.train.models import TemporalClassifier

FUSIONS = TrainConfig.FUSIONS
FUSION_SETTINGS = dict(epochs=30, layers=1, hidden=32, proj=16, val_fraction=0.0, seed=0, device="cpu", progress=False)
FUSION_FIGURES = {"rgb": 0.41, "audio": 0.44, "early": 1.0, "late": 0.97, "gated": 0.97}


@pytest.fixture(scope="module")
def av_sets(tmp_path_factory):
    """(rgb set, audio set) of dataset "av" in a store of their own."""
    return audio_visual_sets(tmp_path_factory.mktemp("av-store"))


@pytest.fixture(scope="module")
def av_runs(av_sets, tmp_path_factory):
    """The LSTM on each modality alone and on both with each fusion kind: input -> RunResult."""
    rgb, audio = av_sets
    out = tmp_path_factory.mktemp("av-runs")
    inputs = {"rgb": str(rgb), "audio": str(audio)} | {kind: f"{rgb},{audio}" for kind in FUSIONS}
    return {
        name: train(
            TrainConfig(
                features=features,
                model="lstm",
                fusion=name if name in FUSIONS else "gated",
                out=out / name,
                **FUSION_SETTINGS,
            )
        ).runs[0]
        for name, features in inputs.items()
    }


def test_the_fused_lstm_names_the_class_where_neither_modality_alone_can(av_runs):
    top1 = {name: run.metrics["top1"] for name, run in av_runs.items()}
    assert top1["rgb"] <= 0.6 and top1["audio"] <= 0.6, top1
    assert all(top1[kind] >= 0.9 for kind in FUSIONS), top1
    for kind in FUSIONS:
        config = json.loads((av_runs[kind].run_dir / "config.json").read_text())
        assert config["model"] | {"fusion": kind} == config["model"]  # the spec records what rebuilds it
        assert config["model"]["modalities"] == ["rgb", "audio"] and config["model"]["input_dims"] == [16, 8]


@pytest.mark.parametrize("kind", FUSIONS)
def test_a_rebuilt_fused_run_scores_as_it_did(av_runs, kind):
    model, _ = load_run(av_runs[kind].run_dir)
    assert isinstance(model, FusedClassifier)
    assert evaluate_run(av_runs[kind].run_dir, device="cpu")["top1"] == pytest.approx(av_runs[kind].metrics["top1"])


@pytest.mark.parametrize("kind", FUSIONS)
def test_an_absent_sound_track_is_replaced_never_read(av_sets, av_runs, kind):
    """The stored silence of a video without sound never reaches the model: whatever it holds,
    the prediction is the same; the very same change does move a video that has sound."""
    model, _ = load_run(av_runs[kind].run_dir)
    view = FeatureSetView(list(av_sets))
    rows = view.split("1").test
    x = torch.from_numpy(view.read(rows).astype(np.float32))
    lengths, present = torch.from_numpy(view.index.lengths[rows]), torch.from_numpy(view.presence[rows])
    absent, heard = np.flatnonzero(~view.presence[rows, 1]), np.flatnonzero(view.presence[rows, 1])
    assert len(absent) == 2 and view.presence[rows, 0].all()
    changed = x.clone()
    changed[..., 16:] = torch.randn(changed[..., 16:].shape, generator=torch.Generator().manual_seed(1)) * 5
    with torch.no_grad():
        before, after = model(x, lengths, present), model(changed, lengths, present)
    assert torch.equal(before[absent], after[absent])
    assert not torch.allclose(before[heard], after[heard])


def test_modality_dropout_happens_only_in_training():
    present = torch.tensor([[True, True], [True, False], [False, True]]).repeat(200, 1)
    drop = ModalityDropout(1.0)
    kept = drop(present)  # a new module is in training mode
    assert (kept[0::3].sum(1) == 1).all(), "a video with both streams loses exactly one"
    assert torch.equal(kept[1::3], present[1::3]) and torch.equal(kept[2::3], present[2::3]), "never its last one"
    assert torch.equal(drop.eval()(present), present)
    torch.manual_seed(0)
    share = (~drop_modalities(torch.ones(20000, 2, dtype=torch.bool), 0.2)).float().mean(0)
    assert torch.allclose(share, torch.tensor([0.1, 0.1]), atol=0.01), share  # either modality, p in all
    net = build_fused("lstm", [6, 4], 5, 4, "gated", 0.5, hidden=8, layers=1, dropout=0.0)
    x, lengths = torch.randn(64, 5, 10), torch.full((64,), 5)
    with torch.no_grad():
        assert not torch.equal(net.train()(x, lengths), net(x, lengths))  # dropout is the only randomness
        assert torch.equal(net.eval()(x, lengths), net(x, lengths))


def test_single_modality_runs_are_unchanged(tmp_path):
    """Figures of d64e7aa (before fusion existed), same set and seeds: the same model, the same numbers."""
    set_dir = random_set(tmp_path / "set", n=60, t=6, d=16, shard_size=7)
    cfg = TrainConfig(
        features=str(set_dir), epochs=3, hidden=16, proj=8, seed=3, val_fraction=0.25, precision="fp32", device="cpu"
    )
    before = {
        ("lstm", "memory", False): (0.25, 1.1006596088409424, 1.0945292578803167),
        ("attention", "stream", True): (0.3333333333333333, 1.099312464396159, 1.1054562462700739),
    }
    for (model, load, bidirectional), (top1, test_loss, train_loss) in before.items():
        run = cfg.replace(model=model, load=load, bidirectional=bidirectional, out=tmp_path / model, progress=False)
        metrics = train(run).runs[0].metrics
        assert metrics["top1"] == top1
        assert metrics["test_loss"] == pytest.approx(test_loss, rel=1e-5)
        assert metrics["history"][-1]["train_loss"] == pytest.approx(train_loss, rel=1e-5)
        net, config = load_run(tmp_path / model)
        assert type(net) is TemporalClassifier and config["model"]["fusion"] is None
        assert not any("missing" in k or "modality" in k for k in net.state_dict())


def test_modalities_pick_each_modality_default_set(av_sets):
    rgb, audio = av_sets
    root = rgb.parent.parent
    pick = lambda **kw: trainer.feature_dirs(TrainConfig(dataset="av", features_root=root, **kw))
    assert pick() == [rgb]  # rgb alone by default, though the dataset has an audio set too
    assert pick(modalities="rgb,audio") == [rgb, audio] and pick(modalities=("audio",)) == [audio]
    assert TrainConfig(modalities=" audio , rgb").modalities == ("audio", "rgb")
    with pytest.raises(ConfigError, match=r"--modalities \(MODALITIES=\).*'rgb,smell'"):
        TrainConfig(modalities="rgb,smell")
    with pytest.raises(ConfigError, match=r"MODALITIES=.*'rgb,rgb'"):
        TrainConfig(modalities="rgb,rgb")
    with pytest.raises(ConfigError, match=r"--fusion \(FUSION=\).*'middle'"):
        TrainConfig(fusion="middle")
    with pytest.raises(ConfigError, match="--modality-dropout"):
        TrainConfig(modality_dropout=1.0)
    with pytest.raises(ConfigError, match="MODALITIES=.*FEATURES="):
        trainer.open_view(TrainConfig(features=str(rgb), modalities="rgb,audio"))


def test_a_dataset_without_a_set_of_that_modality_says_what_to_run(tmp_path):
    random_set(tmp_path / "ds" / "rgb-only", n=30, d=8)
    with pytest.raises(ReaderError, match=r"MODALITIES=.*no audio feature set for 'ds'.*hold rgb.*MODALITY=audio"):
        trainer.feature_dirs(TrainConfig(dataset="ds", features_root=tmp_path, modalities="rgb,audio"))


def test_a_video_missing_from_one_modality_is_an_error_naming_it(tmp_path):
    random_set(tmp_path / "ds" / "rgb-set", n=30, d=8)
    random_set(tmp_path / "ds" / "audio-fewer", n=27, d=4, modality="audio")
    cfg = TrainConfig(dataset="ds", features_root=tmp_path, modalities="rgb,audio", out=tmp_path / "run", epochs=1)
    with pytest.raises(
        ReaderError, match=r"FEATURES=: video 'c0/v_c0_g\d+_c0\d+\.avi' has no features in .*audio-fewer"
    ):
        train(cfg.replace(device="cpu", progress=False))


def test_make_passes_modalities_and_fusion():
    dry = subprocess.run(
        ["make", "-n", "train", "MODALITIES=rgb,audio", "FUSION=late", "VENV=/nonexistent"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert '--modalities "rgb,audio"' in dry.stdout and '--fusion "late"' in dry.stdout, dry.stdout + dry.stderr


def test_the_command_line_takes_the_fusion_options(av_sets, tmp_path):
    root = av_sets[0].parent.parent
    argv = ["train", "--dataset", "av", "--features-root", str(root), "--modalities", "rgb,audio", "--fusion", "late"]
    argv += ["--modality-dropout", "0.3", "--epochs", "1", "--hidden", "8", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(cli, argv + ["--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["modalities"] == ["rgb", "audio"] and config["model"]["modality_dropout"] == 0.3
    assert config["model"]["fusion"] == "late" and [s["modality"] for s in config["feature_sets"]] == ["rgb", "audio"]
    bad = CliRunner().invoke(cli, ["train", "--fusion", "middle"])
    assert bad.exit_code == 2 and "--fusion" in bad.output and "'middle'" in bad.output


def test_compare_sets_each_modality_alone_beside_the_fused_input(av_sets, tmp_path, capsys):
    rgb, audio = av_sets
    cfg = TrainConfig(
        features=f"{rgb},{audio}",
        out=tmp_path / "cmp",
        epochs=1,
        hidden=8,
        layers=1,
        proj=4,
        device="cpu",
        progress=False,
    )
    rows = compare(cfg, models=("mean", "lstm"))
    assert [r["model"] for r in rows] == ["mean", "lstm"] and [r["fusion"] for r in rows] == ["early", "gated"]
    table = (tmp_path / "cmp" / "compare.txt").read_text().splitlines()
    assert table[0].split() == [
        "model",
        "fusion",
        "rgb_top1",
        "audio_top1",
        "fused_top1",
        "fused_top5",
        "params",
        "train_s",
    ]
    assert table[2].split()[:2] == ["mean", "early"] and "fused_top1" in capsys.readouterr().out
    for r in rows:
        for name in ("rgb", "audio", "fused"):
            metrics = json.loads((tmp_path / "cmp" / name / r["model"] / "metrics.json").read_text())
            assert metrics["top1"] == r[f"{name}_top1"] and metrics["videos"] == 32
    written = list(csv.DictReader(open(tmp_path / "cmp" / "compare.csv")))
    assert [w["model"] for w in written] == ["mean", "lstm"] and float(written[1]["audio_top1"]) == rows[1][
        "audio_top1"
    ]
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["inputs"] == ["rgb", "audio", "fused"]
