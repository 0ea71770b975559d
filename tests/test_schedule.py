"""The order `make test`'s workers take the files in (tests/schedule.py): the longest first, by
the durations pytest's cache keeps, else by SLOWEST; each file's tests together, in their order."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import schedule
from schedule import CACHE_KEY, SLOWEST, file_order, merged, reorder

TESTS = Path(__file__).parent
REPO = TESTS.parent


def test_without_figures_the_slowest_files_start_first_then_pytests_order():
    ids = ["tests/test_a.py::t", SLOWEST[1] + "::t", "tests/test_b.py::t", SLOWEST[0] + "::t1", SLOWEST[0] + "::t2"]
    assert file_order(ids, {}) == [SLOWEST[0], SLOWEST[1], "tests/test_a.py", "tests/test_b.py"]


def test_recorded_seconds_order_the_files_longest_first_and_unknown_files_lead():
    ids = ["tests/a.py::x", "tests/a.py::y", "tests/b.py::x", "tests/new.py::x", "tests/c.py::x"]
    seconds = {"tests/a.py::x": 2.0, "tests/a.py::y": 2.0, "tests/b.py::x": 3.0, "tests/c.py::x": 9.0, "gone.py::z": 99}
    # a.py's 4 s are the sum of its tests; new.py has no figure: it may be long, so it starts first
    assert file_order(ids, seconds) == ["tests/new.py", "tests/c.py", "tests/a.py", "tests/b.py"]


def test_reorder_keeps_each_files_tests_together_in_their_order():
    items = [SimpleNamespace(nodeid=n) for n in ["a.py::1", "b.py::1", "a.py::2", "b.py::2", "a.py::3"]]
    reorder(items, {"b.py::1": 5.0, "a.py::1": 1.0})
    assert [i.nodeid for i in items] == ["b.py::1", "b.py::2", "a.py::1", "a.py::2", "a.py::3"]


def test_a_tests_phases_add_up_and_tests_that_did_not_run_keep_their_figure():
    reports = [("a.py::1", 1.5), ("a.py::1", 2.0), ("a.py::1", 0.25), ("b.py::1", 0.5)]
    assert merged({"a.py::1": 9.0, "c.py::1": 4.0}, reports) == {"a.py::1": 3.75, "b.py::1": 0.5, "c.py::1": 4.0}


def test_slowest_names_files_that_exist():
    assert [f for f in SLOWEST if not (REPO / f).is_file()] == []


def test_two_workers_start_with_the_two_longest_files_and_the_session_records_its_durations(pytester):
    """Through pytest-xdist as `make test` runs it: the controller hands the cache's figures to the
    workers, each worker's first file is one of the two longest, and the figures are updated."""
    pytester.makeconftest(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from schedule import Schedule

        def pytest_configure(config):
            config.pluginmanager.register(Schedule(config), "schedule")
        """
    )
    log = pytester.path / "ran.log"
    body = f"import os\ndef test_it():\n    open({str(log)!r}, 'a').write(os.environ['PYTEST_XDIST_WORKER'] + ' ' + __name__ + '\\n')\n"
    pytester.makepyfile(**{f"test_{name}": body for name in "abcd"})
    seconds = {
        "test_a.py::test_it": 1.0,
        "test_b.py::test_it": 5.0,
        "test_c.py::test_it": 0.5,
        "test_d.py::test_it": 9.0,
    }
    cache = pytester.path / ".pytest_cache" / "v" / CACHE_KEY
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps(seconds))
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile", "--no-loadscope-reorder")
    result.assert_outcomes(passed=4)
    first = {}
    for line in log.read_text().splitlines():
        worker, module = line.split()
        first.setdefault(worker, module)
    assert sorted(first.values()) == ["test_b", "test_d"], log.read_text()
    recorded = json.loads(cache.read_text())
    assert set(recorded) == set(seconds) and recorded != seconds, recorded


def pytest_line(target: str) -> str:
    """The pytest command line `make -n TARGET` prints (nothing run)."""
    out = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True)
    (line,) = [ln for ln in out.stdout.splitlines() if " -m pytest " in ln]
    return line


@pytest.mark.parametrize("target", ["test", "test-all"])
def test_make_runs_whole_files_in_the_schedules_order_with_sleeping_idle_threads(target):
    line = pytest_line(target)
    assert "-n 2 --dist loadfile --no-loadscope-reorder" in line, line
    assert line.startswith("OMP_WAIT_POLICY=PASSIVE "), line  # idle torch threads sleep: the same results


def test_the_plugin_is_registered_by_the_suites_conftest(request):
    assert isinstance(request.config.pluginmanager.get_plugin("schedule"), schedule.Schedule)
