"""The batcher: features reach the right video and frame across batch boundaries, a compiled
model always sees full batches, and a failing backbone stops everyone instead of hanging."""

import time

import numpy as np
import pytest
from helpers import FakeExtractor

from stages.extract.batching import Batcher, Stopped

SIZE = 4


def fill(batcher, slot, k, value):
    for t in range(k):
        batcher.slots.arrays[slot][t] = value + t


@pytest.mark.parametrize("compiled", [False, True])
def test_features_reach_their_video_across_batches(compiled):
    got, ext = {}, FakeExtractor(compiled, size=SIZE)

    def sink(owner, first, feats, last):
        got.setdefault(owner, []).append((first, feats[:, 0].copy(), last))

    with Batcher(ext, batch=5, frames=4, workers=1, sink=sink) as batcher:
        for video, k in enumerate([4, 3, 4, 1]):
            slot = batcher.slots.acquire()
            fill(batcher, slot, k, 10 * video)
            batcher.add(slot, k, owner=video)
    for video, k in enumerate([4, 3, 4, 1]):
        pieces = got[video]
        assert pieces[-1][2] and not any(last for _, _, last in pieces[:-1])
        frames = np.concatenate([f for _, f, _ in pieces])
        assert [first for first, _, _ in pieces] == list(np.cumsum([0] + [len(f) for _, f, _ in pieces])[:-1])
        np.testing.assert_array_equal(frames, 10 * video + np.arange(k))
    if compiled:  # one shape only: the last, partial batch was padded
        assert set(ext.shapes) == {(5, SIZE, SIZE, 3)}
    assert batcher.timings["images"] == 12 and batcher.slots.free.qsize() == len(batcher.slots.arrays)


def test_a_failing_backbone_is_raised_and_stops_the_decoders():
    batcher = Batcher(FakeExtractor(fail=True, size=SIZE), batch=2, frames=2, workers=1, sink=lambda *a: None)
    slot = batcher.slots.acquire()
    batcher.add(slot, 2, owner=0)  # a full batch: sent to the inference thread, which fails
    deadline = time.monotonic() + 10
    while batcher.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(RuntimeError, match="out of memory"):
        batcher.close()
    # a decoder waiting for a slot gives up instead of waiting forever
    while True:
        try:
            batcher.slots.acquire()
        except Stopped:
            break
