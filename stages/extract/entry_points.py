"""Stage one's entry points: a whole dataset into a feature set, or one video file into features.

extract_features(cfg) -> Summary     computes only what the store does not hold yet, on this
                                     machine, one process per device, or a Dask cluster
extract_video(path, cfg, spec)       one file, exactly as its feature set was computed
config_from_manifest(config, identity) the settings and weights a feature set was made with
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipeline import console, store
from pipeline.errors import ConfigError, StoreError

from .config import ExtractConfig
from .decode import require_decoder
from .distributed import extract_on_dask
from .errors import VideoError
from .extractors import SOUND, family_for
from .inputs import decode_items, decode_job
from .local import extract_in_process, extract_on_devices
from .model_thread import ModelThread
from .plan import ExtractionPlan, make_plan, open_feature_set
from .retry import retry_failed
from .runner import Summary
from .weights import WeightsSpec


def extract_features(cfg: ExtractConfig, quiet: bool = False) -> Summary:
    """Stage one for a whole dataset; computes only what the store does not hold yet."""
    with console.silenced(quiet):
        summary = run(cfg)
        if not summary.reused_set or cfg.retry_failures:  # a plain reuse said all there is to say
            print_summary(summary, store.read_manifest(summary.set_dir))
    return summary


def run(cfg: ExtractConfig) -> Summary:
    t_start = time.perf_counter()
    require_decoder(cfg.decoder)  # fail before any work, with the install hint
    plan = make_plan(cfg)
    manifest = open_feature_set(plan)
    summary = Summary(plan.identity.id, plan.set_dir, total=len(plan.listing.records))
    # --retry-failures retries what earlier runs recorded, not what this run just saw fail.
    earlier_failures = {s.index for s in manifest.shards if s.failures}
    plan = adopt_shard_size(plan, manifest)
    if manifest.complete:
        reuse(plan, manifest, summary, earlier_failures)
    else:
        # Under the claim or lock that guards each file: a plain unlink could race a live run
        # that is rewriting its manifest temp file at this moment.
        removed = store.remove_garbage(plan.set_dir)
        if removed:
            console.say(f"removed {len(removed)} temp file(s) or uncommitted shard(s) left by an interrupted run")
        summary.reused = manifest.num_stored
        compute(plan, summary)
        if store.mark_complete(plan.set_dir).complete and cfg.retry_failures:
            retry_failed(plan, summary, earlier_failures)
    summary.elapsed = time.perf_counter() - t_start
    return summary


def adopt_shard_size(plan: ExtractionPlan, manifest: store.Manifest) -> ExtractionPlan:
    """Shard i must hold the same videos for every run that works on this set, and the shard
    size is not part of its identity (it changes no number): the set's own size wins."""
    if manifest.shard_size == plan.cfg.shard_size:
        return plan
    if not manifest.complete:
        console.say(
            f"feature set {plan.identity.id} was started with --shard-size {manifest.shard_size}; "
            f"continuing with that (not {plan.cfg.shard_size})"
        )
    return plan.with_config(shard_size=manifest.shard_size)


def reuse(plan: ExtractionPlan, manifest: store.Manifest, summary: Summary, earlier_failures: set[int]) -> None:
    """The set is complete: nothing to compute (but --retry-failures)."""
    summary.reused, summary.reused_set = manifest.num_stored, True
    failed = manifest.num_failed
    console.say(
        f"reusing feature set {plan.identity.id}: complete, {manifest.num_stored} videos "
        f"(computed {manifest.completed_at or manifest.created_at}); nothing to compute"
        + (
            f"; {failed} failed video(s) listed in {plan.set_dir / store.FAILURES} (rerun with "
            f"--retry-failures / RETRY_FAILURES=1 to try them again)"
            if failed and not plan.cfg.retry_failures
            else ""
        )
    )
    if plan.cfg.retry_failures:
        retry_failed(plan, summary, earlier_failures)


