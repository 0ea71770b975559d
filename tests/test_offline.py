"""The session is offline (tests/offline.py): the libraries see their offline switches and the
test caches, and a test that reaches past loopback fails, in this process or in a child,
directly or through an HTTP client, even where it catches the refusal."""

from __future__ import annotations

import textwrap
from pathlib import Path

import offline
import pytest
import torch.hub

TESTS = Path(__file__).resolve().parent

INNER_TESTS = """
import socket, subprocess, sys, urllib.request

def test_direct_connection_caught():
    try:
        socket.create_connection(("192.0.2.1", 443), timeout=5)
    except OSError:
        pass

def test_name_lookup_caught():
    try:
        socket.getaddrinfo("huggingface.co", 443)
    except OSError:
        pass

def test_http_client_through_the_proxy_caught():
    try:
        urllib.request.urlopen("https://download.pytorch.org/models/resnet50-11ad3fa6.pth", timeout=10)
    except OSError:
        pass

def test_child_process_caught():
    code = "import socket\\ntry:\\n    socket.create_connection(('192.0.2.1', 80), timeout=5)\\nexcept OSError:\\n    pass"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    socket.create_connection(server.getsockname(), timeout=5).close()
    server.close()
"""


def test_libraries_see_the_offline_switches_and_the_test_caches():
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE and huggingface_hub.constants.is_offline_mode()
    assert Path(huggingface_hub.constants.HF_HUB_CACHE).is_relative_to(offline.HOME)
    assert Path(torch.hub.get_dir()).is_relative_to(offline.HOME)


def test_a_test_reaching_past_loopback_fails_even_when_it_catches_the_error(pytester: pytest.Pytester):
    pytester.makeconftest(
        f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import offline

        def pytest_configure(config):
            config.pluginmanager.register(offline, "offline")
        """
    )
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TESTS))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=4, passed=1)
    text = result.stdout.str()
    for seen in (
        "socket.create_connection(('192.0.2.1', 443))",
        "socket.getaddrinfo('huggingface.co')",
        "a request through the HTTP proxy: 'CONNECT download.pytorch.org:443",
        "socket.create_connection(('192.0.2.1', 80))",
    ):
        assert seen in text, text
