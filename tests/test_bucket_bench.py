"""The bucket bench (stages/bench/bucket.py): its links parse, its relay carries every byte unchanged
at no more than the link's rate and with the round trip on every request, and the whole bench runs
`make train` on moto's server through a link (slow tier)."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

from stages.bench.bucket import LinkSpec, Relay, main


def test_links_parse_and_a_bad_one_is_named():
    assert LinkSpec.parse("loopback") == LinkSpec("loopback", None, 0.0)
    assert LinkSpec.parse("1gbit/2ms") == LinkSpec("1gbit/2ms", 125e6, 0.002)
    assert LinkSpec.parse("100mbit") == LinkSpec("100mbit", 12.5e6, 0.0)
    with pytest.raises(SystemExit, match="'10 gigs' is not a link"):
        LinkSpec.parse("10 gigs")


def answering_server() -> tuple[socket.socket, int]:
    """A loopback server that reads a request of 8 bytes of length then that many bytes, and answers
    with the same bytes back: a request and its response, like an HTTP GET or PUT."""
    listener = socket.create_server(("127.0.0.1", 0))

    def receive(conn: socket.socket, n: int) -> bytes:
        got = bytearray()
        while len(got) < n and (chunk := conn.recv(min(65536, n - len(got)))):
            got += chunk
        return bytes(got)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while head := receive(conn, 8):
                    conn.sendall(receive(conn, int.from_bytes(head, "big")))

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def exchange(port: int, payload: bytes, requests: int) -> tuple[list[bytes], float]:
    """`requests` round trips of payload through the relay on `port`, on one connection:
    (each answer, seconds for all)."""
    t0 = time.perf_counter()
    answers = []
    with socket.create_connection(("127.0.0.1", port)) as s:
        for _ in range(requests):
            s.sendall(len(payload).to_bytes(8, "big") + payload)
            got = bytearray()
            while len(got) < len(payload) and (chunk := s.recv(65536)):
                got += chunk
            answers.append(bytes(got))
    return answers, time.perf_counter() - t0


def test_the_relay_carries_every_byte_at_the_links_rate_and_round_trip():
    listener, port = answering_server()
    payload = np.random.default_rng(0).integers(0, 256, 1_000_000, dtype=np.uint8).tobytes()
    rate, rtt = 10e6, 0.05  # two answers of 1 MB at 10 MB/s: at least 0.2 s; two requests: 0.1 s more
    relay = Relay(("127.0.0.1", port), rate, rtt)
    fast = Relay(("127.0.0.1", port), 1e12, 0.0)  # the same exchanges, the link out of the way
    try:
        answers, seconds = exchange(relay.port, payload, 2)
        assert answers == [payload, payload]
        assert seconds >= 2 * len(payload) / rate + 2 * rtt
        assert relay.requests == 2  # an upload of 1 MB is 16 chunks or more: only its first waits
        answers, quick = exchange(fast.port, payload, 2)
        assert answers == [payload, payload] and quick < seconds
    finally:
        relay.close()
        fast.close()
        listener.close()


@pytest.mark.slow
def test_the_bench_times_make_train_on_the_bucket_through_a_link(tmp_path, capsys):
    pytest.importorskip("moto.server", reason="the bucket bench needs the dev extra's moto[server]")
    out = tmp_path / "bucket.json"
    main(["--videos", "64", "--shard-size", "16", "--links", "loopback,40mbit/5ms", "--rounds", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["videos"] == 64 and result["set_bytes"] > 0
    assert set(result["links"]) == {"loopback", "40mbit/5ms"}
    for link in result["links"].values():
        (r,) = link["rounds"]
        assert r["first"] > 0 and r["second"] > 0 and r["local"] > 0
        assert link["gain_best_against_best"] == pytest.approx(r["first"] / r["second"])
    # the first read through the link carried the whole set at 40 Mbit/s, so it took at least that long
    assert result["links"]["40mbit/5ms"]["rounds"][0]["first"] >= result["set_bytes"] / 5e6
    assert "40mbit/5ms: first" in capsys.readouterr().out
