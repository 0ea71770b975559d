"""Copying rows other sets already hold: a video is computed once per store and settings.

When a shard is opened, each of its videos is fingerprinted (sha256 of the file, cached by
the store's reuse index) and looked up under this set's extraction settings. A hit is
copied from the source shard, read whole through its manifest's sha256 (once per source
shard while the run's shards use it: a sorted listing meets each source shard in one
stretch), into this shard's buffer; the shard is then written and committed as
always, so a copy is as atomic as a computation and the new set needs no other set to be read.
A source that vanished, was rewritten or no longer checks out is dropped from the index
and the video is decoded instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline import console, store
from pipeline.errors import IntegrityError, StoreError
from pipeline.files import file_sha256

from .datasets import VideoRecord
from .plan import ExtractionPlan

# Source shards kept in memory at once: a listing is sorted, so neighbours share shards.
OPEN_SOURCES = 4


class RowCopier:
    """Looks up a shard's videos in the store and copies the rows found (one run, one set)."""

    def __init__(self, plan: ExtractionPlan):
        self.root = plan.cfg.store_root
        self.key = plan_settings_key(plan)
        self.own = plan.set_dir.resolve().relative_to(self.root.resolve()).as_posix()
        self.sources: OrderedDict[tuple[str, str], tuple[dict, str] | None] = OrderedDict()
        self.index: store.ReuseIndex | None = None
        try:
            self.index = store.open_index(self.root)
            self.index.sync()
        except (sqlite3.Error, OSError) as e:
            self.give_up(e)

    def give_up(self, e: BaseException) -> None:
        """The index is only a cache: without it every video is computed, and the run goes on."""
        console.say(
            f"warning: the store's reuse index {store.index_path(self.root)} cannot be used ({e}); this run computes "
            f"every video itself (delete the file if this repeats: it is rebuilt from the manifests)"
        )
        if self.index is not None:
            self.index.close()
        self.index = None

    def close(self) -> None:
        if self.index is not None:
            self.index.close()

    def fill(self, shard) -> None:
        """Fingerprint every video of `shard` (runner.ShardBuffer: the runner imports this module)
        and copy the rows other sets hold for them."""
        for pos, rec in enumerate(shard.records):
            if shard.ok[pos]:
                continue  # a row kept from this set's own shard (a retry) keeps its stored fingerprint
            shard.fingerprints[pos] = fp = self.fingerprint(rec.path)
            if not fp or self.index is None:
                continue
            try:
                sources = self.index.lookup(self.key, fp, exclude=self.own)
            except sqlite3.Error as e:
                self.give_up(e)
                continue
            for src in sources:
                found = self.read(src)
                if found is not None and found[0]["fingerprints"][src.row] == fp:
                    shard.copy_row(pos, found[0], src.row, found[1])
                    break

    def fingerprint(self, path: Path) -> str:
        """sha256 of the file (cached by the index); empty when it cannot be read (its decode says why)."""
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return ""  # a FIFO, device or socket would block the read (or never end); its decode refuses it
            if self.index is not None:
                try:
                    return self.index.fingerprint(path)
                except sqlite3.Error as e:
                    self.give_up(e)
            return file_sha256(path)
        except OSError:
            return ""

    def read(self, src: store.StoredRow) -> tuple[dict, str] | None:
        """(the source shard's verified arrays, its set id), or None (then dropped from the index)."""
        key = (src.set_dir, src.shard_file)
        if key not in self.sources:
            self.sources[key] = self.load(src)
            if len(self.sources) > OPEN_SOURCES:
                self.sources.popitem(last=False)  # the least recently used
        self.sources.move_to_end(key)
        found = self.sources[key]
        if found is None or "fingerprints" not in found[0] or src.row >= len(found[0]["fingerprints"]):
            if self.index is not None:
                with contextlib.suppress(sqlite3.Error):  # not dropped now: found stale again next time
                    self.index.drop(src)
            return None
        return found

    def load(self, src: store.StoredRow) -> tuple[dict, str] | None:
        """Read a source shard only while its manifest lists it under the same settings."""
        set_dir = self.root / src.set_dir
        try:
            m = store.read_manifest(set_dir)
            entry = m.shard(src.shard_file)
            if entry is None or store.settings_key(m.identity) != self.key:
                return None
            return store.read_shard(set_dir / entry.file, entry.sha256), m.feature_set_id
        except (StoreError, IntegrityError, OSError):
            return None  # gc, verify --repair or a retry removed it meanwhile: compute instead


def plan_settings_key(plan: ExtractionPlan) -> str:
    """The settings key of the set `plan` writes, from its identity as the manifest records it."""
    return store.settings_key(json.loads(json.dumps(plan.identity.__dict__)))


def index_committed(plan: ExtractionPlan, shard_file: str) -> None:
    """Make a shard just committed to `plan`'s set findable by other runs at once.

    A failure here loses nothing: the next run's sync indexes the shard from its manifest.
    """
    try:
        index = store.ReuseIndex(plan.cfg.store_root)
        try:
            fingerprints = store.shard_fingerprints(plan.set_dir / shard_file)
            index.add_shard(plan.set_dir, plan_settings_key(plan), shard_file, fingerprints)
        finally:
            index.close()
    except (sqlite3.Error, OSError):
        pass


def stored_positions(records: list[VideoRecord], stored: dict[str, np.ndarray]) -> Iterator[tuple[int, int]]:
    """(pos, k) for each of a shard's videos (records, in shard order) that a committed shard read
    whole (read_shard's arrays) already holds as its video k: what --retry-failures copies."""
    row = {vid: k for k, vid in enumerate(stored["video_ids"])}
    for pos, rec in enumerate(records):
        k = row.get(rec.video_id)
        if k is not None:
            yield pos, k
