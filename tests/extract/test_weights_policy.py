"""weights.py's two calls on a spec, with a tiny model: `build_model` (the family's three hooks)
and `on_worker` (a Dask worker's view of the driver's weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stages.extract.errors import WeightsError
from stages.extract.weights import (
    Builders,
    Checkpoint,
    WeightsSpec,
    build_model,
    check_shapes,
    file_identity,
    on_worker,
)


def check_fits(state: dict, path: Path) -> None:
    check_shapes({"weight": (2, 3), "bias": (2,)}, state, path, "--weights (WEIGHTS=)", "the tiny model")


TINY = Checkpoint(
    name="tiny", file_hint="tiny.pth", pretrained="pretrained",
    identity="tiny:v1", cache_path=lambda: Path("/nonexistent"), download=lambda: None, check=check_fits,
    what="tiny features",
)  # fmt: skip


def from_state(state: dict) -> torch.nn.Linear:
    model = torch.nn.Linear(3, 2)
    model.load_state_dict(state)
    return model


BUILDERS = Builders(lambda: torch.nn.Linear(3, 2), from_state)


def saved(tmp_path: Path, state: dict, name: str = "tiny.pth") -> Path:
    torch.save(state, tmp_path / name)
    return tmp_path / name


def test_random_weights_are_built_from_their_seed():
    a, b = (build_model(WeightsSpec("random", "random:seed3", None, 3), TINY, BUILDERS) for _ in range(2))
    other = build_model(WeightsSpec("random", "random:seed4", None, 4), TINY, BUILDERS)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, other.weight)


def test_a_file_is_checked_then_given_to_the_state_hook(tmp_path):
    state = {"weight": torch.arange(6.0).view(2, 3), "bias": torch.ones(2)}
    path = saved(tmp_path, state)
    model = build_model(WeightsSpec("file", file_identity(path), path), TINY, BUILDERS)
    assert torch.equal(model.weight, state["weight"])
    bad = saved(tmp_path, {"weight": torch.zeros(3, 3), "bias": torch.ones(2)}, "bad.pth")
    with pytest.raises(
        WeightsError, match=r"--weights \(WEIGHTS=\) .*bad.pth does not fit the tiny model: 1 of the wrong"
    ):
        build_model(WeightsSpec("file", file_identity(bad), bad), TINY, BUILDERS)


def test_a_published_file_goes_to_the_published_hook_or_else_as_a_state_dict(tmp_path):
    state = {"weight": torch.full((2, 3), 2.0), "bias": torch.zeros(2)}
    path = saved(tmp_path, state)
    spec = WeightsSpec("pretrained", "tiny:v1", path)
    assert torch.equal(build_model(spec, TINY, BUILDERS).weight, state["weight"])
    seen = []
    own = Builders(BUILDERS.random, from_state, published=lambda p: seen.append(p) or torch.nn.Linear(3, 2))
    build_model(spec, TINY, own)
    assert seen == [path]


def test_a_file_saved_from_the_meta_device_is_refused(tmp_path):
    path = saved(tmp_path, {"weight": torch.empty(2, 3, device="meta"), "bias": torch.empty(2, device="meta")})
    with pytest.raises(WeightsError, match="hold no data"):
        build_model(WeightsSpec("file", "sha256:x", path), TINY, BUILDERS)


def test_a_worker_builds_the_drivers_weights_or_says_why_not(tmp_path):
    path = saved(tmp_path, {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)})
    random = WeightsSpec("random", "random:seed0")
    assert on_worker(random, lambda: None, "w1", "tiny") is random
    spec = WeightsSpec("file", file_identity(path), path)
    assert on_worker(spec, lambda: None, "w1", "tiny") is spec
    saved(tmp_path, {"weight": torch.ones(2, 3), "bias": torch.zeros(2)})  # another file at the same path
    with pytest.raises(WeightsError, match="on worker w1 differs from the driver's"):
        on_worker(spec, lambda: None, "w1", "tiny")
    with pytest.raises(WeightsError, match="not found on worker w1"):
        on_worker(WeightsSpec("file", "sha256:x", tmp_path / "gone.pth"), lambda: None, "w1", "tiny")

    published = WeightsSpec("pretrained", "tiny:v1", tmp_path / "driver-cache.pth")  # not on this worker
    here = WeightsSpec("pretrained", "tiny:v1", path)
    assert on_worker(published, lambda: here, "w1", "tiny") is here
    with pytest.raises(WeightsError, match="worker w1: tiny weights here are tiny:v2, the run uses tiny:v1"):
        on_worker(published, lambda: WeightsSpec("pretrained", "tiny:v2", path), "w1", "tiny")
