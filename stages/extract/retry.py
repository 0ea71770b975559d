"""`--retry-failures`: decode again the videos committed shards list as failed.

    committed shard-00003.h5 (one video failed)    read, sha256 checked; its good rows copied
    failed video ── decoded again (ShardRunner) ─► shard-00003.r1.h5 (tmp + fsync + rename)
    store.replace_shard: the manifest entry is swapped atomically (revision 1, replaces ...)

Committed files are never edited: a reader that listed the old entry still reads the old,
consistent bytes, and the superseded file is garbage for `store gc` afterwards. The shard
is claimed (flock) as in a normal run, so two retries never rewrite the same shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline import console, store

from .copying import index_committed
from .local import start_model
from .plan import ExtractionPlan
from .runner import AnyShard, ShardRunner, Summary


class RewriteShard:
    """The retry's sink: a shard that gained videos is written as a new revision and swapped
    into the manifest; one that gained nothing is left as it was."""

    def __init__(self, plan: ExtractionPlan, summary: Summary):
        self.plan, self.summary = plan, summary
        self.entries: dict[int, store.ShardEntry] = {}  # the committed entry (latest revision) of each claimed shard

    def path(self, index: int) -> Path:
        return self.plan.set_dir / store.shard_name(index, self.entries[index].revision + 1)

    def rows_to_copy(self, index: int) -> dict | None:
        entry = self.entries[index]
        return store.read_shard(self.plan.set_dir / entry.file, entry.sha256)

    def written(self, shard: AnyShard, entry: dict) -> None:
        before = self.entries[shard.index]
        recovered = len(before.failures) - len(shard.failures)
        try:
            if recovered > 0:
                # The rows kept from the old revision keep their provenance.
                copied = {
                    k: before.copied.get(k, 0) + entry.get("copied", {}).get(k, 0)
                    for k in {*before.copied, *entry.get("copied", {})}
                }
                store.replace_shard(
                    self.plan.set_dir, shard.index, entry | ({"copied": copied} if copied else {}), shard.failures
                )
                index_committed(self.plan, entry["file"])
                console.say(
                    f"retry: shard {shard.index}: {recovered} video(s) recovered -> {entry['file']} "
                    f"(replaces {before.file}; `store gc` removes the old file)"
                )
            else:
                (self.plan.set_dir / entry["file"]).unlink(
                    missing_ok=True
                )  # nothing gained: keep the committed revision
        finally:
            if shard.claim is not None:
                shard.claim.release()
        self.summary.add_shard(max(recovered, 0), shard.failures, "still failing")

    def claim(self, failed: list[int]) -> Iterator[tuple[int, store.Claim]]:
        """(index, held claim) of each shard with failures that no other run is rewriting."""
        for i in failed:
            claim = store.Claim(self.plan.set_dir, i)
            if not claim.acquire():
                console.say(
                    f"retry: shard {i} is being rewritten by another run ({claim.path.read_text().strip()}); "
                    f"leaving it to that run"
                )
                continue
            entry = next(s for s in store.read_manifest(self.plan.set_dir).shards if s.index == i)
            if not entry.failures:  # another retry fixed it meanwhile
                claim.release()
                continue
            self.entries[i] = entry
            yield i, claim


def retry_failed(plan: ExtractionPlan, summary: Summary, shards: set[int]) -> None:
    """`--retry-failures`: decode again every video that committed `shards` list as failed.

    `shards`: the indices whose failures were recorded before this run (a video that
    failed minutes ago in this very run is not tried twice). A shard whose videos all
    fail again is left as it was. Runs on this machine's (first) device, also with
    SCHEDULER= or DEVICES=.
    """
    failed = {
        s.index: len(s.failures) for s in store.read_manifest(plan.set_dir).shards if s.failures and s.index in shards
    }
    if not failed:
        console.say("retry: no failed video was listed before this run; nothing to retry")
        return
    console.say(
        f"retry: decoding {sum(failed.values())} failed video(s) of {len(failed)} shard(s) again; "
        f"the other videos of those shards are copied, not recomputed"
    )
    sink = RewriteShard(plan, summary)
    model = start_model(plan)
    summary.add_timings(ShardRunner(plan, model, sink).run(sink.claim(sorted(failed))))
    model.ready()  # a model that failed to load fails the run even when every retried video failed first
    model.close()
