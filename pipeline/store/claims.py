"""Who computes which shard, and who may rewrite the manifest.

On a filesystem these are flocks: the kernel drops the lock when its holder dies (kill -9,
OOM, pre-emption), so a crashed run never leaves a claim that blocks the next one, and no
timeout guesses are needed. `.claims/<index>` is held by the process computing that shard;
`.lock` by whoever is read-modify-writing the manifest. In a bucket a claim is an object
created with If-None-Match that its holder renews and that expires when it stops, and the
manifest needs no lock: it is replaced with If-Match (roots.py).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from .roots import flock_held, root_of

__all__ = ["Claim", "flock_held", "lock_held", "locked", "wait_for"]


def locked(set_dir: Path) -> contextlib.AbstractContextManager:
    """Exclusive lock for a read-modify-write of the manifest (blocks until free; a bucket needs none)."""
    return root_of(set_dir).locked(set_dir)


class Claim:
    """Who computes shard `index` of the set in `set_dir`: exclusive, non-blocking, dropped when its holder dies."""

    def __init__(self, set_dir: Path, index: int):
        self.index = index
        self.handle = root_of(set_dir).claim(Path(set_dir), index)
        self.path = self.handle.path

    def acquire(self) -> bool:
        return self.handle.acquire()

    def release(self) -> None:
        self.handle.release()

    def held_elsewhere(self) -> bool:
        """True while another live process holds this claim."""
        return self.handle.held_elsewhere()

    def holder(self) -> str:
        """Who holds it: 'host pid time' ('' when unknown)."""
        return self.handle.holder()


def lock_held(set_dir: Path) -> bool:
    """True while a live process is rewriting the manifest."""
    return root_of(set_dir).lock_held(set_dir)


def wait_for(predicate, timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
