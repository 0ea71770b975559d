"""Bad configuration (issue 5): rejected with a message naming the option, before any work starts.

"Before any work" is checked on disk: after a rejected `features` command the feature
store root holds no feature-set directory (nothing was listed, opened or decoded).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner
from reliability_harness import REPO, make_tiny_tree

from pipeline import store
from pipeline.errors import ConfigError
from pipeline.files import file_sha256
from stages.cli import main as cli
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.extract.plan import make_plan


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("config-tree")
    make_tiny_tree(root, clips_per_class=1, frames=6)
    return root


def run_features(tmp_path: Path, *args: str, data_dir: Path | None = None, dataset: str = "folder"):
    """Invoke `features` in-process, on the CPU unless ARGS name another --device (the last one wins); returns (result, store root)."""
    root = tmp_path / "store"
    argv = [
        "features",
        "--dataset",
        dataset,
        "--features-root",
        str(root),
        "--weights",
        "random",
        "--size",
        "32",
        "--frames",
        "2",
        "--device",
        "cpu",
    ]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return CliRunner().invoke(cli, argv + list(args)), root


def assert_rejected(result, root: Path, *needles: str, status: int = 2) -> None:
    """status 2: a bad option (click's usage-error status); 1: the options were fine, the data or store is not."""
    assert result.exit_code == status, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)  # no traceback
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in:\n{result.output}"
    assert not list(root.glob("*/*")), f"a feature set was created before the error: {list(root.glob('*/*'))}"


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--bogus", "1"], ["No such option '--bogus'"]),
        (["--frames", "0"], ["--frames (FRAMES=)", "positive", "0"]),
        (["--frames", "-3"], ["--frames (FRAMES=)", "-3"]),
        (["--frames", "many"], ["--frames", "'many' is neither a whole number nor 'all'"]),
        (["--workers", "-1"], ["--workers", ">= 0", "-1"]),
        (["--shard-size", "0"], ["--shard-size", "0"]),
        (["--size", "8"], ["--size (SIZE=)", "at least 32 px", "8"]),
        (["--fps", "-2"], ["--fps (FPS=)", "-2"]),
        (["--timeout", "0"], ["--timeout", "> 0"]),
        (["--precision", "fp8"], ["--precision", "'fp8' is not one of"]),
        (["--decoder", "opencv"], ["--decoder", "'opencv' is not one of", "pyav", "ffmpeg-cli"]),
        (["--scheduler", "yarn://x"], ["--scheduler (SCHEDULER=)", "yarn://x"]),
        (["--devices", "tpu:0"], ["--devices (DEVICES=)", "tpu:0"]),
        (["--weights", "/no/such/resnet50.pth"], ["--weights (WEIGHTS=)", "/no/such/resnet50.pth"]),
    ],
)
def test_bad_options_are_rejected_naming_the_option(tree, tmp_path, args, needles):
    result, root = run_features(tmp_path, *args, data_dir=tree)
    assert_rejected(result, root, *needles)


def test_a_config_made_in_code_names_the_decoder_option():
    with pytest.raises(ConfigError, match=r"--decoder \(DECODER=\): choose one of pyav, ffmpeg-cli, got 'opencv'"):
        ExtractConfig(decoder="opencv")


def test_unknown_dataset_and_unknown_command(tmp_path):
    result, root = run_features(tmp_path, dataset="kinetics")
    assert_rejected(result, root, "--dataset", "'kinetics' is not one of")
    result = CliRunner().invoke(cli, ["featurez"])
    assert result.exit_code == 2 and "No such command 'featurez'" in result.output


def test_unknown_model_in_stage_two_is_rejected(tmp_path):
    result = CliRunner().invoke(
        cli, ["train", "--model", "resnet9000", "--features-root", str(tmp_path), "--device", "cpu"]
    )
    assert result.exit_code == 2 and "--model" in result.output and "resnet9000" in result.output, result.output


