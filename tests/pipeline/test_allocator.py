"""The entry points re-execute themselves with a malloc that keeps freed memory (pipeline/allocator.py)."""

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux's")

VIDSTORE = Path(sys.executable).parent / "vidstore"


def clean_env(**extra) -> dict:
    """This environment without any allocator choice already made (pytest may run under one)."""
    env = {k: v for k, v in os.environ.items() if k not in (allocator.APPLIED_ENV, allocator.CHOICE_ENV, "LD_PRELOAD")}
    env.pop("GLIBC_TUNABLES", None)
    return env | extra


def default_kind() -> str:
    """The first word `vidstore allocator` prints by default on this machine: jemalloc where
    installed. Found here as the Makefile's setup looks for it (the distributions' paths), not
    through allocator.find_library, the function under test."""
    installed = glob.glob("/usr/lib/*/libjemalloc.so.2") + glob.glob("/usr/lib64/libjemalloc.so.2")
    return "jemalloc" if installed or os.path.isfile("/usr/lib/libjemalloc.so.2") else "glibc"


def reported(cmd: list[str], **extra) -> str:
    """What the `allocator` command, started as `cmd`, says it runs with (it reads its own /proc/self/maps)."""
    done = subprocess.run([*cmd, "allocator"], env=clean_env(**extra), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(
    "cmd", [[sys.executable, "-m", "stages"], [str(VIDSTORE)]], ids=["python -m stages", "vidstore"]
)
def test_entry_points_run_with_the_chosen_allocator(cmd):
    if cmd[0] == str(VIDSTORE) and not VIDSTORE.exists():
        pytest.skip("the vidstore console script is not installed in this environment")
    kind = default_kind()
    out = reported(cmd)
    assert out.split()[0] == kind, out
    if kind == "jemalloc":  # the library is really mapped into the process, with its settings
        assert out == "jemalloc (loaded; MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1)", out
    else:  # not installed here: glibc as it is
        assert out.startswith("glibc defaults"), out


def test_a_missing_library_leaves_malloc_as_it_was():
    out = reported([sys.executable, "-m", "stages"], VIDSTORE_ALLOCATOR="/nonexistent/libjemalloc.so.2")
    assert out.startswith("glibc defaults")


def test_glibc_tunables_on_request():
    out = reported([sys.executable, "-m", "stages"], VIDSTORE_ALLOCATOR="glibc")
    assert out == f"glibc (GLIBC_TUNABLES={allocator.GLIBC_TUNABLES})"


def test_system_leaves_malloc_as_it_was():
    out = reported([sys.executable, "-m", "stages"], VIDSTORE_ALLOCATOR="system")
    assert out.startswith("glibc defaults")


def test_an_unknown_choice_is_named_and_the_default_used():
    done = subprocess.run(
        [sys.executable, "-m", "stages", "allocator"],
        env=clean_env(VIDSTORE_ALLOCATOR="jemaloc"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "VIDSTORE_ALLOCATOR='jemaloc'" in done.stderr
    assert done.stdout.split()[0] == default_kind()


def test_plan_keeps_what_the_user_set(tmp_path):
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    what, add = allocator.plan({"VIDSTORE_ALLOCATOR": str(lib), "LD_PRELOAD": "/opt/libfoo.so", "MALLOC_CONF": "x:1"})
    assert what == f"jemalloc ({lib})"
    assert add == {"LD_PRELOAD": f"{lib} /opt/libfoo.so"}  # the user's preload kept, their MALLOC_CONF untouched
    assert allocator.plan({"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"})[1] == {}
    assert allocator.plan({"VIDSTORE_ALLOCATOR": "glibc", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})[1] == {}
    assert allocator.plan({"VIDSTORE_ALLOCATOR": "system"}) == ("system", {})
