"""Where the store's bytes live: a directory on a filesystem, or a prefix in an S3-compatible bucket.

Every read, write, listing, conditional manifest replacement, claim and deletion the store makes
goes through the `Root` of the path it touches (`root_of(path)`), so the modules above it speak
of paths only:

    LocalRoot   a directory: temp name + fsync + rename, flocks (`.lock`, `.claims/NNNNN`); the
                behaviour and the bytes the store always had
    S3Root      `s3://bucket/prefix`: objects written whole (a PUT is atomic, its sha256 checked by
                the server on arrival), the manifest replaced with If-Match on the ETag it was read
                with (created with If-None-Match), claims created with If-None-Match and an expiry,
                shards read through a local cache keyed by their sha256 (cache.py)

An S3 location is carried as the path `Path("s3://bucket/prefix")`, which pathlib spells
`s3:/bucket/prefix`: joining, `.name` and `.parent` work on it as on a directory, and
`display()` writes it back as `s3://...` for people.

Endpoint and credentials are boto3's own chain (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws): what every S3 tool reads. A bucket that does not
exist, refused credentials or an endpoint that cannot be reached is a ConfigError naming
FEATURES_ROOT, raised by the first touch of the root, before anything is written.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, IntegrityError, StoreError
from ..files import atomic_write_bytes, disk_error, file_sha256, fsync_dir, now_iso
from .cache import ShardCache, shard_cache

SCHEME = "s3:"  # the first part of Path("s3://bucket/prefix")
CLAIM_TTL = 300.0  # seconds an S3 claim lives without a renewal; a holder renews it every CLAIM_TTL / 5
# Connect quickly and retry little: a wrong endpoint is reported in seconds, not after minutes of backoff.
CONNECT_TIMEOUT, READ_TIMEOUT, ATTEMPTS = 3, 60, 3


def is_remote(path: Path | str) -> bool:
    """True for an `s3://bucket/prefix` location (as a string or as the Path it becomes)."""
    return str(path).startswith(("s3://", "s3:/"))


def as_path(location: Path | str) -> Path:
    """A root or set location as the store's paths carry it (`s3://b/p` -> Path('s3:/b/p'))."""
    return Path(location)


def display(path: Path | str) -> str:
    """A location as people write it: `s3://bucket/key` for a bucket, the path otherwise."""
    text = str(path)
    return "s3://" + text[len("s3:/") :].lstrip("/") if is_remote(text) and not text.startswith("s3://") else text


def absolute(path: Path) -> Path:
    """The path made absolute (a bucket location already is)."""
    return Path(path) if is_remote(path) else Path(path).resolve()


def root_of(path: Path | str) -> Root:
    """The Root that holds `path`: the bucket's for an s3:// location, else the local filesystem."""
    if not is_remote(path):
        return LOCAL
    bucket = Path(path).parts[1] if len(Path(path).parts) > 1 else ""
    if not bucket:
        raise ConfigError(
            f"--features-root (FEATURES_ROOT=): {display(path)} names no bucket; write s3://bucket/prefix"
        )
    # one client per bucket and the settings that reach it: a process that changes its endpoint,
    # credentials or cache gets a root of its own, never a client made for the others
    key = (bucket, *(os.environ.get(name, "") for name in CLIENT_SETTINGS))
    with _BUCKETS_LOCK:
        if key not in _BUCKETS:
            _BUCKETS[key] = S3Root(bucket)
        return _BUCKETS[key]