def test_cuda_device_without_cuda_is_rejected_before_any_work(tree, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result, root = run_features(tmp_path, "--device", "cuda:0", data_dir=tree)
    assert_rejected(result, root, "--device", "CUDA is not available")


@pytest.mark.parametrize(
    "dataset, expect",
    [
        (
            "ucf101",
            [
                "UCF101 not found at",
                "UCF-101/<Class>/v_<Class>_gXX_cYY.avi",
                "ucfTrainTestlist/classInd.txt",
                "Download",
            ],
        ),
        ("hmdb51", ["HMDB51 not found at", "<class>/<clip>.avi", "_test_split1.txt", "Download"]),
        ("folder", ["no class folders under", "<class>/<video file>", "DATA_DIR="]),
        ("csv", ["CSV list not found at", "path[,label][,split][,group]", "DATA_DIR="]),
    ],
)
def test_a_data_dir_that_does_not_exist_says_where_and_what_layout(tmp_path, dataset, expect):
    missing = tmp_path / "nowhere" / ("list.csv" if dataset == "csv" else "data")
    result, root = run_features(tmp_path, data_dir=missing, dataset=dataset)
    assert_rejected(result, root, str(missing), *expect, status=1)
    assert "Usage:" not in result.output, result.output


def test_a_features_root_that_cannot_be_a_directory_names_the_option(tree, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(
        cli,
        [
            "features",
            "--dataset",
            "folder",
            "--data-dir",
            str(tree),
            "--features-root",
            str(blocker / "store"),
            "--weights",
            "random",
            "--size",
            "32",
            "--frames",
            "2",
            "--device",
            "cpu",
        ],
    )
    assert (
        result.exit_code == 1 and "--features-root (FEATURES_ROOT=): cannot write the feature set" in result.output
    ), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_errors_reach_the_user_as_one_line_from_the_real_command(tmp_path):
    """The same through `python -m stages` (what the Makefile runs): exit 2, no traceback."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages",
            "features",
            "--frames",
            "0",
            "--features-root",
            str(tmp_path / "store"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 2 and "--frames (FRAMES=)" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------- weights files
@pytest.mark.parametrize("kind", ["resnet18", "random_dict", "not_a_dict", "garbage_bytes"])
def test_a_weights_file_that_does_not_fit_resnet50_is_named_as_such(tree, tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    if kind == "resnet18":
        torch.save(torchvision.models.resnet18().state_dict(), path)
    elif kind == "random_dict":
        torch.save({"encoder.weight": torch.randn(3, 3), "decoder.bias": torch.zeros(3)}, path)
    elif kind == "not_a_dict":
        torch.save(torch.randn(10), path)
    else:
        path.write_bytes(b"PK\x03\x04 this is not a checkpoint" * 50)
    result, root = run_features(tmp_path, "--weights", str(path), data_dir=tree)
    expected = {
        "resnet18": "does not fit ResNet-50",
        "random_dict": "does not fit ResNet-50",
        "not_a_dict": "expected a state dict",
        "garbage_bytes": "not a loadable PyTorch state dict",
    }[kind]
    assert_rejected(
        result, root, f"--weights (WEIGHTS=) {path}", expected, status=1
    )  # the file is there, its content is wrong


def test_a_valid_resnet50_state_dict_works_and_its_sha256_names_the_feature_set(tree, tmp_path):
    torch.manual_seed(1)
    a = tmp_path / "a.pth"
    torch.save(torchvision.models.resnet50().state_dict(), a)
    torch.manual_seed(2)
    b = tmp_path / "b.pth"
    wrapped = {"state_dict": {f"module.{k}": v for k, v in torchvision.models.resnet50().state_dict().items()}}
    torch.save(wrapped, b)  # a DataParallel checkpoint in a wrapper: accepted too
    cfg = ExtractConfig(
        dataset="folder",
        data_dir=tree,
        features_root=tmp_path / "store",
        weights=str(a),
        image_size=32,
        frames=2,
        device="cpu",
    )
    summary = extract_features(cfg, quiet=True)
    manifest = store.load_manifest(summary.set_dir)
    assert manifest["complete"] and manifest["num_stored"] == 2
    assert manifest["identity"]["weights"] == f"sha256:{file_sha256(a)[:16]}"
    other = make_plan(cfg.replace(weights=str(b)), download=False)
    assert other.identity.weights == f"sha256:{file_sha256(b)[:16]}" and other.set_dir != summary.set_dir


def test_a_missing_run_or_video_says_what_is_missing_without_a_usage_banner(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "--run", str(tmp_path / "no-run"), "--device", "cpu"])
    assert result.exit_code == 1 and "Usage:" not in result.output, result.output
    assert f"--run (RUN=): no checkpoint.pt in {tmp_path / 'no-run'}" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    result = CliRunner().invoke(
        cli, ["predict", str(tmp_path / "no.avi"), "--run", str(tmp_path / "no-run"), "--device", "cpu"]
    )
    assert result.exit_code == 1 and "Usage:" not in result.output, result.output
    assert f"{tmp_path / 'no.avi'}" in result.output and "no-run" not in result.output, result.output


def test_a_csv_whose_videos_are_all_unusable_says_why_not_just_where(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path\n/nowhere/long.mp4\n../up.mp4\n")
    result, root = run_features(tmp_path, dataset="csv", data_dir=listing)
    assert_rejected(
        result,
        root,
        f"no videos found under {tmp_path}; 2 listed but unusable, the first: ",
        "list.csv:2: listed but missing: no file at /nowhere/long.mp4",
        status=1,
    )


@pytest.mark.parametrize("command", ["train", "zeroshot"])
def test_train_and_zeroshot_refuse_an_unlabelled_set_naming_it_and_the_fix(tree, tmp_path, command):
    """A CSV without a label column makes an unlabelled set: nothing to fit or score classes on."""
    clip = sorted(tree.rglob("*.avi"))[0]
    listing = tmp_path / "list.csv"
    listing.write_text(f"path\n{clip}\n")
    made, root = run_features(tmp_path, dataset="csv", data_dir=listing)
    assert made.exit_code == 0, made.output
    (set_dir,) = root.glob("csv-list/*")
    args = [command, "--features", str(set_dir), "--features-root", str(root), "--device", "cpu"]
    result = CliRunner().invoke(cli, args + (["--out", str(tmp_path / "run")] if command == "zeroshot" else []))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"{set_dir.as_posix()}: the feature set has no labels" in result.output, result.output
    assert "Add a label column to the CSV" in result.output and not (tmp_path / "run").exists()