def compute(plan: ExtractionPlan, summary: Summary) -> None:
    """Every uncommitted shard: on Dask, one process per device, or in this process."""
    if plan.cfg.scheduler:
        extract_on_dask(plan, summary)
    elif len(plan.cfg.devices) > 1:
        extract_on_devices(plan, summary)
    else:
        extract_in_process(plan, summary)


def print_summary(s: Summary, manifest: store.Manifest) -> None:
    t = s.timings
    where = ", ".join(f"{k} {t[k]:.1f}s" for k in ("decode", "backbone", "write", "wait") if k in t)
    console.say(
        f"\nstage one {'complete' if manifest.complete else 'INCOMPLETE'}: {s.feature_set_id}\n"
        f"  computed {s.computed}, copied {s.copied}"
        + (f" (from {', '.join(sorted(s.copied_from))})" if s.copied_from else "")
        + f", reused {s.reused}, failed {s.failed} (this run) / {manifest.num_failed} (set), "
        f"total {s.total} videos\n"
        f"  elapsed {s.elapsed:.1f} s, {s.videos_per_s:.2f} videos/s" + (f"  [{where}]" if where else "") + "\n"
        f"  features: {s.set_dir}" + (f"\n  failures: {s.set_dir / store.FAILURES}" if manifest.num_failed else "")
    )


def config_from_manifest(config: dict, identity: dict, **overrides) -> tuple[ExtractConfig, WeightsSpec | None]:
    """The extraction settings and the exact weights a feature set was computed with (None: an
    audio set of log-mel summaries, which needs none), from its manifest's `config` and `identity`
    (or a run's record of them)."""
    fields = set(ExtractConfig.__dataclass_fields__)
    raw = {k: v for k, v in config.items() if k in fields}
    raw.setdefault("decoder", "ffmpeg-cli")  # a set made before the decoder was a setting: ffmpeg processes
    cfg = ExtractConfig(**(raw | {"scheduler": None, "devices": ()} | overrides))
    family = family_for(cfg)
    weights_id = identity["weights"]
    if weights_id is None:
        return cfg, None
    if weights_id.startswith("random:"):  # includes a sample set made when ImageNet was unreachable
        cfg = cfg.replace(**{family.weights_field: "random", "seed": int(weights_id.split("seed")[1])})
        family = family_for(cfg)
    spec = family.resolve_weights()
    if spec is None or spec.identity != weights_id:
        raise StoreError(
            f"the weights now at {family.weights_field.upper()}={getattr(cfg, family.weights_field)!r} "
            f"({spec.identity if spec else 'none'}) are not the ones this feature set used ({weights_id})"
        )
    return cfg, spec


def extract_video(
    path: Path, cfg: ExtractConfig, spec: WeightsSpec | None, model: ModelThread | None = None
) -> tuple[np.ndarray, int, bool]:
    """Stage one for one video file, as its feature set was computed: features (T, D) float16
    zero-padded, its valid length, and whether the modality is there (False: no sound track)."""
    require_decoder(cfg.decoder)
    if cfg.dense:
        raise ConfigError(
            "--frames all (FRAMES=all): one file's dense rows are computed by `make features` on a csv listing it, "
            "not by predict; predict takes a fixed-T set's run"
        )
    family = model.family if model is not None else family_for(cfg)
    items = torch.zeros((cfg.steps, *family.item_shape()), dtype=family.item_dtype)
    dec, flags = decode_items(family, decode_job(family), Path(path), items.numpy(), cfg.workers, procs=None)
    if dec.error:
        doing = "read the sound of" if family.decodes == SOUND else "decode"
        raise VideoError(f"VIDEO: cannot {doing} {path}: {dec.error}")
    model = model or ModelThread(family, spec, str(family.device()), family.precision())
    k = len(dec.picture()[0])
    out = np.zeros((cfg.steps, family.dim), np.float16)
    out[:k] = model.extract(items[:k])
    return out, k, bool(flags.get("has_audio", 1))