class Root:
    """Where the store's bytes live. `tag`s are opaque: what a conditional replace compares."""

    def read_bytes(self, path: Path) -> bytes:
        raise NotImplementedError

    def read_tagged(self, path: Path) -> tuple[bytes, Any]:
        """The file's bytes and the tag a conditional replace_if compares; FileNotFoundError if absent."""
        raise NotImplementedError

    def write(self, path: Path, data: bytes) -> None:
        """Replace `path` whole: readers see the old bytes or the new, never a mix."""
        raise NotImplementedError

    def replace_if(self, path: Path, data: bytes, tag: Any) -> bool:
        """Write `data` unless `path` changed since it was read with `tag` (None: unless it exists).
        False when another writer got there first."""
        raise NotImplementedError

    def exists(self, path: Path) -> bool:
        raise NotImplementedError

    def size(self, path: Path) -> int | None:
        """Bytes of `path`, None when absent."""
        raise NotImplementedError

    def sha256(self, path: Path) -> str:
        """sha256 of the bytes stored at `path` now (streamed, never the cache)."""
        raise NotImplementedError

    def delete(self, path: Path) -> None:
        """Remove `path`; absent is fine."""
        raise NotImplementedError

    def files(self, directory: Path) -> dict[str, int]:
        """{name: bytes} of the files directly in `directory` (not below)."""
        raise NotImplementedError

    def manifests(self, root: Path, name: str) -> list[Path]:
        """Every `root/<dataset>/<set>/<name>`."""
        raise NotImplementedError

    def shard_bytes(self, path: Path, sha256: str | None) -> bytes:
        """A shard's bytes (through the local cache where the root is remote), unchecked."""
        return self.read_bytes(path)

    def local_file(self, path: Path, sha256: str | None = None) -> Path:
        """A local file holding `path`'s bytes, for h5py to open (the file itself, or its cached copy)."""
        return Path(path)

    def prepare(self, set_dir: Path) -> None:
        """Make `set_dir` ready to be written; a ConfigError/StoreError naming FEATURES_ROOT if it cannot be."""
        raise NotImplementedError

    def check(self) -> None:
        """Reach the root now: a bucket that cannot be used is a ConfigError here (a directory is made when written)."""

    def rename(self, src: Path, dst: Path) -> None:
        """Move `src` to `dst` (a staged Dask shard into its final name)."""
        raise NotImplementedError

    def locked(self, set_dir: Path) -> contextlib.AbstractContextManager:
        """Held while the manifest is read, changed and written back (a no-op where writes are conditional)."""
        return contextlib.nullcontext()

    def lock_held(self, set_dir: Path) -> bool:
        return False

    def claim(self, set_dir: Path, index: int) -> ClaimHandle:
        raise NotImplementedError


