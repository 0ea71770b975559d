"""vidstore's shared core: configuration, the feature store, and the API other teams read it with.

from pipeline import FeatureStore      # pipeline/api.py: a set as torch datasets or arrays
"""

from __future__ import annotations

import importlib

__all__ = ["FeatureDataset", "FeatureSetView", "FeatureStore", "FeatureStream", "LengthBatchSampler", "pad_collate"]


def __getattr__(name: str):
    # Imported on first use, not with the package: `python -m stages` may re-execute itself
    # to set the allocator (allocator.py), and importing torch first would be paid twice.
    if name in __all__:
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
