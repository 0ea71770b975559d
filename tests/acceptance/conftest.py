"""Fixtures of the acceptance tier (make_runs.py runs the commands): one generated
UCF101-layout set and one stage-one run on it, shared by the whole tier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import synth
from helpers import UCF_TREE_CLASSES
from make_runs import REPO, SMALL, UCF_SETTINGS, Outcome, run_make


@pytest.fixture(scope="session")
def venv_ready() -> None:
    """Fail with the fix when `make setup` would reinstall: each command would then spend minutes in pip.

    `make test` runs setup first, so this holds there; a bare pytest after editing
    pyproject.toml needs `make setup` once.
    """
    stamp, pyproject = REPO / ".venv" / ".installed", REPO / "pyproject.toml"
    if not stamp.is_file() or stamp.stat().st_mtime < pyproject.stat().st_mtime:
        pytest.fail(
            f"{stamp} is missing or older than pyproject.toml, so every `make` command would reinstall the "
            "venv: run `make setup` once, then the tests",
            pytrace=False,
        )


@dataclass(frozen=True)
class Home:
    """A VIDSTORE_HOME with a UCF101-layout set in data/ucf101 and the outcome of `make features` on it."""

    root: Path
    features: Outcome

    @property
    def store(self) -> Path:
        return self.root / "data" / "features"


@pytest.fixture(scope="session")
def ucf_home(tmp_path_factory, venv_ready) -> Home:
    """One generated set and one stage-one run, shared by every test of the tier.

    WEIGHTS=random: the tier runs offline, where any set but the sample stops for want of
    ImageNet weights (the README's advice for that case).
    """
    root = tmp_path_factory.mktemp("acceptance-home")
    synth.make_ucf101_tree(root / "data" / "ucf101", UCF_TREE_CLASSES, **UCF_SETTINGS)
    return Home(root, run_make(root, "features", "DATASET=ucf101", "WEIGHTS=random", *SMALL))
