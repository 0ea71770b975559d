"""What a stage-one run will do, known before any video is decoded: the extraction plan.

    make_plan(cfg) -> ExtractionPlan    list the dataset, resolve the weights and the precision,
                                        derive the feature-set id and directory
    open_feature_set(plan) -> manifest  the set's manifest, created if this is its first run

Work is planned as fixed chunks of the sorted video list (shard i = videos [i*S, (i+1)*S)),
so a rerun, a second concurrent run, a Dask task or another GPU all agree on what shard i
holds, and a claim (flock) decides who computes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import store
from pipeline.config import (
    AUDIO_DIM,
    FEATURE_DIM,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SCHEMA_VERSION,
    AudioIdentity,
    ExtractConfig,
    FeatureIdentity,
)
from pipeline.devices import inference_precision, resolve_device
from pipeline.errors import ConfigError, StoreError

from .backbone import resolve_weights
from .datasets import Dataset, VideoRecord, load_dataset
from .decode import decoder_versions
from .logmel import FRONT_END
from .vggish import resolve_audio_weights
from .weights import WeightsSpec

# ExtractConfig fields that change the numbers, per modality; a set made with all of them
# at their defaults is recorded as such, and stage two prefers it when a dataset has several.
NUMERIC_FIELDS = {
    "rgb": ("frames", "fps", "image_size", "resize", "backbone", "weights", "seed", "precision", "decoder"),
    "audio": ("frames", "fps", "audio_features", "audio_weights", "seed", "audio_window", "decoder"),
}


@dataclass(frozen=True)
class ExtractionPlan:
    """The settings, weights and identity of one feature set, and which videos each shard holds.

    shards: shard index -> its records, sorted by video id; every shard of the listing,
    or (in a Dask task, `only(i)`) just the one the task computes. dataset: the listing
    (classes, splits, problems), None in a Dask task.
    """

    cfg: ExtractConfig
    weights: WeightsSpec | None  # None: the log-mel summary needs none
    identity: FeatureIdentity | AudioIdentity
    set_dir: Path
    shards: dict[int, list[VideoRecord]]
    dataset: Dataset | None = None

    @property
    def listing(self) -> Dataset:
        """The dataset's listing; only the driver's plan has it (a Dask task's `only(i)` does not)."""
        if self.dataset is None:
            raise RuntimeError("this plan carries one shard (a Dask task's), not the dataset's listing")
        return self.dataset

    @property
    def visual(self) -> FeatureIdentity:
        """The identity of a visual (rgb) set, which carries its backbone's precision."""
        if not isinstance(self.identity, FeatureIdentity):
            raise TypeError(f"{self.identity.id} is an audio feature set, not a visual one")
        return self.identity

    @property
    def required_weights(self) -> WeightsSpec:
        """The weights of a backbone that needs them (ResNet-50, VGGish): not None there."""
        if self.weights is None:
            raise TypeError(f"{self.identity.id} is computed without weights (the log-mel summary)")
        return self.weights

    def only(self, index: int) -> ExtractionPlan:
        """The same plan carrying shard `index` alone (a Dask task ships KB, not a whole listing)."""
        return dataclasses.replace(self, shards={index: self.shards[index]}, dataset=None)

    def with_config(self, **changes) -> ExtractionPlan:
        """The same set with settings that only change the speed changed (devices, workers, shard size)."""
        cfg = self.cfg.replace(**changes)
        shards = chunk(self.dataset.records, cfg.shard_size) if self.dataset else self.shards
        return dataclasses.replace(self, cfg=cfg, shards=shards)


def chunk(records: list[VideoRecord], size: int) -> dict[int, list[VideoRecord]]:
    """Shard i holds records[i*size:(i+1)*size] of the sorted listing."""
    return {i // size: records[i : i + size] for i in range(0, len(records), size)}


def sampling_of(cfg: ExtractConfig) -> dict:
    """Which frames a video gives: T uniform segment centres, or a fixed rate capped at T."""
    return (
        {"mode": "fps", "fps": cfg.fps, "max_frames": cfg.frames}
        if cfg.fps
        else {"mode": "uniform", "frames": cfg.frames}
    )


def make_identity(cfg: ExtractConfig, ds: Dataset, weights: WeightsSpec, precision: str) -> FeatureIdentity:
    """The fields that change the stored numbers of a visual set; their hash is the feature-set id."""
    sampling = sampling_of(cfg)
    return FeatureIdentity(
        schema_version=SCHEMA_VERSION,
        dataset=cfg.dataset_name,
        videos_sha256=ds.listing_sha256,
        backbone=cfg.backbone,
        weights=weights.identity,
        sampling=sampling,
        image_size=cfg.image_size,
        resize=cfg.resize_to,
        crop="center",
        normalisation={"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        precision=precision,
        decoder=cfg.decoder,
    )


def compute_precision(cfg: ExtractConfig) -> str:
    """The precision the backbone will run at, which is part of the feature-set id.

    On Dask the GPUs are the workers' and the driver (a login node) may have none: an
    explicit precision or device says it; with `local:N` the workers are this machine.
    """
    device = cfg.devices[0] if cfg.devices else cfg.device
    if not cfg.scheduler:
        return inference_precision(cfg.precision, resolve_device(device))
    if cfg.precision != "auto":
        return cfg.precision
    if device.startswith("cuda"):
        return "fp16"
    if device == "cpu":
        return "fp32"
    if cfg.scheduler.startswith("local:"):
        return inference_precision("auto", resolve_device("auto"))
    raise ConfigError(
        f"--device (DEVICE=) auto with --scheduler {cfg.scheduler}: say what the workers run on, "
        f"DEVICE=cuda (GPU workers, fp16) or DEVICE=cpu (fp32), or set PRECISION="
    )


def make_audio_identity(cfg: ExtractConfig, ds: Dataset, weights: WeightsSpec | None) -> AudioIdentity:
    """The fields that change the stored numbers of an audio set; their hash is its id."""
    return AudioIdentity(
        schema_version=SCHEMA_VERSION,
        dataset=cfg.dataset_name,
        videos_sha256=ds.listing_sha256,
        sampling=sampling_of(cfg),
        timestamps=f"decoder:{cfg.decoder}",
        features=cfg.audio_features,
        weights=weights.identity if weights else None,
        front_end=FRONT_END,
        window_s=cfg.audio_window,
    )


def make_plan(cfg: ExtractConfig, download: bool = True) -> ExtractionPlan:
    """List the dataset, resolve the weights, and derive the feature-set id and directory."""
    timeout = 20.0 if download else 0.001
    identity: FeatureIdentity | AudioIdentity
    if cfg.modality == "audio":
        ds = listed(cfg)
        weights = (
            resolve_audio_weights(cfg.audio_weights, cfg.seed, download_timeout=timeout)
            if cfg.audio_features == "vggish"
            else None
        )
        identity = make_audio_identity(cfg, ds, weights)
    else:
        precision = compute_precision(cfg)  # first: DEVICE=cuda without CUDA fails before the sample is generated
        ds = listed(cfg)
        weights = resolve_weights(
            cfg.weights, cfg.seed, fallback_to_random=cfg.dataset == "sample", download_timeout=timeout
        )
        identity = make_identity(cfg, ds, weights, precision)
    return ExtractionPlan(
        cfg, weights, identity, cfg.store_root / cfg.dataset_name / identity.id, chunk(ds.records, cfg.shard_size), ds
    )


def listed(cfg: ExtractConfig) -> Dataset:
    ds = load_dataset(cfg)
    if not ds.records:
        raise StoreError(f"no videos found under {ds.video_root}")
    return ds


def has_default_settings(cfg: ExtractConfig) -> bool:
    """Every setting that changes the numbers is stage one's default (the sample's random
    fallback for unreachable ImageNet weights included)."""
    defaults = ExtractConfig()
    return all(getattr(cfg, k) == getattr(defaults, k) for k in NUMERIC_FIELDS[cfg.modality])


def open_feature_set(plan: ExtractionPlan) -> dict:
    """Create the set directory and its manifest if absent; return the manifest."""
    try:  # a complete set needs no lock (its manifest is replaced atomically): read-only users reuse it too
        manifest = store.load_manifest(plan.set_dir)
        if manifest["complete"]:
            return manifest
    except (StoreError, OSError):  # none yet (or an unusable path, reported just below)
        pass
    try:
        plan.set_dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(plan.set_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o664))  # what store.locked needs
    except OSError as e:
        raise StoreError(
            f"--features-root (FEATURES_ROOT=): cannot write the feature set at {plan.set_dir} "
            f"({e.strerror or e}); point FEATURES_ROOT at a directory you can write"
        ) from None
    ds, cfg = plan.listing, plan.cfg
    audio = cfg.modality == "audio"
    # The decoder's libraries, for provenance only: the id names the decoder, not its build.
    config = cfg.to_json() | {"decoder_versions": decoder_versions(cfg.decoder)}
    config |= {} if audio else {"precision": plan.visual.precision}
    manifest = store.new_manifest(
        plan.identity.id,
        cfg.dataset_name,
        json.loads(json.dumps(plan.identity.__dict__)),
        config,
        cfg.frames,
        AUDIO_DIM if audio else FEATURE_DIM,
        ds.classes,
        ds.splits,
        len(ds.records),
        cfg.shard_size,
        len(plan.shards),
        video_root=str(ds.video_root),
        unlisted_failures=ds.problems,
        modality=cfg.modality,
        default_settings=has_default_settings(cfg),
    )
    return store.create(plan.set_dir, manifest)


def committed_indices(set_dir: Path) -> set[int]:
    return {s["index"] for s in store.load_manifest(set_dir)["shards"]}


def device_of(cfg: ExtractConfig) -> torch.device:
    """This run's (first) backbone device."""
    return resolve_device(cfg.devices[0] if cfg.devices else cfg.device)
