"""The errors a user can act on that the store and both stages raise.

Each stage keeps the errors only it raises (stages/extract/errors.py, SynthError in
stages/samples, BenchError in stages/bench); the command line (stages/cli.py) collects them.

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

    @classmethod
    def checksum(cls, where: str) -> IntegrityError:
        """The error for the shard at `where` (as people write it) whose bytes are not the manifest's."""
        return cls(f"{where}: sha256 does not match the manifest; the shard is corrupt (run `store verify`)")


class ReaderError(StoreError):
    """A feature set or split cannot be used as asked; the message says why and what to do."""


class FFmpegMissing(RuntimeError):
    """No ffmpeg binary where one is needed; the message says how to install one."""
