"""The one place localization reads the store (stages/localize/data.py's read_dense): a dense set's
videos with their rows, spans and durations as stored, the step grid between seconds and rows, and a
fixed-T set refused with the options that make a dense one. Sets written by tests/ragged_sets.py."""

from __future__ import annotations

import numpy as np
import pytest
from ragged_sets import fixed_twin, ragged_set

from pipeline.errors import ConfigError
from stages.localize.data import read_dense


def test_read_dense_reads_a_ragged_set_and_refuses_a_fixed_one(tmp_path):
    set_dir, truth = ragged_set(tmp_path, [10.0, 12.5, 7.0], rate=1.0)
    dense = read_dense([set_dir])
    assert sorted(dense.videos) == sorted(truth) and dense.dims == [8] and dense.modalities == ["rgb"]
    for vid, stored in truth.items():
        v = dense.videos[vid]
        assert v.features.shape == stored.features.shape and np.array_equal(v.features, stored.features)
        assert np.allclose(v.spans, stored.spans) and v.duration == stored.duration
        assert v.step == 1.0 and v.origin == 0.0 and v.to_seconds(v.to_steps(3.25)) == 3.25
    with pytest.raises(ConfigError, match="FRAMES=all and FPS= or STRIDE="):
        read_dense([fixed_twin(tmp_path, truth, 4)])
