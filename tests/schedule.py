"""The order the test files start in, so that `make test`'s workers finish together.

pytest-xdist's `--dist loadfile` hands each worker whole files from one queue, in collection
order (its own reordering, by number of tests, is off: `--no-loadscope-reorder` in the
Makefile). A long file that starts late leaves the other worker idle at the end, so the
longest files start first (longest processing time first), and the short ones fill the end.

How long each test took (setup, call and teardown) is kept in pytest's cache
(`.pytest_cache`, key CACHE_KEY) after every session that ran with it; a file is expected to
take the sum over its collected tests, so a run of a few tests updates those only. A session
on several workers reads the cache once, in the controller, and hands the figures to every
worker (`pytest_configure_node`): the workers must collect the same order, even if another
session rewrites the cache meanwhile. A file none of whose tests is in the cache (a fresh
clone, a new file) is placed by SLOWEST: those files first, in that order, unknown others
before all known ones (a new file may be long).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import pytest

CACHE_KEY = "vidstore/test-seconds"
WORKER_INPUT = "vidstore_test_seconds"

# The longest files of the default tier, longest first: the order without a cache.
SLOWEST = (
    "tests/acceptance/test_readme_defaults.py",
    "tests/acceptance/test_weights_files.py",
    "tests/acceptance/test_backbones.py",
    "tests/acceptance/test_readme_commands.py",
    "tests/extract/test_distributed.py",
    "tests/extract/test_reuse.py",
    "tests/acceptance/test_zeroshot_command.py",
    "tests/extract/test_reliability_concurrency.py",
    "tests/extract/test_reliability_crash.py",
    "tests/test_bench.py",
    "tests/extract/test_torchvision_video_family.py",
    "tests/pipeline/test_allocator.py",
)


def file_of(nodeid: str) -> str:
    """'tests/a/test_b.py::test_c[x]' -> 'tests/a/test_b.py'."""
    return nodeid.split("::", 1)[0]


def file_order(nodeids: Sequence[str], seconds: Mapping[str, float]) -> list[str]:
    """The files of `nodeids` (in collection order), longest expected first.

    seconds: nodeid -> seconds its last run took. A file with none of its tests there is
    unknown: SLOWEST's files first (in its order), then the other unknown files, then the
    known ones by the sum of their tests' seconds, longest first; ties keep collection order."""
    files = list(dict.fromkeys(file_of(n) for n in nodeids))
    known: dict[str, float] = defaultdict(float)
    for n in nodeids:
        if n in seconds:
            known[file_of(n)] += seconds[n]

    def rank(position: int) -> tuple:
        f = files[position]
        if f in known:
            return (2, -known[f], position)
        return (0, SLOWEST.index(f), position) if f in SLOWEST else (1, 0, position)

    return [files[k] for k in sorted(range(len(files)), key=rank)]


def reorder(items: list, seconds: Mapping[str, float]) -> None:
    """Sort `items` in place by file_order, each file's tests kept together in their own order."""
    position = {f: k for k, f in enumerate(file_order([i.nodeid for i in items], seconds))}
    items.sort(key=lambda item: position[file_of(item.nodeid)])  # stable: a file's own order stays


def merged(old: Mapping[str, float], reports: Iterable[tuple[str, float]]) -> dict[str, float]:
    """The cache's figures with this session's: each test that ran gets the sum of its phases."""
    ran: dict[str, float] = defaultdict(float)
    for nodeid, duration in reports:
        ran[nodeid] += duration
    return {**old, **{n: round(s, 2) for n, s in ran.items()}}


class Schedule:
    """The pytest plugin: reorders the collection, records the durations (tests/conftest.py registers it)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.durations: list[tuple[str, float]] = []

    def recorded(self) -> dict[str, float]:
        workerinput = getattr(self.config, "workerinput", None)
        if workerinput is not None:  # an xdist worker: the controller's reading, as every worker has it
            return workerinput.get(WORKER_INPUT, {})
        cache = getattr(self.config, "cache", None)  # None under -p no:cacheprovider
        return cache.get(CACHE_KEY, {}) if cache is not None else {}

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        node.workerinput[WORKER_INPUT] = self.recorded()

    def pytest_collection_modifyitems(self, items: list) -> None:
        if hasattr(self.config, "workerinput"):  # a session without workers keeps pytest's file order
            reorder(items, self.recorded())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not hasattr(self.config, "workerinput"):  # the controller (or a session without workers)
            self.durations.append((report.nodeid, report.duration))

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is not None and self.durations and not hasattr(self.config, "workerinput"):
            cache.set(CACHE_KEY, merged(cache.get(CACHE_KEY, {}), self.durations))
