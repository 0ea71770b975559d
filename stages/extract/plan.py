"""What a stage-one run will do, known before any video is decoded: the extraction plan.

    make_plan(cfg) -> ExtractionPlan    list the dataset, resolve the weights and the precision,
                                        derive the feature-set id and directory
    open_feature_set(plan) -> manifest  the set's manifest, created if this is its first run

Work is planned as fixed chunks of the sorted video list (shard i = videos [i*S, (i+1)*S); a
dense set's also bounded by rows, from each video's header), so a rerun, a second concurrent run, a Dask task or another GPU all agree on what shard i
holds, and a claim (flock) decides who computes it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline import store
from pipeline.errors import StoreError

from .config import AudioIdentity, ExtractConfig, FeatureIdentity
from .datasets import Dataset, VideoRecord, load_dataset
from .decode import decoder_versions, expected_steps
from .extractors import Extractor, family_for
from .weights import WeightsSpec


@dataclass(frozen=True)
class ExtractionPlan:
    """The settings, weights and identity of one feature set, and which videos each shard holds.

    shards: shard index -> its records, sorted by video id; every shard of the listing (worked
    out on first use: a dense set's opens every video's header, which the reuse of a complete
    set never needs), or (in a Dask task, `only(i)`) just the one the task computes, given as
    `assigned`. dataset: the listing (classes, splits, problems), None in a Dask task.
    """

    cfg: ExtractConfig
    family: Extractor  # the model family that computes the features (extractors/)
    precision: str  # what its model runs at
    weights: WeightsSpec | None  # None: the log-mel summary needs none
    identity: FeatureIdentity | AudioIdentity
    set_dir: Path
    dataset: Dataset | None = None
    assigned: dict[int, list[VideoRecord]] | None = None

    @functools.cached_property
    def shards(self) -> dict[int, list[VideoRecord]]:
        return self.assigned if self.assigned is not None else shards_of(self.cfg, self.listing.records)

    @property
    def listing(self) -> Dataset:
        """The dataset's listing; only the driver's plan has it (a Dask task's `only(i)` does not)."""
        if self.dataset is None:
            raise RuntimeError("this plan carries one shard (a Dask task's), not the dataset's listing")
        return self.dataset

    @property
    def required_weights(self) -> WeightsSpec:
        """The weights of a backbone that needs them (ResNet-50, VGGish): not None there."""
        if self.weights is None:
            raise TypeError(f"{self.identity.id} is computed without weights (the log-mel summary)")
        return self.weights

    def only(self, index: int) -> ExtractionPlan:
        """The same plan carrying shard `index` alone (a Dask task ships KB, not a whole listing)."""
        return dataclasses.replace(self, assigned={index: self.shards[index]}, dataset=None)

    def with_config(self, **changes) -> ExtractionPlan:
        """The same set with settings that only change the speed changed (devices, workers, shard size)."""
        cfg = self.cfg.replace(**changes)
        return dataclasses.replace(self, cfg=cfg, family=type(self.family)(cfg))  # its shards worked out anew


def chunk(records: list[VideoRecord], size: int) -> dict[int, list[VideoRecord]]:
    """Shard i holds records[i*size:(i+1)*size] of the sorted listing."""
    return {i // size: records[i : i + size] for i in range(0, len(records), size)}


def shards_of(cfg: ExtractConfig, records: list[VideoRecord]) -> dict[int, list[VideoRecord]]:
    """Which videos each shard holds: fixed chunks of SHARD_SIZE videos; a dense set's shards
    also end before SHARD_ROWS rows (each video's rows estimated from its header), a longer
    video alone in its shard. The same listing and files give every run the same shards."""
    if not cfg.dense:
        return chunk(records, cfg.shard_size)
    rows = [expected_steps(r.path, cfg.fps, cfg.stride) for r in records]
    return chunk_by_rows(records, rows, cfg.shard_size, cfg.shard_rows)


def chunk_by_rows(
    records: list[VideoRecord], rows: list[int], size: int, max_rows: int
) -> dict[int, list[VideoRecord]]:
    """Consecutive runs of the sorted listing, each at most `size` videos and (unless one video
    has more) `max_rows` rows; rows[i]: the rows expected of records[i]."""
    shards: dict[int, list[VideoRecord]] = {}
    current: list[VideoRecord] = []
    held = 0
    for rec, n in zip(records, rows):
        if current and (len(current) == size or held + n > max_rows):
            shards[len(shards)], current, held = current, [], 0
        current.append(rec)
        held += n
    if current:
        shards[len(shards)] = current
    return shards


def sampling_of(cfg: ExtractConfig) -> dict:
    """Which frames a video gives: T uniform segment centres, a fixed rate capped at T, or (FRAMES=all)
    every step of a rate or a stride over the whole video."""
    if cfg.dense:
        return {"mode": "dense", "fps": cfg.fps} if cfg.fps else {"mode": "dense", "stride": cfg.stride}
    return (
        {"mode": "fps", "fps": cfg.fps, "max_frames": cfg.frames}
        if cfg.fps
        else {"mode": "uniform", "frames": cfg.frames}
    )


def make_plan(cfg: ExtractConfig, download: bool = True) -> ExtractionPlan:
    """List the dataset, resolve the weights, and derive the feature-set id and directory."""
    family = family_for(cfg)
    precision = family.precision()  # first: DEVICE=cuda without CUDA fails before the sample is generated
    ds = listed(cfg)
    # The embedded sample runs anywhere: unreachable published weights fall back to random ones there.
    weights = family.resolve_weights(20.0 if download else 0.001, fallback_to_random=cfg.dataset == "sample")
    identity = family.identity(cfg.dataset_name, ds.listing_sha256, sampling_of(cfg), weights, precision)
    set_dir = cfg.store_root / cfg.dataset_name / identity.id
    return ExtractionPlan(cfg, family, precision, weights, identity, set_dir, ds)


def listed(cfg: ExtractConfig) -> Dataset:
    ds = load_dataset(cfg)
    if not ds.records:
        unusable = (
            f"; {len(ds.problems)} listed but unusable, the first: {ds.problems[0]['reason']}" if ds.problems else ""
        )
        raise StoreError(f"no videos found under {ds.video_root}{unusable}")
    return ds


def has_default_settings(cfg: ExtractConfig) -> bool:
    """Every setting that changes the numbers is stage one's default (the sample's random
    fallback for unreachable ImageNet weights included)."""
    defaults = ExtractConfig()
    return all(getattr(cfg, k) == getattr(defaults, k) for k in family_for(cfg).numeric_fields)


def open_feature_set(plan: ExtractionPlan) -> store.Manifest:
    """Create the set directory and its manifest if absent; return the manifest."""
    try:  # a complete set needs no lock (its manifest is replaced atomically): read-only users reuse it too
        manifest = store.read_manifest(plan.set_dir)
        if manifest.complete:
            return manifest
    except (StoreError, OSError):  # none yet (or an unusable path, reported just below)
        pass
    store.root_of(plan.set_dir).prepare(plan.set_dir)  # a directory and its .lock, or a checked bucket
    ds, cfg = plan.listing, plan.cfg
    # The decoder's libraries, for provenance only: the id names the decoder, not its build.
    config = cfg.to_json() | {"decoder_versions": decoder_versions(cfg.decoder)}
    if isinstance(plan.identity, FeatureIdentity):  # a visual set's id names its precision; so does its config
        config |= {"precision": plan.identity.precision}
    manifest = store.new_manifest(
        plan.identity.id,
        cfg.dataset_name,
        json.loads(json.dumps(plan.identity.__dict__)),
        config,
        None if cfg.dense else cfg.steps,
        plan.family.dim,
        ds.classes,
        ds.splits,
        len(ds.records),
        cfg.shard_size,
        len(plan.shards),
        video_root=str(ds.video_root),
        unlisted_failures=ds.problems,
        modality=cfg.modality,
        default_settings=has_default_settings(cfg),
        layout="ragged" if cfg.dense else "fixed",
    )
    return store.create(plan.set_dir, manifest)


def committed_indices(set_dir: Path) -> set[int]:
    return {s.index for s in store.read_manifest(set_dir).shards}
