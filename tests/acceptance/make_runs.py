"""`make` as a user runs it, for the acceptance tier: stderr on a pseudo-terminal, stdout a pipe.

Every command runs in the repository (so `make` finds the Makefile and the venv) with
VIDSTORE_HOME pointing at a temporary home: the datasets under `data/`, the store under
`data/features` and the run directories under `runs/` all land there, never in the
repository's own data/ or runs/. The environment is a minimal one (no Make variable of
the caller's shell leaks in), and stderr is a pseudo-terminal, as in a user's shell, so
that progress bars and every terminal-only path run; stdout stays a pipe, to check that
the result lines go there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# 3 classes x 8 groups x 1 clip of 64x48 px: split 1 tests 2 groups per class and trains on
# 6, of which carve_by_group holds one out (10% by group, at most 20%): a validation part.
UCF_GROUPS = 8
UCF_SETTINGS = dict(groups=UCF_GROUPS, clips_per_group=1, fps=8, size=(64, 48), seconds_per_scene=0.6, seed=1)
# Stage one at the default 224 px costs ~1 s a frame on the shared 2-core machine; 64 px
# and 8 frames keep the tier's two stage-one runs to seconds. Every other option is the default.
SMALL = ("SIZE=64", "FRAMES=8")
# The variables of the caller's environment that a command may keep; any other one
# (DATASET, MODEL, FEATURES_ROOT, MAKEFLAGS from an outer `make test`...) would change the command.
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")


@dataclass(frozen=True)
class Outcome:
    """What a user sees: exit status, stdout (the results) and stderr (a terminal: progress, notes)."""

    command: str
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"$ {self.command}\nexit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-6000:]}"


def read_terminal(fd: int, chunks: list[bytes]) -> None:
    """Drain a pty's master side until the last writer closes (EIO on Linux), so the child never blocks."""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            if e.errno == errno.EIO:
                return
            raise
        if not data:
            return
        chunks.append(data)


def run_make(home: Path, *args: str, timeout: float = 600) -> Outcome:
    """`make ARGS` in the repository, with VIDSTORE_HOME=home, stderr on a 120x40 pseudo-terminal."""
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ}
    env.update(VIDSTORE_HOME=str(home), TERM="xterm", COLUMNS="120")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    chunks: list[bytes] = []
    reader = threading.Thread(target=read_terminal, args=(master, chunks), daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            ["make", "--no-print-directory", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=timeout,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    # the terminal turns "\n" into "\r\n"; tqdm redraws its bar with "\r"
    stderr = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return Outcome(" ".join(["make", *args]), proc.returncode, proc.stdout.decode("utf-8", "replace"), stderr)
