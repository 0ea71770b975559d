"""What the user reads: one channel for progress, notes, warnings and summaries.

    say(msg)        progress, notes, warnings, summaries -> stderr
    result(msg)     a command's answer (a table, a prediction, `store info`) -> stdout
    silenced()      a block whose `say` prints nothing (a library call with quiet=True,
                    a benchmark's inner runs); results are never silenced
    progress(...)   a tqdm bar on stderr, hidden when silenced

The streams are looked up at each call, so pytest's capsys/capfd capture everything.
Log records (`-v`) stay with the logging module: they are for debugging, not for reading.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from tqdm import tqdm

_silence = 0
_lock = threading.Lock()


def say(msg: str) -> None:
    """One line (or block) of progress, a note or a warning, on stderr."""
    if not _silence:
        print(msg, file=sys.stderr, flush=True)


def result(msg: str) -> None:
    """The answer a command was asked for, on stdout."""
    print(msg, file=sys.stdout, flush=True)


@contextlib.contextmanager
def silenced(active: bool = True) -> Iterator[None]:
    """Within the block, `say` and progress bars print nothing (all threads)."""
    global _silence
    if not active:
        yield
        return
    with _lock:
        _silence += 1
    try:
        yield
    finally:
        with _lock:
            _silence -= 1


def progress(total: int, unit: str, desc: str, disable: bool = False, **kw) -> tqdm:
    """A progress bar on stderr; disabled while silenced, or when `disable`."""
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stderr,
        disable=disable or bool(_silence),
        **kw,
    )
