"""Dense feature sets (FRAMES=all, issue 28's write side): the options, the identity, the rows
a video gives, the ragged shards, memory flat in the video's length.

Shards are read with h5py directly: the readers are changed elsewhere at the same time.
"""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from stages.extract.config import ExtractConfig
from stages.extract.plan import make_plan


@pytest.mark.parametrize(
    "settings, names",
    [
        (dict(frames="all"), ("--fps", "--stride", "neither")),
        (dict(frames="all", fps=1.0, stride=4), ("--fps", "--stride", "both")),
        (dict(stride=4), ("--stride", "FRAMES=all")),
        (dict(frames="every"), ("--frames", "'all'")),
        (dict(frames="all", stride=0), ("--stride",)),
        (dict(frames="all", fps=1.0, shard_rows=0), ("--shard-rows",)),
    ],
)
def test_dense_options_that_do_not_fit_are_config_errors_naming_them(settings, names):
    with pytest.raises(ConfigError) as e:
        ExtractConfig(**settings)
    for name in names:
        assert name in str(e.value)


def test_the_cli_takes_frames_all_and_exits_2_naming_the_missing_options(tmp_path):
    from click.testing import CliRunner

    from stages.cli import main

    result = CliRunner().invoke(main, ["features", "--frames", "all", "--features-root", str(tmp_path)])
    assert result.exit_code == 2
    assert "--stride" in result.output and "--fps" in result.output


def test_a_dense_set_says_all_and_its_rate_or_stride_in_its_id_and_keeps_fixed_ids_apart(sound_tree, tmp_path):
    tree, _ = sound_tree
    base = dict(dataset="ucf101", data_dir=tree, features_root=tmp_path, device="cpu", image_size=64)
    base |= dict(weights="random", precision="fp32")
    ident = lambda **kw: make_plan(ExtractConfig(**(base | kw)), download=False).identity
    per_second = ident(frames="all", fps=1.0)
    assert per_second.id.startswith("resnet50-random-all-64px-1fps-")
    assert per_second.sampling == {"mode": "dense", "fps": 1.0}
    strided = ident(frames="all", stride=4)
    assert strided.id.startswith("resnet50-random-all-64px-s4-") and strided.sampling == {"mode": "dense", "stride": 4}
    assert ident(fps=1.0).id.startswith("resnet50-random-t16-64px-1fps-")
    audio = ident(frames="all", fps=2.0, modality="audio")
    assert audio.id.startswith("audio-logmel-all-2fps-")
