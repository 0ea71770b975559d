"""What both stages and the store share: the store's schema version and root, the modality
and precision names, and how a config dataclass becomes JSON.

Each stage owns its own settings: stages/extract/config.py (ExtractConfig, the feature-set
identity) and stages/train/config.py (TrainConfig).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MODALITIES = ("rgb", "audio")


def choice(default: str, choices: tuple[str, ...]) -> Any:
    """A config field whose value is one of `choices`: the command line offers exactly these
    (and shows `default`), so each list is written once, beside its field."""
    return dataclasses.field(default=default, metadata={"choices": choices})


def repo_root() -> Path:
    """Project root: where `data/` lives by default (env VIDSTORE_HOME overrides)."""
    return Path(os.environ.get("VIDSTORE_HOME", Path(__file__).resolve().parent.parent))


def store_root(features_root: Path | str | None = None) -> Path:
    """The feature store's root: an explicit --features-root, else $FEATURES_ROOT, else data/features."""
    if features_root:
        return Path(features_root)
    return Path(os.environ.get("FEATURES_ROOT") or repo_root() / "data" / "features")


def config_json(cfg) -> dict:
    """A config dataclass as JSON-ready values: paths as strings, tuples as lists."""
    plain = lambda v: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def store_dataset_name(dataset: str, data_dir: Path | str | None = None, name: str | None = None) -> str:
    """The dataset's directory in the store, the same for `features` and `train` given the same
    DATASET=, DATA_DIR= and NAME=: NAME= if given, folder/csv with DATA_DIR=X `<dataset>-<X's stem>`,
    else DATASET= itself."""
    if name:
        return name
    if dataset in ("folder", "csv") and data_dir:
        return f"{dataset}-{Path(data_dir).stem}"
    return dataset
