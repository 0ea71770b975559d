"""Frozen configs for both stages, and the feature-set identity.

The feature-set id is a hash of exactly the settings that change the stored numbers
(`ExtractConfig.identity()`); everything else (workers, batch size, devices, scheduler)
only changes how fast they are computed, so it never splits a feature set in two.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .files import digest

SCHEMA_VERSION = 1
DATASETS = ("sample", "ucf101", "hmdb51", "folder", "csv")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MODALITIES = ("rgb", "audio")
AUDIO_FEATURES = ("logmel", "vggish")
AUDIO_DIM = 128  # both audio feature kinds: the log-mel summary (64 means + 64 stds) and a VGGish embedding
# Stage one's decoders, the default first: in-process PyAV, or an ffmpeg process per video.
DECODERS = ("pyav", "ffmpeg-cli")
# ImageNet statistics, applied on the device to uint8 frames.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 2048


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


@dataclass(frozen=True)
class ExtractConfig:
    """Stage one settings. Fields above the line change the numbers; below, only speed."""

    dataset: str = "sample"  # adapter: sample | ucf101 | hmdb51 | folder | csv
    data_dir: Path | None = None  # dataset root (csv: the .csv file); default data/<dataset>
    features_root: Path | None = None  # store root; default data/features
    frames: int = 16  # T, frames per video (the cap in fps mode)
    fps: float | None = None  # sample at this rate (s^-1) instead of T uniform segment centres
    image_size: int = 224  # square centre crop fed to the backbone, pixels
    resize: int | None = None  # shorter side before the crop, pixels; default image_size*256/224
    backbone: str = "resnet50"
    weights: str = "imagenet"  # imagenet | random | path to a .pth state dict
    seed: int = 0  # seed of random weights
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    modality: str = "rgb"  # rgb: ResNet-50 on the pictures | audio: the sound around each sampled frame
    audio_features: str = "logmel"  # audio: logmel (log-mel summary, no weights) | vggish (an embedding)
    audio_weights: str = "vggish"  # audio_features=vggish: vggish (the published checkpoint) | random | a .pth
    audio_window: float = 0.96  # audio: seconds of sound around each frame's timestamp
    decoder: str = DECODERS[0]  # pyav (in-process) | ffmpeg-cli (a process per video); pixels may differ
    # ---- speed only: never part of the identity ----
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    devices: tuple[str, ...] = ()  # one backbone worker per device, e.g. ("cuda:0", "cuda:1")
    workers: int = 0  # parallel decoders; 0 = all cores
    gpu_batch: int = 0  # frames per backbone batch; 0 = 512 on CUDA, 32 on CPU
    shard_size: int = 256  # videos per shard
    timeout: float = 60.0  # seconds allowed to one video (pyav) or to one ffmpeg/ffprobe call (ffmpeg-cli)
    compile: bool = False  # torch.compile the backbone (pays off only for large datasets)
    scheduler: str | None = None  # None (this machine) | local:N | tcp://host:port (Dask)
    name: str | None = None  # dataset name in the store; default derived from dataset/data_dir
    retry_failures: bool = False  # decode again the videos committed shards list as failed

    def __post_init__(self) -> None:
        validate_extract(self)

    # -- derived values --------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.data_dir) if self.data_dir else repo_root() / "data" / self.dataset

    @property
    def store_root(self) -> Path:
        return store_root(self.features_root)

    @property
    def resize_to(self) -> int:
        return self.resize or round(self.image_size * 256 / 224)

    @property
    def dataset_name(self) -> str:
        """Directory name of the dataset in the store (folder/csv: from the path)."""
        return store_dataset_name(self.dataset, self.data_dir, self.name)

    def replace(self, **changes) -> ExtractConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return config_json(self)


def store_dataset_name(dataset: str, data_dir: Path | str | None = None, name: str | None = None) -> str:
    """The dataset's directory in the store, the same for `features` and `train` given the same
    DATASET=, DATA_DIR= and NAME=: NAME= if given, folder/csv with DATA_DIR=X `<dataset>-<X's stem>`,
    else DATASET= itself."""
    if name:
        return name
    if dataset in ("folder", "csv") and data_dir:
        return f"{dataset}-{Path(data_dir).stem}"
    return dataset


def validate_extract(cfg: ExtractConfig) -> None:
    """Reject bad settings before any work starts; each message names the option."""
    if cfg.modality not in MODALITIES:
        raise ConfigError(f"--modality (MODALITY=): choose one of {', '.join(MODALITIES)}, got {cfg.modality!r}")
    if cfg.audio_features not in AUDIO_FEATURES:
        raise ConfigError(
            f"--audio-features (AUDIO_FEATURES=): choose one of {', '.join(AUDIO_FEATURES)}, got {cfg.audio_features!r}"
        )
    if not 0.1 <= cfg.audio_window <= 10:
        raise ConfigError(f"--audio-window: seconds of sound per step, between 0.1 and 10, got {cfg.audio_window!r}")
    if cfg.modality == "audio" and cfg.audio_features == "vggish" and round(cfg.audio_window * 100) != 96:
        raise ConfigError(f"--audio-window {cfg.audio_window}: a VGGish embedding takes exactly 0.96 s of sound")
    if cfg.modality == "audio" and (cfg.scheduler or len(cfg.devices) > 1):
        raise ConfigError(
            "--scheduler / --devices (SCHEDULER=, DEVICES=) spread the picture modality's backbone; "
            "MODALITY=audio runs in one process with WORKERS= decoder threads (about 45 CPU ms a video)"
        )
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"--dataset: unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    if not isinstance(cfg.frames, int) or cfg.frames < 1:
        raise ConfigError(f"--frames (FRAMES=): must be a positive whole number of frames, got {cfg.frames!r}")
    if cfg.fps is not None and not cfg.fps > 0:
        raise ConfigError(f"--fps (FPS=): must be a positive rate in frames per second, got {cfg.fps!r}")
    if cfg.image_size < 32:
        raise ConfigError(f"--size (SIZE=): ResNet-50 needs at least 32 px, got {cfg.image_size!r}")
    if cfg.resize is not None and cfg.resize < cfg.image_size:
        raise ConfigError(f"--resize: shorter side {cfg.resize} is smaller than the crop {cfg.image_size}")
    if cfg.backbone != "resnet50":
        raise ConfigError(f"--backbone: only 'resnet50' is available, got {cfg.backbone!r}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"--precision (PRECISION=): choose one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.decoder not in DECODERS:
        raise ConfigError(f"--decoder (DECODER=): choose one of {', '.join(DECODERS)}, got {cfg.decoder!r}")
    if cfg.weights not in ("imagenet", "random") and not Path(cfg.weights).is_file():
        raise ConfigError(
            f"--weights (WEIGHTS=): {cfg.weights!r} is neither 'imagenet', 'random' nor an existing .pth file"
        )
    for name in ("workers", "gpu_batch"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(cfg, name)!r}")
    if cfg.shard_size < 1:
        raise ConfigError(f"--shard-size: must be >= 1 video, got {cfg.shard_size!r}")
    if not cfg.timeout > 0:
        raise ConfigError(f"--timeout: must be > 0 seconds, got {cfg.timeout!r}")
    if cfg.dataset == "csv" and not cfg.data_dir:
        raise ConfigError("--data-dir (DATA_DIR=): the csv dataset needs the path of its .csv file")
    local_n = (cfg.scheduler or "").removeprefix("local:")
    if cfg.scheduler and not (
        cfg.scheduler.startswith(("tcp://", "tls://")) or (local_n.isdigit() and int(local_n) >= 1)
    ):
        raise ConfigError(
            f"--scheduler (SCHEDULER=): expected local:N (N >= 1 worker processes) or tcp://host:port, got {cfg.scheduler!r}"
        )
    for dev in cfg.devices:
        if not (dev == "cpu" or dev.startswith("cuda")):
            raise ConfigError(f"--devices (DEVICES=): {dev!r} is not 'cpu' or 'cuda:N'")
    if cfg.scheduler and len(cfg.devices) > 1:
        raise ConfigError(
            f"--devices (DEVICES=) {','.join(cfg.devices)} cannot be combined with --scheduler: on Dask, run one worker "
            f"per GPU instead (`dask cuda worker`, or CUDA_VISIBLE_DEVICES=k dask worker ... --resources GPU=1)"
        )


@dataclass(frozen=True)
class FeatureIdentity:
    """Everything that changes the stored numbers; its hash is the feature-set id."""

    schema_version: int
    dataset: str
    videos_sha256: str  # hash of the sorted video ids: another listing is another feature set
    backbone: str
    weights: str  # e.g. "torchvision:IMAGENET1K_V2", "sha256:<file hash>", "random:seed0"
    sampling: dict  # {"mode": "uniform", "frames": 16} or {"mode": "fps", "fps": 2.0, "max_frames": 16}
    image_size: int
    resize: int
    crop: str
    normalisation: dict
    precision: str  # resolved compute precision (fp32/fp16/bf16)
    decoder: str  # pyav | ffmpeg-cli: another FFmpeg build may give other pixels
    store_dtype: str = "float16"

    @property
    def id(self) -> str:
        weights_tag = self.weights.split(":")[0].replace("torchvision", "imagenet")
        t = self.sampling.get("frames") or self.sampling.get("max_frames")
        prefix = f"{self.backbone}-{weights_tag}-t{t}-{self.image_size}px"
        if self.sampling["mode"] == "fps":
            prefix += f"-{self.sampling['fps']:g}fps"
        return f"{prefix}-{digest(dataclasses.asdict(self))[:12]}"


@dataclass(frozen=True)
class AudioIdentity:
    """Everything that changes the stored numbers of an audio feature set; its hash is the id.

    timestamps: how the picture times the sound is centred on are taken (the picture
    decoder: step t of an audio set describes the sound around step t of a visual set made
    with the same sampling and decoder).
    """

    schema_version: int
    dataset: str
    videos_sha256: str
    sampling: dict
    timestamps: str  # e.g. "decoder:ffmpeg-cli"
    features: str  # logmel | vggish
    weights: str | None  # vggish: "torchvggish:vggish-10086976", "sha256:<file hash>", "random:seed0"
    front_end: dict  # sample rate, window, hop, FFT, mel bands and range, log offset
    window_s: float
    modality: str = "audio"
    store_dtype: str = "float16"

    @property
    def id(self) -> str:
        kind = self.features
        if self.features != "logmel":
            assert self.weights is not None, "a learned audio embedding names its weights"
            kind = f"{self.features}-{self.weights.split(':')[0]}"
        t = self.sampling.get("frames") or self.sampling.get("max_frames")
        prefix = f"audio-{kind}-t{t}" + (f"-{self.sampling['fps']:g}fps" if self.sampling["mode"] == "fps" else "")
        return f"{prefix}-{digest(dataclasses.asdict(self))[:12]}"


@dataclass(frozen=True)
class TrainConfig:
    """Stage two settings (`make train`, `make compare`); each field is one --option of the CLI."""

    # Not fields (no annotation): the choices of --model, --modalities (in the order a joined
    # view sets features side by side) and --fusion.
    HEADS = ("mean", "lstm", "gru", "attention", "fusion", "tcn", "transformer")
    MODALITIES = MODALITIES  # the module's: stage one's --modality choices
    FUSIONS = ("early", "late", "gated")

    dataset: str = "sample"  # DATASET= as given to `features`, or a dataset name in the store
    # folder / csv: DATA_DIR= as given to `features`, which names the set in the store (store_dataset_name)
    data_dir: Path | None = None
    name: str | None = None  # NAME= as given to `features`: the dataset's name in the store
    features: str | None = None  # feature-set id(s) or path(s), comma-separated; default: the dataset's set
    features_root: Path | None = None  # store root; default data/features
    # Each modality's default set for DATASET= ("rgb,audio" is accepted too); () = rgb, or with
    # FEATURES= the modalities of the sets it names.
    modalities: tuple[str, ...] = ()
    model: str = "lstm"  # mean | lstm | gru | attention | fusion | tcn | transformer
    # Several modalities: early (per-step concatenation, one encoder) | late (one encoder per
    # modality, representations concatenated) | gated (late, through context gating). lstm, gru and
    # attention only; the other heads read the early input. The default had the best test top-1
    # on the fusion test set (tests/train/test_fusion.py), mean of 10 runs: gated 0.978, late
    # 0.966, early 0.963 (each modality alone: rgb 0.44, audio 0.48; chance 0.25).
    fusion: str = "gated"
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
    precision: str = (
        "auto"  # auto: fp16 AMP on CUDA, bf16 autocast on CPUs with native bf16, else fp32 | fp32 | bf16 | fp16
    )
    load: str = "auto"  # auto: whole in memory (on the GPU if any) when it fits, else stream | memory | stream
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
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--precision: choose auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.load not in ("auto", "memory", "stream"):
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

    def replace(self, **changes) -> TrainConfig:
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
