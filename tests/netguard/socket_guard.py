"""Refuse, and remember, every connection to a host that is not this machine's loopback.

Installed in the test process by tests/offline.py and, through sitecustomize.py beside this
file, in every Python process a test starts. A refused call raises what an unplugged machine
raises (OSError ENETUNREACH, or gaierror for a name), so the code under test fails at once
instead of waiting for a network timeout; the attempt is also written down, so that the test
fails even where the code under test catches the error (a download that falls back to random
weights, a client that retries quietly).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import traceback

# The file (one line per refused attempt) that the test process reads after each test phase.
LOG_ENV = "VIDSTORE_TESTS_SOCKET_LOG"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

_real: dict = {}


def is_local(host: object) -> bool:
    """True for loopback addresses and names, and for no host / the unspecified address (a bind's)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    name = str(host).strip("[]").split("%", 1)[0].lower()
    if name in ("", *LOOPBACK_NAMES):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def refuse(what: str) -> None:
    """Write the attempt down in the log file, if any, with the caller that made it."""
    caller = "".join(traceback.format_stack(limit=8)[:-2]).rstrip()
    line = f"{what} (pid {os.getpid()})\n{caller}"
    log = os.environ.get(LOG_ENV)
    if log:
        try:
            with open(log, "a", encoding="utf-8") as f:
                f.write(line.replace("\n", "\n    ") + "\n")
        except OSError:
            pass  # a process without write access still has the error raised below


def _host_of(sock: socket.socket, address: object) -> object:
    """The host an AF_INET/AF_INET6 address names; None (allowed) for any other family (AF_UNIX...)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and address:
        return address[0]
    return None


def _connect(self: socket.socket, address: object) -> None:
    host = _host_of(self, address)
    if not is_local(host):
        refuse(f"socket.connect({address!r})")
        raise OSError(errno.ENETUNREACH, f"tests run offline: connect to {address!r} refused (tests/netguard)")
    return _real["connect"](self, address)


def _connect_ex(self: socket.socket, address: object) -> int:
    host = _host_of(self, address)
    if not is_local(host):
        refuse(f"socket.connect_ex({address!r})")
        return errno.ENETUNREACH
    return _real["connect_ex"](self, address)


def _create_connection(address, *args, **kwargs):
    if not is_local(address[0]):
        refuse(f"socket.create_connection({address!r})")
        raise OSError(errno.ENETUNREACH, f"tests run offline: connection to {address!r} refused (tests/netguard)")
    return _real["create_connection"](address, *args, **kwargs)


def _getaddrinfo(host, *args, **kwargs):
    if not is_local(host):
        refuse(f"socket.getaddrinfo({host!r})")
        raise socket.gaierror(socket.EAI_NONAME, f"tests run offline: name {host!r} not resolved (tests/netguard)")
    return _real["getaddrinfo"](host, *args, **kwargs)


def install() -> None:
    """Patch the socket module of this process (once)."""
    if _real:
        return
    _real.update(
        connect=socket.socket.connect,
        connect_ex=socket.socket.connect_ex,
        create_connection=socket.create_connection,
        getaddrinfo=socket.getaddrinfo,
    )
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.create_connection = _create_connection
    socket.getaddrinfo = _getaddrinfo
