"""`export`'s settings: ExportConfig, one field per option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import choice, option
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class ExportConfig:
    """What `make export` writes, and from which set; each field is one --option of the CLI."""

    FORMATS = ("npy", "actionformer")  # not a field: the choices of --format

    features: str | None = option(
        None,
        "The feature set to export: id, unique prefix, dataset/id or directory; several, comma-separated, "
        "one per modality (side by side).",
        shown="required",
    )
    out: Path | None = option(
        None,
        "The folder to write: one .npy per video (video id, extension .npy) and the JSON index.",
        shown="required",
    )
    format: str = choice(
        "npy",
        FORMATS,
        "npy: the arrays and videos.json (each video's rows, fps, duration, time spans, stride, clip length); "
        "actionformer: the arrays, ActionFormer's annotations.json (database: subset, duration, fps, annotations) "
        "and actionformer.yaml, the config lines to point ActionFormer at them.",
    )
    split: str = option("1", "The official split whose train and test sides name each video's subset.")
    features_root: Path | None = option(None, "The feature store's root.", shown="$FEATURES_ROOT, else data/features")

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("--features (FEATURES=): name the feature set to export (`make store-list` lists them)")
        if self.out is None:
            raise ConfigError("--out (OUT=): name the folder to export into, e.g. OUT=exports/thumos")
        if self.format not in self.FORMATS:
            raise ConfigError(f"--format (FORMAT=): choose one of {', '.join(self.FORMATS)}, got {self.format!r}")
