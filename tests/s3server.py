"""A real S3 server for the tests: moto's server mode (ThreadedMotoServer) on loopback, in this
process, reached over HTTP by boto3 like any bucket; never a mocked client.

`s3_env(server, bucket)` is the environment a process needs to use it: the endpoint, a key pair,
a region, the AWS config files pointed away from the user's ~/.aws, and the shard cache in a
directory of the test's own. The offline guard (tests/offline.py) lets loopback through only.

boto3 and moto come with the dev extra; where it is not installed (a lent GPU machine runs the
quick suite with the wheels `make gpu-wheels` packs), the modules that import this one are
skipped, saying so, instead of failing to import.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

WHY = "the S3 tests need the dev extra's boto3 and moto[server] (pip install -e '.[dev]')"
boto3 = pytest.importorskip("boto3", reason=WHY)
ThreadedMotoServer = pytest.importorskip("moto.server", reason=WHY).ThreadedMotoServer
ClientError = pytest.importorskip("botocore.exceptions", reason=WHY).ClientError

ACCESS = {"AWS_ACCESS_KEY_ID": "vidstore-test", "AWS_SECRET_ACCESS_KEY": "vidstore-test-secret"}


class S3Server:
    """One moto S3 server on 127.0.0.1 (a free port)."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request in every failure
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", **{k.lower(): v for k, v in ACCESS.items()}
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()


def s3_env(server: S3Server, cache: Path) -> dict[str, str]:
    """What a process needs to reach `server` (and nothing of the user's own AWS settings)."""
    return {
        "AWS_ENDPOINT_URL": server.endpoint,
        **ACCESS,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "VIDSTORE_CACHE": str(cache),
    }


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set (and AWS_PROFILE unset) for the block, restored after."""
    names = [*values, "AWS_PROFILE"]
    saved = {k: os.environ.get(k) for k in names}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
