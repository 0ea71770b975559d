"""`--retry-failures`: decode again the videos committed shards list as failed.

    committed shard-00003.h5 (one video failed)    read, sha256 checked; its good rows copied
    failed video ── decoded again (run_shards) ──► shard-00003.r1.h5 (tmp + fsync + rename)
    store.replace_shard: the manifest entry is swapped atomically (revision 1, replaces ...)

Committed files are never edited: a reader that listed the old entry still reads the old,
consistent bytes, and the superseded file is garbage for `store gc` afterwards. The shard
is claimed (flock) as in a normal run, so two retries never rewrite the same shard.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from pipeline import store

from .extract import Prepared, ShardBuffer, Summary, run_shards, start_extractor


def retry_failed(p: Prepared, summary: Summary, say: Callable[[str], None], shards: set[int]) -> None:
    """`--retry-failures`: decode again every video that committed `shards` list as failed.

    `shards`: the indices whose failures were recorded before this run (a video that
    failed minutes ago in this very run is not tried twice). A shard whose videos all
    fail again is left as it was. Runs on this machine's (first) device, also with
    SCHEDULER= or DEVICES=.
    """
    failed = {s["index"]: len(s["failures"]) for s in store.load_manifest(p.set_dir)["shards"]
              if s.get("failures") and s["index"] in shards}
    if not failed:
        say("retry: no failed video was listed before this run; nothing to retry")
        return
    say(f"retry: decoding {sum(failed.values())} failed video(s) of {len(failed)} shard(s) again; "
        f"the other videos of those shards are copied, not recomputed")
    entries: dict[int, dict] = {}

    def claimed() -> Iterator[tuple[int, store.Claim]]:
        for i in sorted(failed):
            claim = store.Claim(p.set_dir, i)
            if not claim.acquire():
                say(f"retry: shard {i} is being rewritten by another run ({claim.path.read_text().strip()}); leaving it to that run")
                continue
            entry = next(s for s in store.load_manifest(p.set_dir)["shards"] if s["index"] == i)  # the latest revision
            if not entry.get("failures"):  # another retry fixed it meanwhile
                claim.release()
                continue
            entries[i] = entry
            yield i, claim

    def stored(i: int) -> dict:
        return store.read_shard(p.set_dir / entries[i]["file"], entries[i]["sha256"])

    def shard_path(i: int) -> Path:
        return p.set_dir / store.shard_name(i, entries[i].get("revision", 0) + 1)

    def on_written(shard: ShardBuffer, entry: dict) -> None:
        before = entries[shard.index]
        recovered = len(before["failures"]) - len(shard.failures)
        try:
            if recovered > 0:
                store.replace_shard(p.set_dir, shard.index, entry, shard.failures)
                say(f"retry: shard {shard.index}: {recovered} video(s) recovered -> {entry['file']} "
                    f"(replaces {before['file']}; `store gc` removes the old file)")
            else:
                (p.set_dir / entry["file"]).unlink(missing_ok=True)  # nothing gained: keep the committed revision
        finally:
            if shard.claim is not None:
                shard.claim.release()
        summary.add_shard(max(recovered, 0), shard.failures, "still failing")

    extractor = start_extractor(p)
    summary.add_timings(run_shards(p, claimed(), extractor, on_written, shard_path=shard_path, stored=stored))
    extractor.ready()  # joins the loader thread even when every retried video failed before reaching it
