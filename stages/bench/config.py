"""`make bench`'s settings: BenchConfig, with the CPU and CUDA defaults."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import DEVICE_HELP, PRECISIONS, choice, option, repo_root
from pipeline.errors import ConfigError
from stages.extract.config import DECODERS, ExtractConfig

if TYPE_CHECKING:
    from stages.extract.extractors import Preprocessing

READERS = ("auto", "opencv", "ffmpeg")
CPU_SIZE = 112  # the bench's crop on a CPU, px, where the backbone takes it
SEED_BACKBONE = "resnet50"  # the seed method's model (baseline.py), whatever BACKBONE= the bench times


class BenchError(RuntimeError):
    """A part of the benchmark could not be measured; the others are written all the same."""


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark settings; 0 means "the default for this device" (CPU / CUDA)."""

    clips: int = option(0, "Clips timed end to end and by the decode ceiling.", shown="8 on a CPU, 2048 on CUDA")
    seconds: float = option(7.0, "Length of each generated clip, s (UCF101's are about 7 s).")
    workers: int = option(0, "Stage one's decoders, and the threads each decoder is timed with.", shown="all cores")
    decoder: str = choice(DECODERS[0], DECODERS, "Stage one's decoder end to end; every decoder is also timed alone.")
    device: str = option("auto", DEVICE_HELP)
    backbone: str = option(
        ExtractConfig.backbone,
        "Stage one's backbone, as `features` takes it, in a registered family (`vidstore backbones`).",
    )
    weights: str = option(
        "random",
        "Its weights: random (seeded: speed does not depend on their values, and nothing downloads), "
        "pretrained (the published ones, from the library's cache), or a local state-dict file.",
    )
    size: int = option(
        0,
        "Crop fed to the backbone, px.",
        shown="112 on a CPU where the model takes it (to finish in minutes), else the model's own",
    )
    frames: int = option(16, "T, frames sampled per video.")
    gpu_batch: int = option(
        0, "Items per backbone forward (frames; a clip model's clips).", shown="stage one's for the backbone"
    )
    precision: str = choice("auto", PRECISIONS, "Stage one's precision; auto: fp16 on CUDA, fp32 on a CPU.")
    compile: bool = option(
        False, "Also measure torch.compile: compile time, speed-up, break-even.", flag="--no-compile"
    )
    baseline_clips: int = option(0, "Clips run through the seed method.", shown="2 on a CPU, 16 on CUDA")
    audio_clips: int = option(
        0, "Clips with a sound track timed as an audio set.", shown="all of --clips on a CPU, 256 on CUDA"
    )
    dense_seconds: float = option(
        600.0, "Length of the long video timed as a dense set (FRAMES=all FPS=1), s; 0: not timed."
    )
    baseline_reader: str = choice(
        "auto", READERS, "How the seed method reads every frame; auto: OpenCV if installed, else ffmpeg."
    )
    backbone_seconds: float = option(0.0, "How long to time the backbone alone, s.", shown="6 on a CPU, 10 on CUDA")
    rounds: int = option(2, "Alternating rounds of ceiling, end to end and baseline; the best of each counts.")
    train_epochs: int = option(50, "LSTM epochs timed for stage two; fewer are scaled to 50 and labelled EXTRAPOLATED.")
    skip_train: bool = option(False, "Do not time stage two.", flag="")
    devices: str = option(
        "",
        "Also time end to end with one backbone process per device, comma-separated (cuda:0,cuda:0).",
        make="BENCH_DEVICES",
        shown="off",
    )
    clips_dir: Path | None = option(None, "Where the clips are generated and reused.", shown="bench/clips")
    out: Path | None = option(None, "The results file.", make="BENCH_OUT", shown="bench/results.json")

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"--rounds: must be >= 1, got {self.rounds!r}")
        for name in ("clips", "workers", "size", "gpu_batch", "baseline_clips", "audio_clips", "train_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')}: must be >= 0, got {getattr(self, name)!r}")
        if self.size and self.size < 32:
            raise ConfigError(f"--size (SIZE=): the backbones need at least 32 px, got {self.size}")
        if not self.seconds * 25 >= 3:
            raise ConfigError(f"--seconds: a clip needs at least 3 frames at 25 fps, got {self.seconds!r} s")
        if self.frames < 1:
            raise ConfigError(f"--frames: must be >= 1, got {self.frames!r}")
        if self.dense_seconds < 0:
            raise ConfigError(f"--dense-seconds: must be >= 0 (0: not timed), got {self.dense_seconds!r}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"--decoder (DECODER=): choose one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.baseline_reader not in READERS:
            raise ConfigError(f"--baseline-reader: choose one of {', '.join(READERS)}, got {self.baseline_reader!r}")

    def resolved(self) -> BenchConfig:
        """The same settings with every 0 replaced by this machine's default."""
        from pipeline.devices import resolve_device  # torch: not loaded by the command line's start

        cuda = resolve_device(self.device).type == "cuda"
        pick = lambda value, cpu, gpu: value or (gpu if cuda else cpu)
        size = self.size or default_size(self.backbone, cuda)
        return dataclasses.replace(
            self,
            clips=pick(self.clips, 8, 2048),
            workers=self.workers or os.cpu_count() or 1,
            size=size,
            gpu_batch=self.gpu_batch or own_batch(self.backbone, size, cuda),
            baseline_clips=pick(self.baseline_clips, 2, 16),
            audio_clips=self.audio_clips or (min(256, self.clips or 2048) if cuda else self.clips or 8),
            backbone_seconds=pick(self.backbone_seconds, 6.0, 10.0),
            clips_dir=Path(self.clips_dir or repo_root() / "bench" / "clips"),
            out=Path(self.out or repo_root() / "bench" / "results.json"),
        )

    def extract_config(self, **kw) -> ExtractConfig:
        """Stage one's settings for this bench's backbone, weights and size (`kw`: the rest)."""
        return ExtractConfig(backbone=self.backbone, weights=self.weights, image_size=self.size or None, **kw)

    @property
    def results_path(self) -> Path:
        """`out` once resolved() has filled in the default."""
        if self.out is None:
            raise ValueError("BenchConfig.resolved() gives `out` its default")
        return self.out

    @property
    def clips_path(self) -> Path:
        """`clips_dir` once resolved() has filled in the default."""
        if self.clips_dir is None:
            raise ValueError("BenchConfig.resolved() gives `clips_dir` its default")
        return self.clips_dir

    @property
    def resize(self) -> int:
        """The shorter side the decoders alone and the seed method scale to: ResNet-50's ratio at `size`."""
        resize = seed_preprocessing(self.size).resize
        assert isinstance(resize, int), "ResNet-50 scales the shorter side"
        return resize


def seed_preprocessing(size: int) -> Preprocessing:
    """The seed method's resize, crop and mean/std at a `size` px crop: ResNet-50's, whatever
    BACKBONE= the bench times."""
    from stages.extract.extractors import family_for  # the model libraries: not loaded by the command line's start

    pre = family_for(ExtractConfig(backbone=SEED_BACKBONE, image_size=size)).preprocessing()
    assert pre is not None, "a picture family has a preprocessing"
    return pre


def own_size(backbone: str) -> int:
    """The input size a backbone's library publishes for it (ResNet-50: 224)."""
    from stages.extract.extractors import family_for  # the model libraries: not loaded by the command line's start

    pre = family_for(ExtractConfig(backbone=backbone)).preprocessing()
    return pre.size if pre is not None else 224


def default_size(backbone: str, cuda: bool) -> int:
    """The bench's crop: the backbone's own size on CUDA; on a CPU 112 px (224 would take an hour
    on 2 cores), or its own where the model cannot take 112 (MViT's position embeddings, S3D's pooling)."""
    if cuda:
        return own_size(backbone)
    from stages.extract.extractors import family_for

    try:
        family_for(ExtractConfig(backbone=backbone, image_size=CPU_SIZE))
    except ConfigError:
        return own_size(backbone)
    return CPU_SIZE


def own_batch(backbone: str, size: int, cuda: bool) -> int:
    """Stage one's default batch for a backbone at `size` px: items (frames, or a clip model's
    clips) per forward, e.g. ResNet-50 32 / 512, R(2+1)D's 16-frame clips at 112 px 8 / 128."""
    import torch

    from stages.extract.extractors import family_for

    family = family_for(ExtractConfig(backbone=backbone, image_size=size))
    return family.batch_size(torch.device("cuda" if cuda else "cpu"))
