"""How the command line starts and ends: the store's commands without torch, imports with the
garbage collector paused and frozen after (pipeline.lazy.long_lived, stages/__main__.py).

Each check runs in a fresh interpreter: what a process has already imported, or frozen, is
the thing under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fresh(code: str) -> dict:
    """Run `code` in a new interpreter at the repository's root; the JSON it prints last."""
    env = dict(os.environ, VIDSTORE_ALLOCATOR="system")  # no re-exec of `python -c`
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_command_line_and_the_store_load_without_torch():
    """`vidstore --help` and the store's commands (list, info, verify, gc, push) need no torch:
    only a stage, or the statistics of a training split, loads it."""
    seen = fresh(
        "import json, sys\n"
        "import stages.cli, pipeline.store\n"
        "before = 'torch' in sys.modules\n"
        "from pipeline.store import stats\n"
        "print(json.dumps({'before': before, 'after': 'torch' in sys.modules}))"
    )
    assert seen == {"before": False, "after": True}


def test_long_lived_pauses_the_collector_and_freezes_what_it_loaded():
    seen = fresh(
        "import gc, json\n"
        "from pipeline.lazy import long_lived\n"
        "frozen = gc.get_freeze_count()\n"
        "with long_lived():\n"
        "    inside = gc.isenabled()\n"
        "    import torch\n"
        "after = gc.isenabled()\n"
        "gained = gc.get_freeze_count() - frozen\n"
        "gc.disable()\n"
        "with long_lived():\n"
        "    pass\n"
        "print(json.dumps({'inside': inside, 'after': after, 'gained': gained, 'kept_off': not gc.isenabled()}))"
    )
    assert seen["inside"] is False and seen["after"] is True
    assert seen["gained"] > 100_000, "torch's objects were frozen"
    assert seen["kept_off"], "a collector the caller had switched off stays off"


def test_a_lazy_stage_import_is_long_lived():
    """The stages' lazy imports (torchvision and the model libraries) are frozen too."""
    seen = fresh(
        "import gc, json\n"
        "import stages.extract as extract\n"
        "frozen = gc.get_freeze_count()\n"
        "extract.family_for\n"
        "print(json.dumps({'gained': gc.get_freeze_count() - frozen, 'enabled': gc.isenabled()}))"
    )
    assert seen["gained"] > 100_000 and seen["enabled"]


def test_the_command_runs_with_what_it_loaded_frozen():
    """stages.__main__.run: the command's imports frozen before it runs, and all at its end."""
    seen = fresh(
        "import gc, json, sys\n"
        "import click\n"
        "counts = []\n"
        "click.Group.main = lambda self, *a, **k: counts.append((gc.get_freeze_count(), gc.isenabled()))\n"
        "from stages.__main__ import run\n"
        "before = gc.get_freeze_count()\n"
        "run()\n"
        "print(json.dumps({'before': before, 'at_start': counts[0][0], 'enabled': counts[0][1],"
        " 'at_end': gc.get_freeze_count()}))"
    )
    assert seen["before"] == 0 and seen["at_start"] > 10_000 and seen["enabled"]  # click, h5py, numpy
    assert seen["at_end"] >= seen["at_start"]
