"""`make localize`'s settings: LocalizeConfig, one field per option of `localize`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import DEVICE_HELP, choice, config_json, option
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class LocalizeConfig:
    """Temporal action localization (`make localize`); each field is one --option of the CLI."""

    HEADS = ("actionformer", "tagger")  # not a field: --model's choices

    features: str | None = option(
        None,
        "Dense feature set (FRAMES=all): id, unique prefix or directory; several, comma-separated, one per "
        "modality (a picture and a sound set of the same videos).",
        shown="the untrimmed sample's ResNet-50 FPS=1 FRAMES=all set",
    )
    annotations: Path | None = option(
        None,
        "ActivityNet-style JSON: each video's subset and its segments with labels (docs/localization.md).",
        shown="the untrimmed sample's",
    )
    features_root: Path | None = option(None, "The feature store's root.", shown="$FEATURES_ROOT, else data/features")
    train_subset: str = option("training", "The annotations' subset trained on (THUMOS14 as ActionFormer: validation).")
    eval_subset: str = option("validation", "The annotations' subset scored (THUMOS14 as ActionFormer: test).")
    model: str = choice(
        "actionformer",
        HEADS,
        "actionformer: a temporal feature pyramid with per-step classes and distances to start and end, soft-NMS; "
        "tagger: per-step classes alone, segments from thresholded runs (the baseline).",
    )
    epochs: int = option(40, "Passes over the training videos.")
    lr: float = option(1e-3, "AdamW's peak learning rate, reached after the warmup.")
    batch: int = option(4, "Videos per step (padded to the longest, with a mask; batches of similar lengths).")
    weight_decay: float = option(0.05, "AdamW's decoupled weight decay, on weight matrices only.")
    warmup_epochs: float = option(2.0, "Linear warmup, then cosine decay to 0 over the remaining epochs.")
    hidden: int = option(128, "Width of the convolutions and of the pyramid.")
    levels: int = option(4, "Pyramid levels (strides 1, 2, 4, ...) of the actionformer head.")
    dropout: float = option(0.1, "Dropout in the heads' layers.")
    modality_dropout: float = option(
        0.15, "Several modalities, in training: the chance that a video loses one of them for a step (never its last)."
    )
    clip_grad: float = option(1.0, "Largest global gradient norm; 0: no clipping.")
    max_segments: int = option(100, "Most segments kept per video after soft-NMS.")
    tag_threshold: float = option(0.5, "tagger: a step belongs to a class when its score is above this.")
    seed: int = option(0, "Seeds initialisation, shuffling and dropout.")
    device: str = option("auto", DEVICE_HELP)
    out: Path | None = option(
        None,
        "The run directory: config, metrics, predictions, a picture per scored video, checkpoint; a failed run "
        "leaves a FAILED file there.",
        shown="runs/<time>-localize-<model>",
    )
    progress: bool = option(True, "A progress bar per epoch with the loss.", make="NO_PROGRESS", flag="--no-progress")

    def __post_init__(self) -> None:
        if self.model not in self.HEADS:
            raise ConfigError(f"--model (MODEL=): unknown head {self.model!r}; choose one of {', '.join(self.HEADS)}")
        for name, least in (("epochs", 1), ("batch", 1), ("hidden", 8), ("levels", 1), ("max_segments", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ConfigError(
                    f"--{name.replace('_', '-')} ({name.upper()}=): a whole number >= {least}, got {value!r}"
                )
        if not self.lr > 0:
            raise ConfigError(f"--lr (LR=): must be > 0, got {self.lr!r}")
        for name in ("dropout", "modality_dropout", "tag_threshold"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} ({name.upper()}=): in [0, 1), got {getattr(self, name)!r}"
                )
        for name in ("weight_decay", "warmup_epochs", "clip_grad"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"--{name.replace('_', '-')} ({name.upper()}=): must be >= 0, got {getattr(self, name)!r}"
                )
        if bool(self.features) != bool(self.annotations):
            given, lacking = ("features", "annotations") if self.features else ("annotations", "features")
            raise ConfigError(
                f"--{lacking} ({lacking.upper()}=): needed with --{given} ({given.upper()}=); "
                f"give both, or neither for the generated untrimmed sample"
            )
        if self.train_subset.lower() == self.eval_subset.lower():
            raise ConfigError(
                f"--train-subset (TRAIN_SUBSET=) and --eval-subset (EVAL_SUBSET=) name the same subset "
                f"{self.train_subset!r}: the videos scored must not be trained on"
            )
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"--device (DEVICE=): choose auto, cpu, cuda or cuda:N, got {self.device!r}")

    def replace(self, **changes: Any) -> LocalizeConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return config_json(self)
