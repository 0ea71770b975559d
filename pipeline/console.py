"""What the user reads: one channel for progress, notes, warnings and summaries.

    say(msg)        progress, notes, warnings, summaries -> stderr (above any progress bar)
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
    """One line (or block) of progress, a note or a warning, on stderr; above a progress bar that is
    drawn there (tqdm clears the bar, prints, and draws it again below) rather than glued to it."""
    if not _silence:
        tqdm.write(msg, file=sys.stderr)
        sys.stderr.flush()


def plural(n: int, word: str) -> str:
    """ "1 shard", "2 shards"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


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
    """A progress bar on stderr; disabled while silenced, or when `disable`.

    On a terminal the finished bar stays (at 100%, redrawn in place by its close); in a log of
    stderr it is cleared instead, since there its close would write the final line a second
    time, and the summary that follows each bar gives its figures anyway."""
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stderr,
        disable=disable or bool(_silence),
        **{"leave": sys.stderr.isatty(), **kw},
    )
