"""Stage two's settings: TrainConfig, one field per option of `train` and `compare`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import MODALITIES, PRECISIONS, choice, config_json, store_dataset_name
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

    dataset: str = "sample"  # DATASET= as given to `features`, or a dataset name in the store
    # folder / csv: DATA_DIR= as given to `features`, which names the set in the store (store_dataset_name)
    data_dir: Path | None = None
    name: str | None = None  # NAME= as given to `features`: the dataset's name in the store
    features: str | None = None  # feature-set id(s) or path(s), comma-separated; default: the dataset's set
    features_root: Path | None = None  # store root; default data/features
    # Each modality's default set for DATASET= ("rgb,audio" is accepted too); () = rgb, or with
    # FEATURES= the modalities of the sets it names.
    modalities: tuple[str, ...] = ()
    model: str = choice("lstm", HEADS)
    # Several modalities: early (per-step concatenation, one encoder) | late (one encoder per
    # modality, representations concatenated) | gated (late, through context gating). lstm, gru and
    # attention only; the other heads read the early input. The default had the best test top-1
    # on the fusion test set (tests/train/test_fusion.py), mean of 10 runs: gated 0.978, late
    # 0.966, early 0.963 (each modality alone: rgb 0.44, audio 0.48; chance 0.25).
    fusion: str = choice("gated", FUSIONS)
    # Several modalities, training only: the chance that a video loses one of its modalities
    # (never its last) for a step, so the model copes with either stream missing.
    modality_dropout: float = 0.15
    split: str = "1"  # official split 1 | 2 | 3, or all: train and report each, and their mean
    epochs: int = 30  # most passes over the training part (early stopping may end sooner)
    lr: float = 1e-3  # AdamW peak learning rate, reached after the warmup
    batch: int = 0  # videos per step; 0 = auto: 256, fewer on small sets (at least 8 steps an epoch)
    weight_decay: float = 1e-2  # AdamW decoupled weight decay, on weight matrices only
    warmup_epochs: float = 1.0  # linear warmup, then cosine decay to 0 over the remaining epochs
    label_smoothing: float = 0.1  # cross-entropy target smoothing
    dropout: float = 0.5  # before the classifier, and between recurrent / conv / attention layers
    clip_grad: float = 1.0  # max global gradient norm; 0 = no clipping
    hidden: int = 512  # recurrent state size / TCN channels / transformer width
    layers: int = 2  # recurrent layers / TCN blocks / transformer layers
    bidirectional: bool = False  # lstm, gru, attention, fusion: read the sequence both ways
    proj: int = 256  # recurrent heads: learned linear projection D -> proj before the first layer; 0 = none
    val_fraction: float = 0.1  # share of the training split carved by group for early stopping; 0 = none
    test_fraction: float = 0.2  # share carved by group as the test part when the dataset has no test split
    patience: int = 10  # epochs without validation improvement before stopping; 0 = never stop early
    seed: int = 0  # seeds initialisation, carving, shuffling and dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: fp16 AMP on CUDA, bf16 autocast on CPUs with native bf16, else fp32
    precision: str = choice("auto", PRECISIONS)
    load: str = choice("auto", LOADS)  # auto: whole in memory (on the GPU if any) when it fits, else stream
    out: Path | None = None  # run directory; default runs/<YYYYmmdd-HHMMSS>-<model>-split<split>
    progress: bool = True  # a tqdm bar per epoch with loss and accuracy

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
