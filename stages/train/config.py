"""Stage two's settings: TrainConfig, one field per option of `train` and `compare`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import DEVICE_HELP, MODALITIES, PRECISIONS, choice, config_json, option, store_dataset_name
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Stage two settings (`make train`, `make compare`); each field is one --option of the CLI."""

    # Not fields (no annotation): the choices of --model, --modalities (in the order a joined
    # view sets features side by side), --fusion and --load.
    HEADS = ("mean", "lstm", "gru", "attention", "fusion", "tcn", "transformer")
    MODALITIES = MODALITIES  # the module's: stage one's --modality choices
    FUSIONS = ("early", "late", "gated")
    LOADS = ("auto", "memory", "stream")

    dataset: str = option("sample", "The dataset as `features` was given it, or a dataset's name in the store.")
    data_dir: Path | None = option(
        None, "folder / csv: the --data-dir `features` was given, which names the set in the store."
    )
    name: str | None = option(None, "The --name `features` was given: the dataset's name in the store.")
    features: str | None = option(
        None,
        "Feature-set id, unique prefix or directory; several, comma-separated, one per modality.",
        shown="the dataset's set (docs/store.md)",
    )
    features_root: Path | None = option(
        None,
        "The feature store's root: a directory, or s3://bucket/prefix.",
        shown="$FEATURES_ROOT, else data/features",
    )
    # () is rgb, or with FEATURES= the modalities of the sets it names.
    modalities: tuple[str, ...] = option(
        (),
        "Each modality's default set for --dataset, comma-separated: rgb, audio or rgb,audio.",
        shown="rgb (with --features: the sets' own)",
    )
    model: str = choice("lstm", HEADS, "The temporal head (docs/training.md).")
    # The default is the kind with the best mean test top-1 on the fusion test set (docs/modalities.md).
    fusion: str = choice(
        "gated",
        FUSIONS,
        "Several modalities: early (concatenated per step), late (an encoder per modality) or gated (late, "
        "through context gating); lstm, gru and attention, the other heads read the early input.",
    )
    modality_dropout: float = option(
        0.15,
        "Several modalities, in training: the chance that a video loses one of its modalities for a step "
        "(never its last), so the model copes with either stream missing.",
    )
    split: str = option("1", "Official split 1, 2 or 3, or all: each split, then their mean.")
    epochs: int = option(30, "Most passes over the training part; early stopping may end sooner.")
    lr: float = option(1e-3, "AdamW's peak learning rate, reached after the warmup.")
    batch: int = option(0, "Videos per step.", shown="auto: 256, fewer on small sets (at least 8 steps an epoch)")
    weight_decay: float = option(1e-2, "AdamW's decoupled weight decay, on weight matrices only.")
    warmup_epochs: float = option(1.0, "Linear warmup, then cosine decay to 0 over the remaining epochs.")
    label_smoothing: float = option(0.1, "Cross-entropy target smoothing.")
    dropout: float = option(0.5, "Before the classifier, and between recurrent, conv and attention layers.")
    clip_grad: float = option(1.0, "Largest global gradient norm; 0: no clipping.")
    hidden: int = option(512, "Recurrent state size, TCN channels or transformer width.")
    layers: int = option(2, "Recurrent layers, TCN blocks or transformer layers.")
    bidirectional: bool = option(
        False, "lstm, gru, attention, fusion: read the sequence both ways.", flag="--unidirectional"
    )
    proj: int = option(256, "Recurrent heads: a learned D -> PROJ projection before the first layer; 0: none.")
    val_fraction: float = option(
        0.1, "Share of the training split carved by group as the validation part (early stopping); 0: none."
    )
    test_fraction: float = option(0.2, "Share carved by group as the test part where the dataset has no test split.")
    patience: int = option(10, "Epochs without a validation gain before stopping; 0: never stop early.")
    seed: int = option(0, "Seeds initialisation, carving, shuffling and dropout.")
    device: str = option("auto", DEVICE_HELP)
    precision: str = choice(
        "auto", PRECISIONS, "auto: fp16 AMP on CUDA, bf16 autocast on CPUs with native bf16, else fp32."
    )
    load: str = choice(
        "auto",
        LOADS,
        "memory: the part whole in memory (on the GPU if any); stream: shard by shard; auto: memory when it fits.",
    )
    out: Path | None = option(
        None,
        "The run directory: config, metrics, predictions, plots, checkpoint; a failed run leaves a FAILED file there.",
        shown="runs/<time>-<model>-split<k>",
    )
    progress: bool = option(
        True, "A progress bar per epoch with loss and accuracy.", make="NO_PROGRESS", flag="--no-progress"
    )

    def __post_init__(self) -> None:
        if isinstance(self.modalities, str):  # "rgb,audio", as MODALITIES= and --modalities give it
            object.__setattr__(self, "modalities", tuple(m.strip() for m in self.modalities.split(",") if m.strip()))
        if self.model not in self.HEADS:
            raise ConfigError(f"--model (MODEL=): unknown head {self.model!r}; choose one of {', '.join(self.HEADS)}")
        validate_modalities(self)
        if not (self.split == "all" or (self.split.isdigit() and int(self.split) >= 1)):
            raise ConfigError(f"--split (SPLIT=): a split number (1, 2, 3) or all, got {self.split!r}")
        make_var = {"epochs": " (EPOCHS=)", "batch": " (BATCH=)"}  # the ones the Makefile passes
        for name, least in (("epochs", 1), ("hidden", 1), ("layers", 1), ("batch", 0), ("proj", 0), ("patience", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"--{name}{make_var.get(name, '')}: must be a whole number >= {least}, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr (LR=): must be > 0, got {self.lr!r}")
        for name in ("dropout", "label_smoothing", "val_fraction", "test_fraction", "modality_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("weight_decay", "warmup_epochs", "clip_grad"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision: choose auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.load not in self.LOADS:
            raise ConfigError(f"--load: choose auto, memory or stream, got {self.load!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"--device (DEVICE=): choose auto, cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def store_dataset(self) -> str:
        """The dataset's directory in the store: FEATURES_ROOT/<store_dataset>/."""
        return store_dataset_name(self.dataset, self.data_dir, self.name)

    @property
    def dataset_words(self) -> str:
        """The Make variables given that name the dataset, e.g. "DATASET=folder DATA_DIR=clips"."""
        given = (("DATASET", self.dataset), ("DATA_DIR", self.data_dir), ("NAME", self.name))
        return " ".join(f"{var}={value}" for var, value in given if value)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return config_json(self)


def validate_modalities(cfg: TrainConfig) -> None:
    """MODALITIES= and FUSION=: known names, each modality once."""
    unknown = [m for m in cfg.modalities if m not in cfg.MODALITIES]
    if unknown or len(set(cfg.modalities)) != len(cfg.modalities):
        raise ConfigError(
            f"--modalities (MODALITIES=): a comma-separated list of distinct modalities among "
            f"{', '.join(cfg.MODALITIES)}, got {','.join(cfg.modalities)!r}"
        )
    if cfg.fusion not in cfg.FUSIONS:
        raise ConfigError(f"--fusion (FUSION=): choose one of {', '.join(cfg.FUSIONS)}, got {cfg.fusion!r}")
