"""Stage two's commands as a user types them, on a folder set stage one made: the set found by
the words that made it, split names and option errors, failed and interrupted runs, predict on a
file that does not decode."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.devices import cpu_has_native_bf16
from stages.cli import main as cli
from stages.train import trainer

QUICK = ["--model", "mean", "--epochs", "1", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def store_root(folder_tree, tmp_path_factory):
    """A store holding the folder set `features --dataset folder --data-dir <tree>` makes (32 px, T=2)."""
    root = tmp_path_factory.mktemp("paths-store")
    args = ["--dataset", "folder", "--data-dir", str(folder_tree), "--features-root", str(root)]
    made = CliRunner().invoke(cli, ["features", *args, "--weights", "random", "--size", "32", "--frames", "2"])
    assert made.exit_code == 0, made.output
    return root


def train(store_root, *args: str):
    return CliRunner().invoke(cli, ["train", "--features-root", str(store_root), *QUICK, *args])


def test_train_finds_the_folder_set_by_the_words_that_made_it(store_root, folder_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSTORE_HOME", str(tmp_path))  # runs/ of the default run directory
    ran = train(store_root, "--dataset", "folder", "--data-dir", str(folder_tree))
    assert ran.exit_code == 0, ran.output
    assert "on split 1 of" in ran.output and "mean split 1:" in ran.output, ran.output
    assert "split all" not in ran.output and "split csv" not in ran.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.endswith("-mean-split1") and (run_dir / "checkpoint.pt").is_file()
    auto = "bf16" if cpu_has_native_bf16() else "fp32"
    assert f"parameters, batch 8, cpu {auto}, data memory" in ran.output, ran.output
    ran = train(store_root, "--dataset", "folder", "--data-dir", str(folder_tree), "--precision", "bf16")
    assert ran.exit_code == 0 and "cpu bf16, data memory" in ran.output, ran.output  # --precision's words


def test_a_miss_names_what_to_type(store_root, folder_tree):
    missed = train(store_root, "--dataset", "folder")
    assert missed.exit_code == 1, missed.output
    root = f"FEATURES_ROOT={store_root}"
    assert f"`make train DATASET=folder DATA_DIR={folder_tree} {root}`" in missed.output, missed.output
    assert f"`make features DATASET=folder {root}` first" in missed.output
    missed = train(store_root, "--dataset", "folder", "--data-dir", "/elsewhere/clips")
    assert f"`make features DATASET=folder DATA_DIR=/elsewhere/clips {root}` first" in missed.output, missed.output


@pytest.mark.parametrize("split", ["4", "csv"])
def test_a_split_the_set_lacks_is_an_option_error_with_the_real_choices(store_root, folder_tree, split):
    res = train(store_root, "--dataset", "folder", "--data-dir", str(folder_tree), "--split", split)
    assert res.exit_code == 2 and "Usage:" in res.output and "--split (SPLIT=)" in res.output, res.output
    if split == "4":
        assert "choose one of 1, all" in res.output and "all, all" not in res.output


def test_no_test_videos_names_test_fraction(store_root, folder_tree, tmp_path):
    args = ["--dataset", "folder", "--data-dir", str(folder_tree), "--test-fraction", "0", "--out", str(tmp_path / "r")]
    res = train(store_root, *args)
    assert res.exit_code == 1 and "0 test videos" in res.output and "--test-fraction (TEST_FRACTION=)" in res.output


def test_a_failed_or_interrupted_run_is_marked_and_refused(store_root, folder_tree, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["--dataset", "folder", "--data-dir", str(folder_tree), "--out", str(out)]
    real = trainer.fit_and_report

    def crash(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(trainer, "fit_and_report", crash)
    res = train(store_root, *args)
    assert isinstance(res.exception, RuntimeError)  # a bug keeps its traceback
    assert (out / "FAILED").read_text() == "RuntimeError: boom\n" and (out / "config.json").is_file()
    evaluated = CliRunner().invoke(cli, ["evaluate", "--run", str(out), "--device", "cpu"])
    assert evaluated.exit_code == 1 and f"the run in {out} did not finish (RuntimeError: boom)" in evaluated.output

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "fit_and_report", interrupt)
    res = train(store_root, *args)
    assert res.exit_code == 130 and "Aborted!" not in res.output, res.output
    assert "Interrupted. The unfinished run is lost (its directory, if made, is marked FAILED)" in res.output
    assert f"run directory {out} marked FAILED: interrupted (Ctrl-C)" in res.output
    assert (out / "FAILED").read_text() == "interrupted (Ctrl-C)\n"

    monkeypatch.setattr(trainer, "fit_and_report", real)
    assert train(store_root, *args).exit_code == 0 and not (out / "FAILED").exists()  # the same OUT= again
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video")
    predicted = CliRunner().invoke(cli, ["predict", str(junk), "--run", str(out), "--device", "cpu"])
    assert predicted.exit_code == 1 and f"Error: VIDEO: cannot decode {junk}" in predicted.output, predicted.output
    assert predicted.exception is None or isinstance(predicted.exception, SystemExit), repr(predicted.exception)


def test_ctrl_c_in_stage_one_says_what_was_kept_and_that_a_rerun_resumes(tmp_path, monkeypatch):
    import stages.extract

    def interrupt(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages.extract, "extract_features", interrupt)
    res = CliRunner().invoke(cli, ["features", "--features-root", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 130 and "Aborted!" not in res.output, res.output
    assert "Every shard committed so far is kept" in res.output and "run the same command again to resume" in res.output
