"""How much the shard cache saves: `make train` on a set in a bucket, first (fetched) and second (cached).

    python -m stages.bench.bucket [--links loopback,1gbit/2ms,100mbit/20ms] [--videos 2048] [--rounds 2]
    python -m stages.bench.bucket --endpoint URL --bucket NAME      (a real bucket, as the link is)

What a cache saves is the transfer, so the figure depends on the link between the reader and
the bucket. Here the bucket is moto's S3 server (the dev extra) in a process of its own on
loopback, and each link is made by a relay in this process between `make train` and that
server: every byte from the server leaves at the link's rate (one rate shared by every
connection, as one network interface is), and every request waits the round trip before it goes
on. `loopback` is no relay at all: moto's server straight, as fast as this machine copies memory.

Each link, each round: the cache emptied, then `make train FEATURES=synthetic MODEL=mean EPOCHS=1`
on the bucket twice (the first run fetches, checks and caches every shard; the second reads the
cache), as users run it; the figure is each run's own `read_seconds` (metrics.json: opening the
store, the manifest, every shard read and checked). Once per round, the same command on the
local copy of the set, for the floor. The set: `--videos` UCF101-like videos x 16 x 2048 float16
(2,048: 135 MB in 8 shards of 256), written here and sent with `store push`.

It prints one JSON object (also written to --out): per link, each round's first, second and
local read seconds, and the gain (first / second), best against best and per round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import repo_root

BUCKET, PREFIX, SET = "bench", "store", "synthetic"
CHUNK = 64 * 1024
UNITS = {"gbit": 1e9 / 8, "mbit": 1e6 / 8, "kbit": 1e3 / 8}


@dataclass(frozen=True)
class LinkSpec:
    """A link: `rate` bytes/s from the bucket (None: no relay) and `rtt` seconds per request."""

    name: str
    rate: float | None
    rtt: float

    @classmethod
    def parse(cls, text: str) -> LinkSpec:
        """`loopback`, or `<n>gbit|mbit|kbit[/<m>ms]`: e.g. 1gbit/2ms, 100mbit/20ms."""
        if text == "loopback":
            return cls(text, None, 0.0)
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(gbit|mbit|kbit)(?:/(\d+(?:\.\d+)?)ms)?", text.strip().lower())
        if not m:
            raise SystemExit(f"--links: {text!r} is not a link; write loopback or e.g. 1gbit/2ms, 100mbit/20ms")
        return cls(text, float(m.group(1)) * UNITS[m.group(2)], float(m.group(3) or 0) / 1000)


class Relay:
    """A TCP relay on 127.0.0.1 to `upstream` that behaves like a network link: the bytes coming back
    leave at `rate` bytes/s, all connections sharing it, and each request waits `rtt` seconds before
    it goes on (a request: what a client sends after the server last answered on that connection;
    the rest of a long upload does not wait again). Threads: one accepting, two per connection."""

    def __init__(self, upstream: tuple[str, int], rate: float, rtt: float):
        self.upstream, self.rate, self.rtt = upstream, rate, rtt
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.free_at = 0.0  # when the link has sent everything queued so far (time.monotonic)
        self.requests = 0  # round trips waited
        threading.Thread(target=self.accept, daemon=True, name="relay-accept").start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            answered = threading.Event()  # the server has sent since the client last did
            answered.set()
            threading.Thread(
                target=self.pump, args=(client, server, lambda n: self.request(answered)), daemon=True
            ).start()
            threading.Thread(
                target=self.pump, args=(server, client, lambda n: self.pace(n, answered)), daemon=True
            ).start()

    def request(self, answered: threading.Event) -> None:
        """A client's bytes: the round trip first where they start a new request."""
        if answered.is_set():
            answered.clear()
            self.requests += 1
            time.sleep(self.rtt)

    def pace(self, n: int, answered: threading.Event) -> None:
        """Wait until the link has carried n more bytes after those queued before them."""
        answered.set()
        with self.lock:
            self.free_at = max(self.free_at, time.monotonic()) + n / self.rate
            due = self.free_at
        time.sleep(max(0.0, due - time.monotonic()))

    @staticmethod
    def pump(src: socket.socket, dst: socket.socket, wait: Callable[[int], None]) -> None:
        """Copy src to dst until either closes, calling wait(n) before forwarding each n bytes."""
        buf = bytearray(CHUNK)
        try:
            while n := src.recv_into(buf):
                wait(n)
                dst.sendall(memoryview(buf)[:n])
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in a process of its own on loopback; yields its endpoint URL."""
    try:
        import boto3  # noqa: F401  (the client `make train` uses; here to make the bucket)
        import moto.server  # noqa: F401
    except ImportError:
        raise SystemExit("the bucket bench needs the dev extra's boto3 and moto[server]: pip install -e '.[dev]'")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def bucket_env(endpoint: str, cache: Path, moto: bool) -> dict[str, str]:
    """The environment of a run against the bench's bucket: its endpoint, the cache of the bench's
    own, and moto's key pair where the bucket is moto's (a real one takes the user's own settings)."""
    env = dict(os.environ, VIDSTORE_CACHE=str(cache), AWS_ENDPOINT_URL=endpoint)
    if moto:
        env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    return env


def prepare(work: Path, videos: int, shard_size: int, root: str, env: dict[str, str], moto: bool) -> Path:
    """The synthetic set written under work/local, and pushed to `root` (the bucket made first on moto)."""
    from pipeline.store.transfer import copy_set

    from .training import write_synthetic_set

    local = work / "local"
    test = max(1, videos // 5)
    set_dir = write_synthetic_set(local / SET / SET, videos - test, test, shard_size=shard_size)
    saved = dict(os.environ)
    os.environ.update(env)  # boto3 in this process reads the same endpoint and keys as the runs
    try:
        if moto:
            import boto3

            boto3.client("s3").create_bucket(Bucket=BUCKET)
        copy_set(set_dir, Path(root))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return local


def train_read_seconds(features_root: str, out: Path, env: dict[str, str]) -> float:
    """`make train` on the synthetic set in `features_root`, as users run it: its metrics.json's read_seconds."""
    cmd = ["make", "-s", "train", f"FEATURES={SET}", f"FEATURES_ROOT={features_root}", "MODEL=mean", "EPOCHS=1"]
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(cmd + [f"OUT={out}"], cwd=repo_root(), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    metrics = sorted(out.rglob("metrics.json"))
    return float(json.loads(metrics[0].read_text())["read_seconds"])


@dataclass(frozen=True)
class Setup:
    """What every link's runs share: the bucket's endpoint (moto's or a real one), the set's
    s3:// root, its local copy (the floor) and its size, and the bench's scratch folder."""

    endpoint: str
    moto: bool
    root: str
    local: Path
    set_bytes: int
    work: Path


def measure_link(spec: LinkSpec, setup: Setup, rounds: int) -> dict:
    """Each round: the cache emptied, the first and second read through the link, the local root's read.
    `first_mb_per_s`: the set's bytes over the first read's seconds, what the link delivered in effect."""
    endpoint, work = setup.endpoint, setup.work
    relay = Relay(parse_host(endpoint), spec.rate, spec.rtt) if spec.rate is not None else None
    url = f"http://127.0.0.1:{relay.port}" if relay else endpoint
    out: dict = {"rate_bytes_per_s": spec.rate, "rtt_s": spec.rtt, "rounds": []}
    try:
        for _ in range(rounds):
            cache = work / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            env = bucket_env(url, cache, setup.moto)
            first = train_read_seconds(setup.root, work / "run", env)
            second = train_read_seconds(setup.root, work / "run", env)
            floor = train_read_seconds(str(setup.local), work / "run", env)
            out["rounds"].append(
                {
                    "first": first,
                    "second": second,
                    "local": floor,
                    "gain": first / second,
                    "first_mb_per_s": setup.set_bytes / first / 1e6,
                }
            )
            print(f"{spec.name}: first {first:.2f} s, second {second:.2f} s, local root {floor:.2f} s", flush=True)
    finally:
        if relay:
            relay.close()
    best = {k: min(r[k] for r in out["rounds"]) for k in ("first", "second", "local")}
    out["best"] = best
    out["gain_best_against_best"] = best["first"] / best["second"]
    return out


def parse_host(endpoint: str) -> tuple[str, int]:
    m = re.fullmatch(r"https?://([^:/]+):(\d+)/?", endpoint)
    if not m:
        raise SystemExit(f"a link needs an http://host:port endpoint to relay to, not {endpoint!r}")
    return m.group(1), int(m.group(2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", default="loopback,1gbit/2ms,100mbit/20ms", help="comma-separated links")
    parser.add_argument("--videos", type=int, default=2048, help="videos in the synthetic set (x 16 x 2048 float16)")
    parser.add_argument("--shard-size", type=int, default=256, help="videos per shard")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per link; best against best counts")
    parser.add_argument("--endpoint", help="a real bucket's endpoint URL instead of moto's server (no relay)")
    parser.add_argument("--bucket", default=BUCKET, help="with --endpoint: an existing bucket to write under")
    parser.add_argument("--out", type=Path, default=repo_root() / "bench" / "bucket.json")
    args = parser.parse_args(argv)
    links = [LinkSpec("direct", None, 0.0)] if args.endpoint else [LinkSpec.parse(t) for t in args.links.split(",")]
    root = f"s3://{args.bucket}/{PREFIX}"
    result: dict = {"videos": args.videos, "shard_size": args.shard_size, "links": {}}
    moto = not args.endpoint
    with (
        tempfile.TemporaryDirectory(prefix="vidstore-bucket-bench-") as tmp,
        moto_server() if moto else contextlib.nullcontext(args.endpoint) as endpoint,
    ):
        work = Path(tmp)
        local = prepare(work, args.videos, args.shard_size, root, bucket_env(endpoint, work / "cache", moto), moto)
        setup = Setup(endpoint, moto, root, local, sum(p.stat().st_size for p in local.rglob("*.h5")), work)
        result["set_bytes"] = setup.set_bytes
        for spec in links:
            result["links"][spec.name] = measure_link(spec, setup, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
