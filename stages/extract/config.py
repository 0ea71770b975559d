"""Stage one's settings and the feature-set identity.

The feature-set id is a hash of exactly the settings that change the stored numbers (the
family's `identity()`, extractors/); everything else (workers, batch size, devices,
scheduler) only changes how fast they are computed, so it never splits a feature set in two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import MODALITIES, PRECISIONS, choice, config_json, repo_root, store_dataset_name, store_root
from pipeline.errors import ConfigError
from pipeline.files import digest

from . import families

DATASETS = ("sample", "ucf101", "hmdb51", "folder", "csv")
AUDIO_FEATURES = ("logmel", "vggish")
AUDIO_DIM = 128  # both audio feature kinds: the log-mel summary (64 means + 64 stds) and a VGGish embedding
# Stage one's decoders, the default first: in-process PyAV, or an ffmpeg process per video.
DECODERS = ("pyav", "ffmpeg-cli")


@dataclass(frozen=True)
class ExtractConfig:
    """Stage one settings. Fields above the line change the numbers; below, only speed."""

    dataset: str = choice("sample", DATASETS)  # the adapter
    data_dir: Path | None = None  # dataset root (csv: the .csv file); default data/<dataset>
    features_root: Path | None = None  # store root; default data/features
    frames: int = 16  # T, frames per video (the cap in fps mode)
    fps: float | None = None  # sample at this rate (s^-1) instead of T uniform segment centres
    image_size: int | None = (
        None  # square centre crop fed to the backbone, pixels; default the model's (ResNet-50: 224)
    )
    resize: int | None = None  # shorter side before the crop, pixels; default the model's ratio (ResNet-50: 256/224)
    backbone: str = "resnet50"  # a model as a registered family writes it (families.py, `vidstore backbones`)
    weights: str = "imagenet"  # imagenet/pretrained (published) | random | a .pth/.safetensors state dict
    seed: int = 0  # seed of random weights
    precision: str = choice("auto", PRECISIONS)  # auto: fp16 on CUDA, fp32 on CPU
    modality: str = choice("rgb", MODALITIES)  # rgb: the pictures | audio: the sound around each sampled frame
    audio_features: str = choice("logmel", AUDIO_FEATURES)  # audio: log-mel summary (no weights) | VGGish
    audio_weights: str = "vggish"  # audio_features=vggish: vggish (the published checkpoint) | random | a .pth
    audio_window: float = 0.96  # audio: seconds of sound around each frame's timestamp
    decoder: str = choice(DECODERS[0], DECODERS)  # PyAV, or an ffmpeg process per video; pixels may differ
    # ---- speed only: never part of the identity ----
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    devices: tuple[str, ...] = ()  # one backbone worker per device, e.g. ("cuda:0", "cuda:1")
    workers: int = 0  # parallel decoders; 0 = all cores
    gpu_batch: int = 0  # frames (a video model's: clips) per backbone batch; 0 = the family's default
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
    def dataset_name(self) -> str:
        """Directory name of the dataset in the store (folder/csv: from the path)."""
        return store_dataset_name(self.dataset, self.data_dir, self.name)

    def replace(self, **changes) -> ExtractConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return config_json(self)


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
    if cfg.image_size is not None and cfg.image_size < 32:
        raise ConfigError(f"--size (SIZE=): the backbones need at least 32 px, got {cfg.image_size!r}")
    if cfg.resize is not None and cfg.image_size is not None and cfg.resize < cfg.image_size:
        raise ConfigError(f"--resize: shorter side {cfg.resize} is smaller than the crop {cfg.image_size}")
    families.validate("backbone", cfg.backbone)
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"--precision (PRECISION=): choose one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.decoder not in DECODERS:
        raise ConfigError(f"--decoder (DECODER=): choose one of {', '.join(DECODERS)}, got {cfg.decoder!r}")
    if cfg.weights not in ("imagenet", "pretrained", "random") and not Path(cfg.weights).is_file():
        raise ConfigError(
            f"--weights (WEIGHTS=): {cfg.weights!r} is neither 'imagenet'/'pretrained', 'random' nor an existing "
            ".pth or .safetensors file"
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
    resize: int | tuple[int, int]  # the shorter side, or the (H, W) a video model's frames are scaled to
    crop: str
    normalisation: dict
    precision: str  # resolved compute precision (fp32/fp16/bf16)
    decoder: str  # pyav | ffmpeg-cli: another FFmpeg build may give other pixels
    store_dtype: str = "float16"

    @property
    def id(self) -> str:
        weights_tag = self.weights.split(":")[0].replace("torchvision", "imagenet")
        t = self.sampling.get("frames") or self.sampling.get("max_frames")
        prefix = f"{self.backbone.replace(':', '-')}-{weights_tag}-t{t}-{self.image_size}px"
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
