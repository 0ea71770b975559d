"""Every error a user can act on, in one place, so the command line knows them all.

Each message says what is wrong and what to do: which option, where the data should be
and in what layout, what to install. The CLI prints them as one `Error:` line without a
traceback (a ConfigError, a bad option, also shows the usage line); anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad option or setting; the message names the option and the value."""


class StoreError(RuntimeError):
    """The store is missing, inconsistent, or the disk refused a write."""


class IntegrityError(StoreError):
    """A shard's bytes do not match the sha256 its manifest recorded."""


class ReaderError(StoreError):
    """A feature set or split cannot be used as asked; the message says why and what to do."""


class DatasetError(FileNotFoundError):
    """The dataset is missing or laid out wrongly; the message says what is expected."""


class WeightsError(RuntimeError):
    """Weights cannot be had, or do not fit the model."""


class FFmpegMissing(RuntimeError):
    """No ffmpeg binary where one is needed; the message says how to install one."""


class VideoError(RuntimeError):
    """One video file named on the command line (`predict`) cannot be decoded."""


class ClusterError(RuntimeError):
    """The Dask cluster cannot be reached, has no workers, or lost a shard's task."""


class SynthError(RuntimeError):
    """A generated dataset could not be made (ffmpeg missing or failing)."""


class BenchError(RuntimeError):
    """A part of the benchmark could not be measured; the others are written all the same."""


# Shown as one line (exit status 1, or 2 with the usage line for a ConfigError).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    StoreError,
    DatasetError,
    WeightsError,
    FFmpegMissing,
    ClusterError,
    SynthError,
    BenchError,
    VideoError,
)
