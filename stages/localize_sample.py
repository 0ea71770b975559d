"""`make localize` with neither FEATURES= nor ANNOTATIONS=: the generated untrimmed sample end to end.

The sample (stages/samples/untrimmed.py) is generated on first use under data/untrimmed, stage one
embeds it with ResNet-50 at one row per second over each whole video (`FRAMES=all FPS=1`, a
dense set named untrimmed in the store), and localization trains on its training videos and
scores its validation videos. Offline, without ImageNet weights cached, ResNet-50 gets seeded
random weights, as the embedded sample of `make demo` does, and says so (the set's id says random).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import console
from pipeline.config import repo_root
from stages.extract.config import ExtractConfig
from stages.extract.errors import WeightsError
from stages.localize.config import LocalizeConfig

from .extract import extract_features
from .localize import localize
from .localize.run import LocalizeResult
from .samples.untrimmed import make_untrimmed_sample

SAMPLE_NAME = "untrimmed"  # the sample's dataset name in the store
# Stage one's settings for the sample: the ResNet-50 at one row per second over each whole video.
SAMPLE_EXTRACTION: dict[str, Any] = {"frames": "all", "fps": 1.0}


def sample_root() -> Path:
    return repo_root() / "data" / SAMPLE_NAME


def localize_sample(cfg: LocalizeConfig, root: Path | None = None, **extraction: Any) -> LocalizeResult:
    """Generate the sample at `root` (default data/untrimmed), extract it (SAMPLE_EXTRACTION, then
    `extraction`: ExtractConfig fields such as image_size for a quicker run), localize on it."""
    root = Path(root) if root else sample_root()
    console.say(f"==> the untrimmed sample ({root}): generating it if needed (ffmpeg)")
    sample = make_untrimmed_sample(root)
    settings = {**SAMPLE_EXTRACTION, **extraction}
    ecfg = ExtractConfig(
        dataset="csv", data_dir=sample.listing, name=SAMPLE_NAME, features_root=cfg.features_root, **settings
    )
    console.say(f"==> stage one: ResNet-50, FRAMES=all FPS={ecfg.fps:g}, over every video of {sample.listing}")
    try:
        summary = extract_features(ecfg)
    except WeightsError as e:
        if "weights" in extraction:  # asked for by name: not ours to replace
            raise
        console.say(
            f"{e}\nnote: the untrimmed sample goes on with seeded random weights (WEIGHTS=random), as the embedded "
            f"sample does: its features are NOT ImageNet features, and the set's id says random"
        )
        summary = extract_features(ecfg.replace(weights="random"))
    console.say(f"==> localization: {cfg.model} on {summary.set_dir.name}, annotations {sample.annotations}")
    return localize(cfg.replace(features=str(summary.set_dir), annotations=sample.annotations))
