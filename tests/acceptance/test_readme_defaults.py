"""The README's commands with the README's defaults, in a throwaway copy of the project root.

No variable but those the README itself shows: `make features` (DATASET=sample, the default 16
frames at 224 px, WEIGHTS=imagenet), then `make train`, `make train MODEL=gru`, `make store-info`
without ID= and `make demo 2>/dev/null`, all on the one feature set the first command leaves in
the copy's data/features, with the runs in the copy's runs/. The session is offline: the ImageNet
download is refused (by the session's proxy, expected here), and stage one says so and goes on
with seeded random weights, as the README's demo output shows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import offline
import pytest
from make_runs import Outcome, copy_project, run_make
from test_readme_commands import HEADLINE, assert_describes, assert_trained, succeeded

from pipeline import store

pytestmark = pytest.mark.acceptance

# the embedded sample: 6 classes x 4 groups x 2 clips
SAMPLE_VIDEOS = 48
SAMPLE_CLASSES = 6
IMAGENET_HOST = "download.pytorch.org"


@pytest.fixture(scope="session")
def project(tmp_path_factory, venv_ready) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def defaults_features(project) -> tuple[Outcome, list[str]]:
    """`make features`, nothing set, on a machine without the ImageNet weights: (outcome, the
    download requests the proxy refused)."""
    with offline.refusing_downloads_from(IMAGENET_HOST) as refused:
        out = run_make(None, "features", project=project, timeout=900)
    return out, refused


@pytest.fixture(scope="session")
def sample_set(project, defaults_features) -> Path:
    succeeded(defaults_features[0])
    (set_dir,) = store.feature_sets(project / "data" / "features")
    return set_dir


def test_make_features_with_the_readme_defaults(project, defaults_features, sample_set):
    out, refused = defaults_features
    assert "generating the embedded sample dataset at" in out.stderr and (project / "data" / "sample").is_dir(), out
    assert refused and all(IMAGENET_HOST in r for r in refused), refused
    assert "USING SEEDED RANDOM WEIGHTS" in out.stderr and "could not be downloaded" in out.stderr, out
    assert sample_set.parent == project / "data" / "features" / "sample", sample_set
    assert re.fullmatch(r"resnet50-random-t16-224px-[0-9a-f]{12}", sample_set.name), sample_set.name
    m = store.load_manifest(sample_set)
    assert m["complete"] and (m["num_stored"], m["frames"], m["feature_dim"]) == (SAMPLE_VIDEOS, 16, 2048), m
    assert f"computed {SAMPLE_VIDEOS}, copied 0, reused 0, failed 0" in out.stderr, out
    assert "stage one: 100%|" in out.stderr and f"{SAMPLE_VIDEOS}/{SAMPLE_VIDEOS}" in out.stderr, out


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_make_train_with_the_readme_defaults(project, sample_set, model):
    """`make train` (MODEL=lstm by default) and `make train MODEL=gru`: split 1 of the sample's set,
    no validation part (4 groups per class), so every one of the 30 epochs runs; the run in runs/."""
    out = run_make(None, "train", *([f"MODEL={model}"] if model != "lstm" else []), project=project)
    run_dir = assert_trained(out, model, early_stop=False)
    assert run_dir.parent == project / "runs", run_dir
    assert f"of {sample_set.name}" in out.stderr and "no validation part" in out.stderr, out
    config = json.loads((run_dir / "config.json").read_text())
    assert json.dumps(config).count(sample_set.name) >= 1, config


def test_make_store_info_without_an_id_describes_the_only_set(project, sample_set):
    out = run_make(None, "store-info", project=project)
    succeeded(out)
    assert_describes(out, sample_set, dataset="sample", classes=SAMPLE_CLASSES, videos=SAMPLE_VIDEOS, frames=16)


def test_make_demo_with_stderr_discarded_prints_only_results(project, sample_set):
    """`make demo 2>/dev/null`: stdout holds the two result lines, the clip's header and its
    ranking, nothing else; the demo reuses the set `make features` made."""
    with offline.refusing_downloads_from(IMAGENET_HOST) as refused:
        out = run_make(None, "demo", project=project, terminal=False)
    succeeded(out)
    assert refused, "the demo's stage one did not look for the ImageNet weights"
    lines = out.stdout.splitlines()
    result = re.compile(rf"^(lstm|mean) split 1: {HEADLINE}  \(best epoch 30/30, [\d.]+ s\)  -> (?P<dir>\S+)$")
    header = re.compile(r"^(?P<clip>\S+\.avi) \(16 of 16 frames; run (?P<run>\S+)\):$")
    ranked = re.compile(r"^  (\d)\. (\w+) +(\d\.\d{4})$")
    unexpected = [ln for ln in lines if not (result.match(ln) or header.match(ln) or ranked.match(ln))]
    assert not unexpected, f"stdout holds more than results: {unexpected}\n{out}"
    models = [result.match(ln)[1] for ln in lines if result.match(ln)]
    assert models == ["lstm", "mean"], out
    for ln in lines:
        if m := result.match(ln):
            assert Path(m["dir"]).parent == project / "runs", ln
    (head,) = [header.match(ln) for ln in lines if header.match(ln)]
    assert Path(head["clip"]).is_relative_to(project / "data" / "sample"), head["clip"]
    ranks = [ranked.match(ln) for ln in lines if ranked.match(ln)]
    assert [int(r[1]) for r in ranks] == [1, 2, 3, 4, 5], out
    assert sum(float(r[3]) for r in ranks) <= 1.0 + 5e-4
    (set_dir,) = store.feature_sets(project / "data" / "features")
    assert set_dir == sample_set, "the demo made another set than `make features`"


def test_make_demo_on_a_terminal(project, sample_set):
    """`make demo` as the README shows it: the stage-one banner and reuse, both heads trained
    through all 30 epochs with their progress on the terminal, a ranking on stdout."""
    with offline.refusing_downloads_from(IMAGENET_HOST):
        out = run_make(None, "demo", project=project)
    runs = {model: assert_trained(out, model, early_stop=False) for model in ("lstm", "mean")}
    assert all(d.parent == project / "runs" for d in runs.values())
    assert (
        "==> stage one on the sample dataset" in out.stderr and f"reusing feature set {sample_set.name}" in out.stderr
    )
    assert "no validation part" in out.stderr  # the sample's 4 groups per class: all 30 epochs run
    assert re.search(r"^  1\. \w+ +\d\.\d{4}$", out.stdout, re.M), f"no ranking on stdout:\n{out}"
