"""Run by every Python process the tests start (tests/offline.py puts this folder first on
PYTHONPATH): the test process's socket guard, reporting to the file it names."""

import socket_guard

socket_guard.install()
