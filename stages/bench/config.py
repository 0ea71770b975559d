"""`make bench`'s settings: BenchConfig, with the CPU and CUDA defaults."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import PRECISIONS, choice, repo_root
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

    clips: int = 0  # clips measured end to end and by the ceiling: 8 / 2048
    seconds: float = 7.0  # length of each clip, s (UCF101: ~7 s)
    workers: int = 0  # stage one's decoders, and the threads each decoder is timed with: all cores
    decoder: str = choice(DECODERS[0], DECODERS)  # stage one's decoder end to end (every decoder is also timed alone)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # stage one's --backbone, as a registered family writes it (`vidstore backbones`)
    backbone: str = ExtractConfig.backbone
    # its --weights: random (seeded; speed does not depend on their values, and nothing downloads),
    # pretrained (the published ones, from the library's cache), or a local state-dict file
    weights: str = "random"
    size: int = 0  # crop fed to the backbone, px: 112 / ResNet-50's 224 or another backbone's own
    frames: int = 16  # T, frames sampled per video
    gpu_batch: int = 0  # items (frames; a clip model's clips) per backbone batch: stage one's default
    precision: str = choice("auto", PRECISIONS)  # stage one's: fp32 on CPU, fp16 on CUDA
    compile: bool = False  # also measure torch.compile: compile time, images/s, break-even
    baseline_clips: int = 0  # clips run through the seed method: 2 / 16
    audio_clips: int = 0  # clips with a sound track for the audio set: all of `clips` / 256 (it is CPU work)
    baseline_reader: str = choice("auto", READERS)  # auto: OpenCV if installed, else ffmpeg
    backbone_seconds: float = 0.0  # how long to time the backbone alone: 6 / 10 s
    rounds: int = 2  # rounds of ceiling, end to end and baseline, alternating; the best of each counts
    train_epochs: int = 50  # LSTM epochs timed; fewer are scaled to 50 and labelled so
    skip_train: bool = False
    devices: str = ""  # also end to end with DEVICES= (one backbone process per entry), e.g. cuda:0,cuda:0
    clips_dir: Path | None = None  # default bench/clips
    out: Path | None = None  # default bench/results.json

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
