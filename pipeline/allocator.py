"""A malloc that keeps freed memory, chosen once at the entry point and inherited by children.

Why: a CPU backbone batch allocates activations far above glibc's largest mmap threshold
(32 MiB; one 32-frame 224 px batch's first convolution output alone is over 100 MB), so with
glibc every batch maps fresh pages, the kernel faults and zeroes them, and free() unmaps them
again: about 13,000 page faults per embedded frame, a fifth of stage one's CPU time. jemalloc
with decay off keeps the freed pages and hands them to the next batch (docs/allocator.md).

How: `ensure()` runs first in the entry points (`python -m stages`, the `vidstore` command,
which `make` calls). When the environment does not carry the choice yet, it sets LD_PRELOAD
(and the library's own settings) or GLIBC_TUNABLES and re-executes the same command line
once; VIDSTORE_ALLOCATOR_APPLIED marks the re-executed process so it cannot loop. Every
process started from there (decoder processes, Dask workers, ffmpeg) inherits the
environment. Where the library is not installed, nothing changes, silently.

VIDSTORE_ALLOCATOR: auto (default: jemalloc where installed, else glibc as it is) | jemalloc |
tcmalloc | glibc (glibc with the tunables below) | system (glibc as it is) | a path to a malloc
library to preload. tcmalloc and the glibc tunables are choices, not defaults: the tunables
removed far fewer page faults than jemalloc (docs/allocator.md) and tcmalloc was not measured.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CHOICE_ENV = "VIDSTORE_ALLOCATOR"
APPLIED_ENV = "VIDSTORE_ALLOCATOR_APPLIED"
CHOICES = ("auto", "jemalloc", "tcmalloc", "glibc", "system")

# Debian/Ubuntu multiarch, Fedora/RHEL lib64, and plain lib: where the distributions'
# packages (libjemalloc2, libtcmalloc-minimal4, jemalloc, gperftools-libs) put them.
MULTIARCH = f"{os.uname().machine}-linux-gnu" if hasattr(os, "uname") else ""
LIB_DIRS = (f"/usr/lib/{MULTIARCH}", f"/lib/{MULTIARCH}", "/usr/lib64", "/usr/lib", "/usr/local/lib")
LIBRARIES = {
    "jemalloc": ("libjemalloc.so.2",),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
}
# Each library's own settings, set only where the user has not set them.
# jemalloc: never purge unused dirty pages (decay -1), so a freed batch's pages are reused.
# tcmalloc: release rate 0, never hand free spans back to the kernel.
LIBRARY_ENV = {
    "jemalloc": {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"},
    "tcmalloc": {"TCMALLOC_RELEASE_RATE": "0"},
}
# VIDSTORE_ALLOCATOR=glibc: no mmap for large blocks (they come from the heap, whose freed
# chunks are reused) and no trimming of the heap's top back to the kernel (16 GiB threshold).
GLIBC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def find_library(kind: str) -> str | None:
    """The first installed file of `kind` (jemalloc | tcmalloc), or None."""
    for d in LIB_DIRS:
        for name in LIBRARIES[kind]:
            if os.path.isfile(f"{d}/{name}"):
                return f"{d}/{name}"
    return None


def plan(environ: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(what this process tree will run with, the variables to add) for VIDSTORE_ALLOCATOR.

    Nothing to add when the choice is 'system' or the user already preloads a malloc.
    """
    choice = environ.get(CHOICE_ENV, "auto").strip() or "auto"
    if choice == "system" or not sys.platform.startswith("linux"):
        return "system", {}
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload for names in LIBRARIES.values() for name in names):
        return f"preloaded by the user ({preload})", {}
    if choice == "glibc":
        return glibc(environ)
    if choice in ("auto", *LIBRARIES):
        kind = "jemalloc" if choice == "auto" else choice
        path = find_library(kind)
    else:  # a path to a library
        kind = next((k for k in LIBRARIES if k in Path(choice).name), "custom")
        path = choice if os.path.isfile(choice) else None
    if path is None:
        return "system", {}
    add = {"LD_PRELOAD": f"{path} {preload}".strip()}
    add |= {k: v for k, v in LIBRARY_ENV.get(kind, {}).items() if k not in environ}
    return f"{kind} ({path})", add


def glibc(environ: dict[str, str]) -> tuple[str, dict[str, str]]:
    """glibc with large blocks kept, unless the user set GLIBC_TUNABLES themselves."""
    if environ.get("GLIBC_TUNABLES"):
        return f"glibc (GLIBC_TUNABLES={environ['GLIBC_TUNABLES']} from the user)", {}
    return f"glibc ({GLIBC_TUNABLES})", {"GLIBC_TUNABLES": GLIBC_TUNABLES}


def ensure() -> None:
    """Re-execute this command once with the allocator set; returns where nothing needs doing.

    Call it first in an entry point (before torch is imported: a re-exec throws away
    whatever this process has done). Never raises: where the exec fails, the command runs
    on as today.
    """
    if APPLIED_ENV in os.environ:
        return
    choice = os.environ.get(CHOICE_ENV, "").strip()
    if choice and choice not in CHOICES and "/" not in choice:
        print(
            f"{CHOICE_ENV}={choice!r} is neither one of {', '.join(CHOICES)} nor a path to a malloc library; "
            "using the default (auto)",
            file=sys.stderr,
        )
        os.environ[CHOICE_ENV] = "auto"
    what, add = plan(dict(os.environ))
    os.environ[APPLIED_ENV] = what
    argv = getattr(sys, "orig_argv", None)
    if not add or not argv or not sys.executable:
        return
    try:
        os.execve(sys.executable, argv, {**os.environ, **add})
    except OSError:
        pass


def describe() -> str:
    """The allocator this process runs with, for reports: what ensure() chose, checked
    against the libraries actually mapped into this process."""
    mapped = loaded_libraries()
    for kind, names in LIBRARIES.items():
        if any(n in mapped for n in names):
            return f"{kind} (loaded; {settings_of(kind)})"
    if os.environ.get("GLIBC_TUNABLES"):
        return f"glibc (GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']})"
    # VIDSTORE_ALLOCATOR=system, or a process not started through python -m stages / vidstore.
    return "glibc defaults (large blocks go back to the kernel at free)"


def settings_of(kind: str) -> str:
    keys = LIBRARY_ENV.get(kind, {})
    set_ = [f"{k}={os.environ[k]}" for k in keys if k in os.environ]
    return ", ".join(set_) or "its default settings"


def loaded_libraries() -> str:
    """The text of /proc/self/maps ('' where there is none, e.g. macOS)."""
    try:
        return Path("/proc/self/maps").read_text()
    except OSError:
        return ""
