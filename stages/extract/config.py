"""Stage one's settings and the feature-set identity.

The feature-set id is a hash of exactly the settings that change the stored numbers (the
family's `identity()`, extractors/); everything else (workers, batch size, devices,
scheduler) only changes how fast they are computed, so it never splits a feature set in two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import (
    DEVICE_HELP,
    MODALITIES,
    PRECISIONS,
    choice,
    config_json,
    option,
    repo_root,
    store_dataset_name,
    store_root,
)
from pipeline.errors import ConfigError
from pipeline.files import digest

from . import families

DATASETS = ("sample", "ucf101", "hmdb51", "folder", "csv")
AUDIO_FEATURES = ("logmel", "vggish")
AUDIO_DIM = 128  # both audio feature kinds: the log-mel summary (64 means + 64 stds) and a VGGish embedding
# FRAMES=all: a dense set, every step of FPS= or STRIDE= over the whole video, each video its own row count.
FRAMES_ALL = "all"
# A dense set's rows per shard by default: 65536 ResNet-50 rows (2048 float16) are 256 MiB, so a
# reader holds a shard whole, and an hour at STRIDE=1 of 25-fps footage still fits in two shards.
DEFAULT_SHARD_ROWS = 65536
# Steps of a dense video decoded and embedded at a time: what bounds its memory, whatever its length.
DENSE_CHUNK = 64
# Stage one's decoders, the default first: in-process PyAV, or an ffmpeg process per video.
DECODERS = ("pyav", "ffmpeg-cli")


@dataclass(frozen=True)
class ExtractConfig:
    """Stage one settings, one field per option of `features` (and `demo`). Fields above the
    line change the numbers; below, only speed."""

    dataset: str = choice(
        "sample",
        DATASETS,
        "The dataset's layout: sample (generated with ffmpeg on first use), ucf101, hmdb51, "
        "folder (root/<class>/<video>) or csv (lines path[,label][,split][,group]; no label: unlabelled).",
    )
    data_dir: Path | None = option(
        None,
        "The dataset's root; for csv, the .csv file; for sample, an empty or new folder, or one holding the sample.",
        shown="data/<dataset>",
    )
    features_root: Path | None = option(
        None, "The feature store's root; share it between teams.", shown="$FEATURES_ROOT, else data/features"
    )
    frames: int | str = option(
        16,
        "T: the centres of T equal segments of each video; with --fps, the most frames; all: dense, every step "
        "of --fps or --stride from the start to the end of each video (its own row count).",
    )
    fps: float | None = option(
        None, "Sample at this rate (frames per second) instead, at most --frames (all: no cap).", shown="off"
    )
    stride: int | None = option(
        None,
        "With --frames all: one row every S source frames (a clip model: one clip of its K frames every S frames).",
        shown="off",
    )
    image_size: int | None = option(
        None,
        "Side of the square centre crop fed to the backbone, px.",
        name="size",
        make="SIZE",
        shown="the model's own (ResNet-50: 224)",
    )
    resize: int | None = option(
        None,
        "Shorter side the frames are scaled to before the crop, px.",
        shown="the model's ratio (ResNet-50: size*256/224; a video model's own H x W, R(2+1)D: 128 x 171 at 112)",
    )
    backbone: str = option(
        "resnet50", "The picture model, as its library names it, in a registered family (`vidstore backbones`)."
    )
    weights: str = option(
        "imagenet",
        "The backbone's weights: imagenet or pretrained (the published ones, from the library's cache, "
        "downloaded once), random (seeded, named in the id), or a local .pth/.safetensors state dict.",
    )
    seed: int = option(0, "Seed of random weights (--weights random, --audio-weights random).")
    precision: str = choice("auto", PRECISIONS, "The backbone's precision; auto: fp16 on CUDA, fp32 on a CPU.")
    modality: str = choice(
        "rgb",
        MODALITIES,
        "rgb: the pictures, through --backbone; audio: the sound around each sampled frame, through --audio-features.",
    )
    audio_features: str = choice(
        "logmel",
        AUDIO_FEATURES,
        "Audio sets: logmel (per-band mean and std of a log-mel window, no weights) or vggish (an AudioSet embedding).",
    )
    audio_weights: str = option(
        "vggish", "Audio sets with vggish: vggish (the published checkpoint), random, or a local .pth state dict."
    )
    audio_window: float = option(0.96, "Audio sets: seconds of sound centred on each sampled frame (vggish: 0.96).")
    decoder: str = choice(
        DECODERS[0],
        DECODERS,
        "pyav: PyAV in a decoder process per decoding thread; ffmpeg-cli: an ffmpeg process per video. "
        "Part of the feature-set id: another FFmpeg build may give other pixels.",
    )
    # ---- speed only: never part of the identity ----
    device: str = option("auto", DEVICE_HELP)
    devices: tuple[str, ...] = option(
        (), "One backbone process per device, comma-separated (cuda:0,cuda:1).", shown="off"
    )
    workers: int = option(0, "Parallel decoders.", shown="all cores")
    gpu_batch: int = option(
        0,
        "Items per backbone forward: frames, or a video model's clips.",
        shown="the backbone's: 32 on a CPU; on CUDA ResNet-50 512, other image models 256; a video model "
        "as many clips as hold ResNet-50's batch of 224 px frames",
    )
    shard_size: int = option(256, "Videos per shard file.")
    shard_rows: int = option(
        DEFAULT_SHARD_ROWS,
        "Dense sets (--frames all): most rows per shard file, as well as --shard-size videos (a longer video "
        "gets a shard of its own).",
    )
    timeout: float = option(
        60.0,
        "Seconds allowed to one video (pyav; with --frames all, to each chunk of its steps) or to one "
        "ffmpeg/ffprobe call (ffmpeg-cli).",
    )
    compile: bool = option(False, "torch.compile the backbone; pays off only on large sets.", flag="--no-compile")
    scheduler: str | None = option(
        None, "Run on Dask: local:N (N worker processes) or tcp://host:8786.", shown="off (this process)"
    )
    name: str | None = option(
        None, "The dataset's name in the store.", shown="from --dataset and --data-dir (folder-<dir>, csv-<file>)"
    )
    retry_failures: bool = option(
        False,
        "Decode again the videos the set lists as failed (fixed files, a timeout under load); their shards "
        "are rewritten with the other videos copied.",
        flag="",
    )

    def __post_init__(self) -> None:
        validate_extract(self)

    # -- derived values --------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.data_dir) if self.data_dir else repo_root() / "data" / self.dataset

    @property
    def dense(self) -> bool:
        """FRAMES=all: every step of FPS= or STRIDE= over the whole video, stored ragged."""
        return self.frames == FRAMES_ALL

    @property
    def steps(self) -> int:
        """Steps one decode hands the model at most: T, or a chunk of DENSE_CHUNK steps of a dense video."""
        if isinstance(self.frames, int):
            return self.frames
        return DENSE_CHUNK

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
            "MODALITY=audio runs in one process with WORKERS= decoder threads"
        )
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"--dataset: unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    validate_sampling(cfg)
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
    if not isinstance(cfg.shard_rows, int) or cfg.shard_rows < 1:
        raise ConfigError(f"--shard-rows (SHARD_ROWS=): must be >= 1 row, got {cfg.shard_rows!r}")
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


def validate_sampling(cfg: ExtractConfig) -> None:
    """FRAMES= a positive whole number or all; FPS= positive; STRIDE= only with FRAMES=all, and
    FRAMES=all with exactly one of FPS= and STRIDE=."""
    if cfg.frames != FRAMES_ALL and (isinstance(cfg.frames, bool) or not isinstance(cfg.frames, int) or cfg.frames < 1):
        raise ConfigError(
            f"--frames (FRAMES=): must be a positive whole number of frames or {FRAMES_ALL!r}, got {cfg.frames!r}"
        )
    if cfg.fps is not None and not cfg.fps > 0:
        raise ConfigError(f"--fps (FPS=): must be a positive rate in frames per second, got {cfg.fps!r}")
    if cfg.stride is not None and (isinstance(cfg.stride, bool) or not isinstance(cfg.stride, int) or cfg.stride < 1):
        raise ConfigError(f"--stride (STRIDE=): must be a positive whole number of source frames, got {cfg.stride!r}")
    if cfg.stride is not None and not cfg.dense:
        raise ConfigError(
            f"--stride (STRIDE=) {cfg.stride} samples the whole video: it needs --frames all (FRAMES=all), "
            f"got FRAMES={cfg.frames}"
        )
    if cfg.dense and cfg.decoder != "pyav":
        raise ConfigError(
            f"--frames all (FRAMES=all) decodes with --decoder pyav (DECODER=pyav); DECODER={cfg.decoder} "
            "decodes fixed-T sets"
        )
    if cfg.dense and (cfg.fps is None) == (cfg.stride is None):
        given = "both" if cfg.fps is not None else "neither"
        raise ConfigError(
            f"--frames all (FRAMES=all) needs exactly one of --fps (FPS=R: one row every 1/R s) and "
            f"--stride (STRIDE=S: one row every S source frames); {given} given"
        )


def steps_tag(sampling: dict) -> str:
    """How many steps an id says a video has: t16 (T, or FPS='s cap), or all (a dense set)."""
    if sampling["mode"] == "dense":
        return FRAMES_ALL
    return f"t{sampling.get('frames') or sampling.get('max_frames')}"


def rate_tag(sampling: dict) -> str:
    """The id's rate suffix: -2fps (FPS=), -s4 (STRIDE=), or nothing (T uniform segments)."""
    if sampling.get("fps"):
        return f"-{sampling['fps']:g}fps"
    return f"-s{sampling['stride']}" if sampling.get("stride") else ""


@dataclass(frozen=True)
class FeatureIdentity:
    """Everything that changes the stored numbers; its hash is the feature-set id."""

    schema_version: int
    dataset: str
    videos_sha256: str  # hash of the sorted video ids: another listing is another feature set
    backbone: str
    weights: str  # e.g. "torchvision:IMAGENET1K_V2", "sha256:<file hash>", "random:seed0"
    # {"mode": "uniform", "frames": 16}, {"mode": "fps", "fps": 2.0, "max_frames": 16}, or a dense
    # set's {"mode": "dense", "fps": 1.0} or {"mode": "dense", "stride": 4}
    sampling: dict
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
        steps, rate = steps_tag(self.sampling), rate_tag(self.sampling)
        prefix = f"{self.backbone.replace(':', '-')}-{weights_tag}-{steps}-{self.image_size}px{rate}"
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
        prefix = f"audio-{kind}-{steps_tag(self.sampling)}{rate_tag(self.sampling)}"
        return f"{prefix}-{digest(dataclasses.asdict(self))[:12]}"
