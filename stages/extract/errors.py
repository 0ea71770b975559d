"""The errors only stage one raises; each message says what is wrong and what to do."""

from __future__ import annotations


class DatasetError(FileNotFoundError):
    """The dataset is missing or laid out wrongly; the message says what is expected."""


class WeightsError(RuntimeError):
    """Weights cannot be had, or do not fit the model."""


class VideoError(RuntimeError):
    """One video file named on the command line (`predict`) cannot be decoded."""


class ClusterError(RuntimeError):
    """The Dask cluster cannot be reached, has no workers, or lost a shard's task."""
