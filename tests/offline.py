"""The test session is offline before any library is imported, and a test that reaches past
loopback fails.

tests/conftest.py imports this module first and registers it as a plugin. On import it sets,
for this process and every process a test starts (they inherit os.environ; the acceptance
tier's minimal environment adds CHILD_ENV):

- HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, HF_DATASETS_OFFLINE: huggingface_hub (imported by timm
  and OpenCLIP) reads them once, at its own import, so a fixture that sets them later changes
  nothing, and an "offline" test would really try to download;
- HF_HOME and TORCH_HOME in a temporary directory: no test reads the user's caches (where
  real weights may sit) or fills them;
- HTTP_PROXY, HTTPS_PROXY and ALL_PROXY at RecordingProxy, a loopback proxy of this process
  that writes every request down and refuses it (NO_PROXY for loopback);
- PYTHONPATH led by tests/netguard, whose sitecustomize installs the socket guard in every
  Python process started from here, writing refused attempts to one log file.

The guard (tests/netguard/socket_guard.py) refuses connections and name lookups of any host
but loopback, and writes the attempt down, as the proxy does. After each phase of each test (setup, call, teardown) the attempts made by this
process and by its children are collected, and any attempt fails that test, even where the
code under test caught the refusal.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socketserver
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

GUARD_DIR = Path(__file__).resolve().parent / "netguard"
sys.path.insert(0, str(GUARD_DIR))
import socket_guard  # noqa: E402  (from GUARD_DIR, as the children's sitecustomize imports it)

# Libraries that read the offline switches when they are imported.
READ_AT_IMPORT = ("huggingface_hub", "timm", "open_clip")

early = [name for name in READ_AT_IMPORT if name in sys.modules]
if early:
    raise pytest.UsageError(
        f"{', '.join(early)} was imported before tests/offline.py made the session offline (a plugin or "
        "an option loaded it first): its offline switch would be off; load no such plugin with the tests"
    )

HOME = Path(tempfile.mkdtemp(prefix="vidstore-tests-home-"))
_SESSION_PID = os.getpid()


@atexit.register
def _remove_home() -> None:
    if os.getpid() == _SESSION_PID:  # not in a forked child that exits through atexit
        shutil.rmtree(HOME, ignore_errors=True)


SOCKET_LOG = HOME / "refused-connections.log"
SOCKET_LOG.touch()
SOCKET_LOG.chmod(0o666)  # children that drop to nobody write to it too
HOME.chmod(0o755)


class RecordingProxy(socketserver.StreamRequestHandler):
    """The HTTP(S) proxy of every process of the session: it writes the request down as a refused
    attempt and answers 403, so a client that honours the proxy variables (any process, Python or
    not) is seen reaching out and fails at once instead of waiting for a timeout."""

    timeout = 5

    def handle(self) -> None:
        try:
            request = self.rfile.readline(2048).decode("latin-1").strip()
        except OSError:
            request = "(no request line)"
        if request_host(request) in expected_hosts:
            expected_requests.append(request)
        else:
            with open(SOCKET_LOG, "a", encoding="utf-8") as f:
                f.write(f"a request through the HTTP proxy: {request!r}\n")
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


# Hosts whose requests a test expects to see refused (refusing_downloads_from), and those requests.
expected_hosts: set[str] = set()
expected_requests: list[str] = []


def request_host(request: str) -> str:
    """The host of a proxy request line: 'CONNECT host:443 HTTP/1.1' or 'GET http://host/... HTTP/1.1'."""
    parts = request.split()
    if len(parts) < 2:
        return ""
    target = parts[1].split("://", 1)[-1]
    return target.split("/", 1)[0].rsplit(":", 1)[0].lower()


@contextlib.contextmanager
def refusing_downloads_from(*hosts: str) -> Iterator[list[str]]:
    """Within the block, requests through the proxy to `hosts` are refused as ever but expected:
    they do not fail the test, and the yielded list collects them. For a test of what a command
    does offline when its default is to download (the README's `make features` on a fresh machine)."""
    expected_hosts.update(hosts)
    seen: list[str] = []
    start = len(expected_requests)
    try:
        yield seen
    finally:
        expected_hosts.difference_update(hosts)
        seen += expected_requests[start:]


_proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), RecordingProxy)
_proxy.daemon_threads = True
threading.Thread(target=_proxy.serve_forever, name="offline-proxy", daemon=True).start()
PROXY = f"http://127.0.0.1:{_proxy.server_address[1]}"

CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HOME": str(HOME / "huggingface"),
    "TORCH_HOME": str(HOME / "torch"),
    "HTTP_PROXY": PROXY,
    "HTTPS_PROXY": PROXY,
    "ALL_PROXY": PROXY,
    "http_proxy": PROXY,
    "https_proxy": PROXY,
    "all_proxy": PROXY,
    "NO_PROXY": "localhost,127.0.0.1,::1",
    "no_proxy": "localhost,127.0.0.1,::1",
    socket_guard.LOG_ENV: str(SOCKET_LOG),
    "PYTHONPATH": os.pathsep.join([str(GUARD_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]),
}
os.environ.update(CHILD_ENV)
socket_guard.install()

_log_offset = 0


def refused_since_last_check() -> list[str]:
    """The attempts this process and its children made since the previous call, from the log
    (each entry a line, then its caller's stack indented; the guard of every process writes there)."""
    global _log_offset
    with open(SOCKET_LOG, encoding="utf-8") as f:
        f.seek(_log_offset)
        text = f.read()
        _log_offset = f.tell()
    entries: list[str] = []
    for line in text.splitlines():
        if line.startswith(" ") and entries:
            entries[-1] += "\n" + line
        elif line:
            entries.append(line)
    return entries


def fail_if_reached(phase: str) -> None:
    refused = refused_since_last_check()
    if refused:
        pytest.fail(
            f"the {phase} opened a connection past loopback (tests run offline; serve a download from a "
            "loopback server or patch the fetch):\n" + "\n".join(refused),
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    try:
        return (yield)
    finally:
        fail_if_reached("setup")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    finally:
        fail_if_reached("test")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        fail_if_reached("teardown")
