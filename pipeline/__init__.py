"""vidstore's shared core: configuration, the feature store, and the API other teams read it with.

from pipeline import FeatureStore      # pipeline/api.py: a set as torch datasets or arrays
"""

from .api import FeatureDataset, FeatureSetView, FeatureStore, FeatureStream

__all__ = ["FeatureDataset", "FeatureSetView", "FeatureStore", "FeatureStream"]
