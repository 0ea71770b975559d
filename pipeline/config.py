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
# --device of every command: one help text for the option each config has.
DEVICE_HELP = "Where the model runs: auto (CUDA when there is one), cpu, cuda or cuda:N."


def option(
    default: Any,
    help: str,
    *,
    make: str | None = None,
    flag: str | None = None,
    name: str | None = None,
    shown: str | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A config field that is one command-line option, with everything said about it written
    here once: the command line's help, the docs' option tables and the Makefile's variable list
    are made from it (stages/cli.py, stages/cli_docs.py).

    help: what it does, one sentence or two, without the default; make: its Make variable
    (default: the field's name in capitals); flag: a boolean's off switch (`--no-compile`),
    or "" for a plain flag that is only turned on; name: the option when it is not the
    field's name (`--size` for image_size); shown: the default in words where the value is
    a stand-in (0 or None for "the model's own"); choices: every value it takes.
    """
    meta = {"help": help, "make": make, "flag": flag, "name": name, "shown": shown, "choices": choices}
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items() if v is not None})


def choice(default: str, choices: tuple[str, ...], help: str, **kw: Any) -> Any:
    """A config option whose value is one of `choices`: the command line offers exactly these
    (and shows `default`), so each list is written once, beside its field."""
    return option(default, help, choices=choices, **kw)


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
