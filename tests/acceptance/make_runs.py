"""`make` as a user runs it, for the acceptance tier: stderr on a pseudo-terminal, stdout a pipe.

Every command runs in the repository (so `make` finds the Makefile and the venv), or in a
throwaway copy of it (copy_project: the README's defaults, the project's own data/ and runs/), the
former with VIDSTORE_HOME pointing at a temporary home: the datasets under `data/`, the store under
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
import shutil
import struct
import subprocess
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

import offline

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
# OMP_WAIT_POLICY (`make test` sets it) changes how torch's idle threads wait, never a result.
KEEP_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "OMP_WAIT_POLICY")


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


def run_make(
    home: Path | None, *args: str, timeout: float = 600, project: Path = REPO, terminal: bool = True
) -> Outcome:
    """`make ARGS` in `project` (the repository, or a copy of it), with VIDSTORE_HOME=home (none:
    the project's own data/ and runs/, as the README's defaults), stderr on a 120x40
    pseudo-terminal, or on /dev/null where `terminal` is False (`make demo 2>/dev/null`).

    The environment is the caller's KEEP_ENV plus the test session's offline one (tests/offline.py:
    the offline switches, the refusing proxy, the socket guard of every Python process)."""
    env = {k: os.environ[k] for k in KEEP_ENV if k in os.environ} | offline.CHILD_ENV
    env.update(TERM="xterm", COLUMNS="120")
    if home is not None:
        env["VIDSTORE_HOME"] = str(home)
    command = " ".join(["make", *args]) + ("" if terminal else " 2>/dev/null")
    run = lambda stderr: subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        timeout=timeout,
    )
    if not terminal:
        proc = run(subprocess.DEVNULL)
        return Outcome(command, proc.returncode, proc.stdout.decode("utf-8", "replace"), "")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    chunks: list[bytes] = []
    reader = threading.Thread(target=read_terminal, args=(master, chunks), daemon=True)
    reader.start()
    try:
        proc = run(slave)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    # the terminal turns "\n" into "\r\n"; tqdm redraws its bar with "\r"
    stderr = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return Outcome(command, proc.returncode, proc.stdout.decode("utf-8", "replace"), stderr)


def copy_project(dest: Path) -> Path:
    """The repository's tracked files (as they are in the work tree, times kept, so that `make`
    sees the venv as up to date) copied to `dest`, with `.venv` a link to the repository's: a
    throwaway project root whose data/ and runs/ the README's defaults may fill."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        src = REPO / rel
        if src.is_file():  # a file deleted in the work tree but not yet from the index is left out
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest
