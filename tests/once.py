"""What several test processes of one session need, built once for all of them.

pytest-xdist runs a session on several worker processes, each with its own session-scoped
fixtures; a generated dataset tree or a weights file asked for on two workers would be built
twice. once() builds it in a folder that the session's workers share (beside their own
basetemps: pytest-N/popen-gw0, pytest-N/popen-gw1, ... share pytest-N), under an exclusive
file lock (fcntl.flock), so the first worker to ask builds it and the others wait for it and
then read it. A session without workers uses its own basetemp. What once() returns is shared:
treat it as read-only (copy a tree before changing it).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DONE = "built.json"  # in the built folder's lock folder: what the build returned, written last


def shared_root(tmp_path_factory) -> Path:
    """The folder the session's processes share: the basetemp's parent on an xdist worker, else the basetemp."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    root.mkdir(exist_ok=True)
    return root


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file `path` (created if missing), held for the block."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def once(tmp_path_factory, name: str, build: Callable[[Path], Any]) -> tuple[Path, Any]:
    """(root/name, build(root/name)'s result), build run once per session across its processes.

    name: a folder name that says what is built (the same name, the same thing). build(path)
    makes path and returns a JSON-able value (Paths as str), which a process that did not build
    it gets from the record (the builder gets it from there too). A build that raised leaves
    no record: the next one starts afresh."""
    root = shared_root(tmp_path_factory)
    path, record = root / name, root / f"{name}.{DONE}"
    with locked(root / f"{name}.lock"):
        if not record.is_file():
            if path.exists():  # a build that failed halfway
                shutil.rmtree(path)
            record.write_text(json.dumps(build(path)))
        return path, json.loads(record.read_text())  # the same value, whichever process built it