class ClaimHandle:
    """Who computes shard `index` of a set: exclusive, and dropped when its holder dies."""

    path: Path  # the claim file or object

    def acquire(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def held_elsewhere(self) -> bool:
        raise NotImplementedError

    def holder(self) -> str:
        """The holder's 'host pid time' line ('' when unknown)."""
        raise NotImplementedError


# ---------------------------------------------------------------- a directory
class LocalRoot(Root):
    """A directory tree: atomic renames and flocks (the kernel drops a dead holder's flock)."""

    def read_bytes(self, path: Path) -> bytes:
        return Path(path).read_bytes()

    def read_tagged(self, path: Path) -> tuple[bytes, Any]:
        return Path(path).read_bytes(), None  # the caller holds .lock: nothing to compare

    def write(self, path: Path, data: bytes) -> None:
        atomic_write_bytes(Path(path), data)

    def replace_if(self, path: Path, data: bytes, tag: Any) -> bool:
        atomic_write_bytes(Path(path), data)  # conditional through the .lock the caller holds
        return True

    def exists(self, path: Path) -> bool:
        return Path(path).exists()

    def size(self, path: Path) -> int | None:
        try:
            return Path(path).stat().st_size
        except FileNotFoundError:
            return None

    def sha256(self, path: Path) -> str:
        return file_sha256(Path(path))

    def delete(self, path: Path) -> None:
        Path(path).unlink(missing_ok=True)

    def files(self, directory: Path) -> dict[str, int]:
        out: dict[str, int] = {}
        if not Path(directory).is_dir():
            return out
        for p in sorted(Path(directory).iterdir()):
            with contextlib.suppress(FileNotFoundError):
                if p.is_file():
                    out[p.name] = p.stat().st_size
        return out

    def manifests(self, root: Path, name: str) -> list[Path]:
        return sorted(Path(root).glob(f"*/*/{name}")) if Path(root).is_dir() else []

    def prepare(self, set_dir: Path) -> None:
        try:
            Path(set_dir).mkdir(parents=True, exist_ok=True)
            os.close(os.open(Path(set_dir) / ".lock", os.O_RDWR | os.O_CREAT, 0o664))  # what locked() needs
        except OSError as e:
            raise StoreError(
                f"--features-root (FEATURES_ROOT=): cannot write the feature set at {set_dir} "
                f"({e.strerror or e}); point FEATURES_ROOT at a directory you can write"
            ) from None

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)
        fsync_dir(Path(dst).parent)

    @contextlib.contextmanager
    def locked(self, set_dir: Path) -> Iterator[None]:
        fd = os.open(Path(set_dir) / ".lock", os.O_RDWR | os.O_CREAT, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def lock_held(self, set_dir: Path) -> bool:
        return flock_held(Path(set_dir) / ".lock")

    def claim(self, set_dir: Path, index: int) -> ClaimHandle:
        return FileClaim(Path(set_dir), index)


class FileClaim(ClaimHandle):
    """A non-blocking exclusive flock on `.claims/<index>`."""

    def __init__(self, set_dir: Path, index: int):
        claims = set_dir / ".claims"
        claims.mkdir(exist_ok=True)
        self.path = claims / f"{index:05d}"
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{holder_line()}\n".encode())
        except OSError as e:  # the lock was taken; only the holder's line could not be written
            self.release()
            raise disk_error(e, self.path) from e
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        return self.path.exists() and flock_held(self.path)

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip()
        return ""


def holder_line() -> str:
    return f"{socket.gethostname()} {os.getpid()} {now_iso()}"


def flock_held(path: Path) -> bool:
    """Probe an flock without waiting: True if another open file description holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


LOCAL = LocalRoot()


# ---------------------------------------------------------------- a bucket
_BUCKETS: dict[tuple[str, ...], S3Root] = {}
_BUCKETS_LOCK = threading.Lock()


def _forget_buckets_in_child() -> None:
    """A forked process (a DataLoader worker, a decoder) makes its own clients: a connection pool
    is not to be shared with the parent."""
    global _BUCKETS_LOCK
    _BUCKETS.clear()
    _BUCKETS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_buckets_in_child)
# The environment that decides which endpoint, credentials and cache a bucket's client has.
CLIENT_SETTINGS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "VIDSTORE_CACHE",
    "VIDSTORE_CACHE_SIZE",
)


class S3Root(Root):
    """One bucket, through one boto3 client (thread-safe); checked on first use."""

    def __init__(self, bucket: str):
        self.bucket = bucket
        self._client: Any = None
        self._lock = threading.Lock()
        self.cache: ShardCache = shard_cache()
        self.endpoint = "the endpoint"  # its URL once the client is made

    # -------------------------------------------------------------- the client and its errors
    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.connect()
            return self._client

    def connect(self) -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        config = Config(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"max_attempts": ATTEMPTS, "mode": "standard"},
            # checksums only where an operation asks for one (PutObject's ChecksumSHA256):
            # not every S3-compatible server takes the newer default ones
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = session.client("s3", region_name=session.region_name or "us-east-1", config=config)
        self.endpoint = client.meta.endpoint_url
        try:
            client.head_bucket(Bucket=self.bucket)
        except Exception as e:
            raise self.access_error(e) from None
        return client

    def access_error(self, e: BaseException) -> BaseException:
        """A ConfigError naming FEATURES_ROOT for what the user must fix: the bucket, the credentials,
        the endpoint; other errors as they are."""
        from botocore import exceptions as bx

        where = f"--features-root (FEATURES_ROOT=): s3://{self.bucket} at {self.endpoint}"
        if isinstance(e, bx.NoCredentialsError):
            return ConfigError(
                f"{where}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError)):
            return ConfigError(
                f"{where}: the endpoint cannot be reached ({e}); check AWS_ENDPOINT_URL (or the profile's endpoint_url)"
            )
        if isinstance(e, bx.ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (code == "404" and "Bucket" in e.operation_name):  # not a missing key
                return ConfigError(f"{where}: the bucket {self.bucket!r} does not exist; create it or fix the name")
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
                return ConfigError(
                    f"{where}: the endpoint refused the credentials ({code or status}); check AWS_ACCESS_KEY_ID, "
                    f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the bucket's policy"
                )
        if isinstance(e, bx.BotoCoreError):
            return ConfigError(f"{where}: {e}")
        return e

    @contextlib.contextmanager
    def calls(self) -> Iterator[None]:
        """Turn access errors met mid-run into the same ConfigError as a first touch."""
        from botocore import exceptions as bx

        try:
            yield
        except (bx.BotoCoreError, bx.ClientError) as e:
            raise self.access_error(e) from None

    @staticmethod
    def key(path: Path) -> str:
        return "/".join(Path(path).parts[2:])

    @staticmethod
    def missing(e: BaseException) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(e, ClientError) and (
            e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")
            or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
        )

    @staticmethod
    def precondition_failed(e: BaseException) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(e, ClientError) and (
            e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")
            or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412)
        )

    def get(self, path: Path) -> dict:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(path))
        except Exception as e:
            if self.missing(e):
                raise FileNotFoundError(f"{display(path)}: no such object") from None
            raise self.access_error(e) from None

    # -------------------------------------------------------------- bytes
    def read_bytes(self, path: Path) -> bytes:
        return self.read_tagged(path)[0]

    def read_tagged(self, path: Path) -> tuple[bytes, Any]:
        response = self.get(path)
        with self.calls():
            return response["Body"].read(), response["ETag"]

    def put(self, path: Path, data: bytes, **conditions: str) -> None:
        """One PUT, its sha256 checked by the server over the bytes that arrived."""
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.key(path),
            Body=data,
            ChecksumSHA256=checksum,
            Metadata={"sha256": hashlib.sha256(data).hexdigest()},
            **conditions,
        )

    def write(self, path: Path, data: bytes) -> None:
        with self.calls():
            self.put(path, data)

    def replace_if(self, path: Path, data: bytes, tag: Any) -> bool:
        try:
            self.put(path, data, **({"IfMatch": tag} if tag is not None else {"IfNoneMatch": "*"}))
            return True
        except Exception as e:
            if self.precondition_failed(e):
                return False
            raise self.access_error(e) from None

    def head(self, path: Path) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(path))
        except Exception as e:
            if self.missing(e):
                return None
            raise self.access_error(e) from None

    def exists(self, path: Path) -> bool:
        return self.head(path) is not None

    def current_etag(self, path: Path) -> str | None:
        head = self.head(path)
        return None if head is None else head["ETag"]

    def size(self, path: Path) -> int | None:
        head = self.head(path)
        return None if head is None else int(head["ContentLength"])

    def sha256(self, path: Path) -> str:
        body = self.get(path)["Body"]
        digest = hashlib.sha256()
        with self.calls():
            for block in body.iter_chunks(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def delete(self, path: Path) -> None:
        with self.calls():
            self.client.delete_object(Bucket=self.bucket, Key=self.key(path))

    def listing(self, prefix: str, delimiter: str = "") -> Iterator[dict]:
        """Every object under `prefix` (with a delimiter: directly under it)."""
        with self.calls():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, **({"Delimiter": delimiter} if delimiter else {})
            )
            for page in pages:
                yield from page.get("Contents", [])

    def files(self, directory: Path) -> dict[str, int]:
        prefix = self.key(directory).rstrip("/") + "/"
        return {o["Key"][len(prefix) :]: int(o["Size"]) for o in self.listing(prefix, "/")}

    def manifests(self, root: Path, name: str) -> list[Path]:
        prefix = self.key(root).rstrip("/")
        prefix = prefix + "/" if prefix else ""
        out = []
        for o in self.listing(prefix):
            parts = o["Key"][len(prefix) :].split("/")
            if len(parts) == 3 and parts[2] == name:
                out.append(Path(root) / parts[0] / parts[1] / name)
        return sorted(out)

    def shard_bytes(self, path: Path, sha256: str | None) -> bytes:
        if sha256 is None:
            return self.read_bytes(path)
        hit = self.cache.get(sha256)
        if hit is not None:
            try:
                return hit.read_bytes()
            except FileNotFoundError:  # evicted by another reader between the lookup and the read
                pass
        return self.fetch(path, sha256)[1]

    def local_file(self, path: Path, sha256: str | None = None) -> Path:
        if sha256 is None:  # not known to the caller: fetched, and cached under the sha256 of what arrived
            data = self.read_bytes(path)
            return self.cache.put(hashlib.sha256(data).hexdigest(), data)
        return self.cached(path, sha256)

    def cached(self, path: Path, sha256: str) -> Path:
        """The cached copy of an immutable shard; fetched on a miss, and cached only when its bytes
        are the ones the manifest recorded (a corrupt object is refused, never cached)."""
        hit = self.cache.get(sha256)
        return hit if hit is not None else self.fetch(path, sha256)[0]

    def fetch(self, path: Path, sha256: str) -> tuple[Path, bytes]:
        """Fetch a shard, check it and cache it: its cached file and the bytes themselves (a miss's
        reader takes them as they are, rather than reading back the file just written)."""
        data = self.read_bytes(path)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError.checksum(display(path))
        return self.cache.put(sha256, data), data

    def prepare(self, set_dir: Path) -> None:
        self.check()  # a wrong bucket stops here, before anything is written

    def check(self) -> None:
        self.client  # made on first use, with the bucket checked

    def rename(self, src: Path, dst: Path) -> None:
        with self.calls():
            self.client.copy_object(
                Bucket=self.bucket, Key=self.key(dst), CopySource={"Bucket": self.bucket, "Key": self.key(src)}
            )
        self.delete(src)

    def claim(self, set_dir: Path, index: int) -> ClaimHandle:
        return ObjectClaim(self, Path(set_dir) / ".claims" / f"{index:05d}")


@dataclass
class ClaimBody:
    host: str
    pid: int
    since: str
    expires: float  # epoch seconds

    def line(self) -> str:
        return f"{self.host} {self.pid} {self.since}"

    def stale(self) -> bool:
        """Past its expiry, or held by a process of this host that is gone (as a dropped flock)."""
        if time.time() > self.expires:
            return True
        return self.host == socket.gethostname() and not pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ObjectClaim(ClaimHandle):
    """`.claims/NNNNN` created with If-None-Match; renewed with If-Match while held (a thread), so
    it expires CLAIM_TTL after its holder dies; a stale one is taken over with If-Match on its ETag."""

    def __init__(self, root: S3Root, path: Path):
        self.root, self.path = root, path
        self.etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def body(self) -> bytes:
        host, pid, since = holder_line().split(" ", 2)
        return json.dumps({"host": host, "pid": int(pid), "since": since, "expires": time.time() + CLAIM_TTL}).encode()

    def current(self) -> tuple[ClaimBody | None, str | None]:
        """The claim object's holder and ETag; (None, None) when there is none."""
        try:
            data, tag = self.root.read_tagged(self.path)
        except FileNotFoundError:
            return None, None
        try:
            return ClaimBody(**json.loads(data)), tag
        except (ValueError, TypeError):
            return ClaimBody("?", 0, "", 0.0), tag  # unreadable: stale, taken over

    def acquire(self) -> bool:
        held, tag = self.current()
        if held is not None and not held.stale():
            return False
        body = self.body()
        if not self.root.replace_if(self.path, body, tag):
            return False  # another run created or took it first
        self.etag = self.root.current_etag(self.path)
        self._stop.clear()
        self._renewer = threading.Thread(target=self.renew, name=f"claim-{self.path.name}", daemon=True)
        self._renewer.start()
        return True

    def renew(self) -> None:
        while not self._stop.wait(CLAIM_TTL / 5):
            with contextlib.suppress(Exception):  # missed once: the next renewal is still within the expiry
                if self.root.replace_if(self.path, self.body(), self.etag):
                    self.etag = self.root.current_etag(self.path)

    def release(self) -> None:
        if self.etag is None:
            return
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with contextlib.suppress(Exception):  # gone or taken over: not ours to delete any more
            if self.root.current_etag(self.path) == self.etag:
                self.root.delete(self.path)
        self.etag = None

    def held_elsewhere(self) -> bool:
        held, tag = self.current()
        return held is not None and not held.stale() and tag != self.etag

    def holder(self) -> str:
        held, _ = self.current()
        return held.line() if held is not None else ""
