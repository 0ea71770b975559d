"""Who computes which shard, and who may rewrite the manifest: flocks.

Why flock: the kernel drops the lock when its holder dies (kill -9, OOM, pre-emption),
so a crashed run never leaves a claim that blocks the next one, and no timeout guesses
are needed. `.claims/<index>` is held by the process computing that shard; `.lock` by
whoever is read-modify-writing the manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..files import disk_error, now_iso


@contextlib.contextmanager
def locked(set_dir: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of the manifest (blocks until free)."""
    fd = os.open(Path(set_dir) / ".lock", os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class Claim:
    """A non-blocking exclusive flock on `.claims/<index>`: who computes which shard."""

    def __init__(self, set_dir: Path, index: int):
        claims = Path(set_dir) / ".claims"
        claims.mkdir(exist_ok=True)
        self.path = claims / f"{index:05d}"
        self.index = index
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()} {now_iso()}\n".encode())
        except OSError as e:  # the lock was taken; only the holder's line could not be written
            self.release()
            raise disk_error(e, self.path) from e
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        """True while another live process holds this claim."""
        return self.path.exists() and flock_held(self.path)


def lock_held(set_dir: Path) -> bool:
    """True while a live process is rewriting the manifest."""
    return flock_held(Path(set_dir) / ".lock")


def flock_held(path: Path) -> bool:
    """Probe an flock without waiting: True if another open file description holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def wait_for(predicate, timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
