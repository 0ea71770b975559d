"""The model spec a run records in config.json ("model"), and the model rebuilt from it.

model_spec(cfg, view) -> dict       everything needed to rebuild the model (plain JSON, never pickled)
build_from_spec(spec, mean, std)    one modality: TemporalClassifier; several: fusion.FusedClassifier
"""

from __future__ import annotations

import torch

from pipeline import FeatureSetView

from .config import TrainConfig
from .fusion import build_fused, effective_fusion
from .models import TemporalClassifier, build_model

# Heads with a learned input projection (--proj); the others ignore it.
PROJECTED = ("lstm", "gru", "attention", "fusion")


def model_spec(cfg: TrainConfig, view: FeatureSetView) -> dict:
    """The run's model, as config.json records it.

    input_dims: D of each modality, in the order their features sit side by side, named by
    modalities; fusion (the kind the head gets: fusion.effective_fusion) and
    modality_dropout are None and 0 for one modality. frames: T, or for a ragged set its longest
    video's rows (the transformer's position embedding covers them); layout: the set's.
    """
    several = len(view.modalities) > 1
    return {
        "name": cfg.model,
        "input_dim": view.feature_dim,
        "input_dims": list(view.dims.values()),
        "modalities": view.modalities,
        "fusion": effective_fusion(cfg.model, cfg.fusion) if several else None,
        "modality_dropout": cfg.modality_dropout if several else 0.0,
        "frames": view.frames or int(view.index.lengths.max()),
        "layout": "ragged" if view.ragged else "fixed",
        "num_classes": len(view.classes),
        "hidden": cfg.hidden,
        "layers": cfg.layers,
        "bidirectional": cfg.bidirectional,
        "dropout": cfg.dropout,
        "proj": cfg.proj if cfg.model in PROJECTED else 0,
    }


def build_from_spec(
    spec: dict, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> TemporalClassifier:
    """The model of a run's spec (model_spec; older runs' specs lack the fusion keys: one modality)."""
    sizes = {k: spec[k] for k in ("hidden", "layers", "bidirectional", "dropout", "proj")}
    dims = spec.get("input_dims") or [spec["input_dim"]]
    if len(dims) == 1:
        return build_model(
            spec["name"], spec["input_dim"], spec["frames"], spec["num_classes"], mean=mean, std=std, **sizes
        )
    return build_fused(
        spec["name"],
        dims,
        spec["frames"],
        spec["num_classes"],
        spec["fusion"],
        spec["modality_dropout"],
        mean=mean,
        std=std,
        **sizes,
    )
