"""Each command of the README, through `make` as the README writes it, with stderr a terminal.

One UCF101-layout set with a validation part and one stage-one run (conftest.ucf_home) serve
these commands; the README's defaults, `make demo` included, are test_readme_defaults.py's. Each test
checks what a user looks at: the exit status, the result lines on stdout, the progress on
the terminal, the files a run leaves.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import synth
from make_runs import SMALL, UCF_GROUPS, Outcome, run_make

from pipeline import store
from stages.train.models import HEADS
from stages.train.runs import CHECKPOINT, CONFIG, CONFUSION, CURVES, METRICS, PREDICTIONS

pytestmark = pytest.mark.acceptance

HEADLINE = r"top1 (?P<top1>\d\.\d{4})  top5 \d\.\d{4}  mean_class_acc \d\.\d{4}"
RESULT = re.compile(
    rf"^(?P<model>\w+) split 1: {HEADLINE}  \(best epoch \d+/(?P<run>\d+), [\d.]+ s\)  -> (?P<dir>\S+)$", re.M
)
RUN_FILES = (CONFIG, METRICS, PREDICTIONS, CHECKPOINT, CONFUSION, CURVES)


def succeeded(outcome: Outcome) -> None:
    assert outcome.returncode == 0, f"failed:\n{outcome}"


def result_line(outcome: Outcome, model: str) -> re.Match:
    """The `<model> split 1: top1 ...  -> run dir` line, on stdout (not on the terminal's stderr)."""
    found = [m for m in RESULT.finditer(outcome.stdout) if m["model"] == model]
    assert len(found) == 1, f"expected one '{model} split 1: top1 ...' line on stdout:\n{outcome}"
    return found[0]


def assert_trained(outcome: Outcome, model: str, epochs: int = 30, early_stop: bool = True) -> Path:
    """Exit 0, the result line, every epoch's progress line on the terminal, the run's files. Returns the run dir.

    early_stop: the run has a validation part, so it may stop after its patience (10 epochs);
    without one (the sample's 4 groups per class), every epoch runs."""
    succeeded(outcome)
    line = result_line(outcome, model)
    run_dir = Path(line["dir"])
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    assert not missing, f"{run_dir} lacks {missing}:\n{outcome}"
    metrics = json.loads((run_dir / METRICS).read_text())
    ran = metrics["epochs_run"]
    assert ran == int(line["run"]) and len(metrics["history"]) == ran
    if early_stop:  # early stopping may end a run with a validation part sooner, never before its patience (10)
        assert 10 < ran <= epochs, f"{model}: {ran} of {epochs} epochs:\n{outcome}"
    else:
        assert ran == epochs, f"{model}: {ran} of {epochs} epochs, with no validation part to stop early on:\n{outcome}"
    for k in range(1, ran + 1):
        assert f"{model} split 1 epoch {k}/{epochs}: loss " in outcome.stderr, (
            f"no progress line for epoch {k}:\n{outcome}"
        )
    assert float(line["top1"]) == pytest.approx(metrics["top1"], abs=1e-4)
    return run_dir


def set_id(home) -> str:
    (set_dir,) = (home.store / "ucf101").iterdir()
    return set_dir.name


@pytest.fixture(scope="session")
def lstm_train(ucf_home) -> Outcome:
    """`make train` with every default (MODEL=lstm, split 1, 30 epochs, progress on)."""
    return run_make(ucf_home.root, "train", "DATASET=ucf101")


@pytest.fixture(scope="session")
def lstm_run(lstm_train) -> Path:
    """The run directory of that `make train`, for the commands that read a run."""
    return assert_trained(lstm_train, "lstm")


def test_make_features(ucf_home):
    out = ucf_home.features
    succeeded(out)
    set_dir = ucf_home.store / "ucf101" / set_id(ucf_home)
    videos = 3 * UCF_GROUPS
    assert len(store.load_manifest(set_dir)["shards"]) == 1
    assert f"stage one complete: {set_dir.name}" in out.stderr
    assert f"computed {videos}, copied 0, reused 0, failed 0" in out.stderr, out
    assert "stage one: 100%|" in out.stderr and f"{videos}/{videos}" in out.stderr, f"no progress bar:\n{out}"
    again = run_make(ucf_home.root, "features", "DATASET=ucf101", "WEIGHTS=random", *SMALL)
    succeeded(again)
    assert f"reused {videos}" in again.stderr or f"reusing feature set {set_dir.name}" in again.stderr, again


def test_make_train_trains_every_epoch_with_a_validation_part(ucf_home, lstm_train):
    """The command of issue 18: with progress on, it crashed at the start of epoch 2."""
    run_dir = assert_trained(lstm_train, "lstm")
    parts = re.search(
        r"lstm split 1: (\d+) train / (\d+) validation \(by group\) / (\d+) test videos", lstm_train.stderr
    )
    assert parts and int(parts[2]) > 0, f"the tier's set must carve a validation part:\n{lstm_train}"
    assert run_dir.parent == ucf_home.root / "runs", "runs go under VIDSTORE_HOME/runs"
    assert "val loss" in lstm_train.stderr, f"no validation figures in the progress lines:\n{lstm_train}"


def test_make_evaluate(lstm_run):
    metrics = json.loads((lstm_run / METRICS).read_text())
    out = run_make(lstm_run.parents[1], "evaluate", f"RUN={lstm_run}")
    succeeded(out)
    line = re.search(rf"^{re.escape(str(lstm_run))}: {HEADLINE}  \((\d+) test videos\)$", out.stdout, re.M)
    assert line, f"no result line for the run on stdout:\n{out}"
    assert float(line["top1"]) == pytest.approx(metrics["top1"], abs=1e-4), "evaluate disagrees with train"
    assert int(line[2]) == 3 * len(synth.split_test_groups(UCF_GROUPS)[1])


def test_make_predict(ucf_home, lstm_run):
    manifest = store.load_manifest(ucf_home.store / "ucf101" / set_id(ucf_home))
    clip = Path(manifest["video_root"]) / manifest["splits"]["1"]["test"][0]
    out = run_make(ucf_home.root, "predict", f"VIDEO={clip}", f"RUN={lstm_run}")
    succeeded(out)
    assert f"{clip} (" in out.stdout, out
    ranked = re.findall(r"^  (\d)\. (\w+) +(\d\.\d{4})$", out.stdout, re.M)
    assert [int(r[0]) for r in ranked] == [1, 2, 3], f"expected the 3 classes ranked on stdout:\n{out}"
    assert {r[1] for r in ranked} == set(manifest["classes"])
    assert sum(float(r[2]) for r in ranked) == pytest.approx(1.0, abs=2e-3)


def test_make_compare(ucf_home):
    out = run_make(ucf_home.root, "compare", "DATASET=ucf101")
    succeeded(out)
    (compare_dir,) = (ucf_home.root / "runs").glob("*-compare-split1")
    table = (compare_dir / "compare.txt").read_text()
    assert table in out.stdout, f"the table is not on stdout:\n{out}"
    for head in HEADS:
        assert re.search(rf"^{head}\b", table, re.M), f"{head} missing from the table:\n{table}"
        assert_trained(out, head)


def test_make_store_list(ucf_home):
    out = run_make(ucf_home.root, "store-list")
    succeeded(out)
    assert set_id(ucf_home) in out.stdout and "ucf101" in out.stdout, out


def test_make_store_info(ucf_home):
    set_dir = ucf_home.store / "ucf101" / set_id(ucf_home)
    out = run_make(ucf_home.root, "store-info", f"ID={set_dir.name}")
    succeeded(out)
    assert_describes(out, set_dir, dataset="ucf101", classes=3, videos=3 * UCF_GROUPS, frames=8)


def assert_describes(out: Outcome, set_dir: Path, dataset: str, classes: int, videos: int, frames: int) -> None:
    """`store info`'s description of set_dir, its figures as the manifest has them."""
    m = store.load_manifest(set_dir)
    expected = [
        f"feature set {set_dir.name}",
        f"  directory:  {set_dir}",
        f"  dataset:    {dataset}, {classes} classes, videos under {m['video_root']}",
        "  state:      complete",
        f"  videos:     {videos} of {videos} stored, 0 failed; {len(m['shards'])}/{len(m['shards'])} shards",
        f"  per shard:  features (n, {frames}, 2048) float16",
    ]
    for line in expected:
        assert line in out.stdout, f"no {line!r} in store info:\n{out}"
    for name, parts in m["splits"].items():
        sizes = ", ".join(f"{part} {len(ids)}/{len(ids)}" for part, ids in parts.items())
        assert f"    {name}: {sizes}" in out.stdout, f"split {name} not described as {sizes}:\n{out}"


def test_make_store_verify(ucf_home):
    out = run_make(ucf_home.root, "store-verify")
    succeeded(out)
    assert re.search(rf"^ucf101/{set_id(ucf_home)}: OK \(1 shard checked\)$", out.stdout, re.M), out


def test_make_store_gc(ucf_home):
    out = run_make(ucf_home.root, "store-gc")
    succeeded(out)
    assert "in 0 file(s) of 1 feature set(s)" in out.stdout, f"gc removed from a clean store:\n{out}"


@pytest.mark.slow
def test_make_bench_smallest(tmp_path):
    """`make bench` with its smallest variables: its CPU defaults take about 10 minutes (50 LSTM
    epochs on UCF101-sized features alone are 581 s on the idle 2-core machine)."""
    out = run_make(
        tmp_path,
        "bench",
        "CLIPS=2",
        "SECONDS=1",
        "SIZE=64",
        "ROUNDS=1",
        "BASELINE_CLIPS=1",
        "AUDIO_CLIPS=1",
        "TRAIN_EPOCHS=1",
    )
    succeeded(out)
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    for key in ("videos_per_s", "decode_ceiling_videos_per_s", "baseline_videos_per_s", "train_50_epochs_s"):
        assert results.get(key, 0) > 0, f"{key} missing from bench/results.json: {sorted(results)}\n{out}"
