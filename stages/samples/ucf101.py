"""The UCF101 layout from generated clips (clips.py), and the embedded sample dataset in it.

UCF-101/<Class>/v_<Class>_gXX_cYY.avi + ucfTrainTestlist/ with CRLF list files, as the
official release; the sample (`make features` with no DATASET) is a small tree in that
layout. Each builder is idempotent: clips that exist are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write_bytes

from .clips import make_clips, remove_stale_partials

CRLF = "\r\n"  # the official UCF101 list files end their lines with CRLF


SAMPLE_VERSION = 1  # bump when the sample dataset's content changes; a stale tree is regenerated


# ---------------------------------------------------------------- UCF101 layout
def split_test_groups(groups: int) -> dict[int, list[int]]:
    """Test groups of the 3 splits, UCF101's rule scaled down: disjoint runs of round(groups*7/25).

    UCF101 has 25 groups: split 1 tests g01-g07, split 2 g08-g14, split 3 g15-g21, and
    g22-g25 are always trained on. groups=4 -> {1: [1], 2: [2], 3: [3]}; 6 -> {1: [1, 2], ...}.
    """
    if groups < 3:
        raise ValueError(f"groups must be >= 3 so that the 3 splits test disjoint groups, got {groups}")
    per = max(1, round(groups * 7 / 25))
    return {k: list(range(1 + (k - 1) * per, 1 + k * per)) for k in (1, 2, 3)}


def ucf101_name(cls: str, group: int, clip: int) -> str:
    """Relative path of a clip in UCF-101/: 'Class/v_Class_g01_c02.avi' (1-based group and clip)."""
    return f"{cls}/v_{cls}_g{group:02d}_c{clip:02d}.avi"


def write_text_atomic(path: Path, lines: Iterable[str], eol: str) -> None:
    """Write lines, each ended by eol, as UTF-8 bytes through a temp name and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(line + eol for line in lines).encode("utf-8"))


def make_ucf101_tree(
    root: Path,
    classes: Mapping[str, Sequence[str]],
    groups: int = 4,
    clips_per_group: int = 2,
    *,
    fps: float = 10,
    size: tuple[int, int] = (160, 120),
    seconds_per_scene: float = 1.0,
    seed: int | str = 0,
    missing: Sequence[str] = (),
    workers: int | None = None,
) -> list[str]:
    """A tree in the exact official UCF101 layout, made of clips generated from scenes.

        root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
        root/ucfTrainTestlist/classInd.txt        '1 ClassName' (1-based, classes in the given order)
        root/ucfTrainTestlist/trainlist0k.txt     'Class/v_Class_gXX_cYY.avi <1-based label>'
        root/ucfTrainTestlist/testlist0k.txt      'Class/v_Class_gXX_cYY.avi' (no label)

    All list files use CRLF line endings like the originals. classes: class name -> scene
    names of its clips (classes that share scenes in another order differ only in time).
    Split k tests the groups split_test_groups(groups)[k]. Clips of one group share their
    look (hue, noise), as a real group shares its actor and background. `missing`: relative
    paths (as in the lists) that are listed but deliberately not generated.
    Reuses clips already there (generation is deterministic). Returns every listed video id.
    """
    root = Path(root)
    bad = [c for c in classes if not re.fullmatch(r"[A-Za-z0-9]+", c)]
    if bad:
        raise ValueError(f"UCF101 class names are letters and digits only (CamelCase), got {bad!r}")
    test_groups = split_test_groups(groups)
    remove_stale_partials(root)
    names = {
        cls: [ucf101_name(cls, g, c) for g in range(1, groups + 1) for c in range(1, clips_per_group + 1)]
        for cls in classes
    }
    jobs = [
        dict(
            path=root / "UCF-101" / rel,
            scenes=list(scenes),
            fps=fps,
            size=size,
            seconds_per_scene=seconds_per_scene,
            seed=f"{seed}/{rel}",
            look_seed=f"{seed}/{rel.rsplit('_c', 1)[0]}",
        )
        for cls, scenes in classes.items()
        for rel in names[cls]
        if rel not in missing
    ]
    make_clips(jobs, workers)
    lists = root / "ucfTrainTestlist"
    write_text_atomic(lists / "classInd.txt", [f"{i} {cls}" for i, cls in enumerate(classes, start=1)], CRLF)
    group_of = lambda rel: int(rel.rsplit("_g", 1)[1][:2])
    for k, tested in test_groups.items():
        train = [
            f"{rel} {i}" for i, cls in enumerate(classes, start=1) for rel in names[cls] if group_of(rel) not in tested
        ]
        test = [rel for cls in classes for rel in names[cls] if group_of(rel) in tested]
        write_text_atomic(lists / f"trainlist0{k}.txt", train, CRLF)
        write_text_atomic(lists / f"testlist0{k}.txt", test, CRLF)
    return sorted(rel for cls in classes for rel in names[cls])


# ---------------------------------------------------------------- the embedded sample dataset
# Four classes differ in content; the last two share their scenes and differ only in order,
# which mean pooling cannot tell apart and a recurrent head can.
SAMPLE_CLASSES = {
    "ColorBars": ("bars", "testcard"),
    "Fractal": ("fractal", "plasma"),
    "GameOfLife": ("life", "automaton"),
    "BouncingBox": ("box", "static"),
    "SunsetFirst": ("sunset", "checker", "rings"),
    "SunsetLast": ("rings", "checker", "sunset"),
}


# 1.2 s per scene at 10 fps, jittered by +-30%, gives every clip >= 16 frames (the default T).
SAMPLE_SETTINGS: dict[str, Any] = dict(
    groups=4, clips_per_group=2, fps=10, size=(160, 120), seconds_per_scene=1.2, seed=0
)


COMPLETE = ".complete"


def make_sample_dataset(root: Path, workers: int | None = None) -> Path:
    """Generate the embedded default dataset at root (UCF101 layout, see make_ucf101_tree).

    6 classes x 4 groups x 2 clips = 48 clips of 160x120 px at 10 fps, 16-47 frames each
    (mpeg4 in AVI); 3 splits, split k tests group k (g04 is always trained on): 36 train /
    12 test. Classes: SAMPLE_CLASSES. Idempotent: a complete tree (marker `.complete`) is
    left alone, an interrupted one is finished (clips already there are kept, being
    deterministic), one of an older SAMPLE_VERSION is replaced. About 3 s on 2 cores.
    """
    root = Path(root)
    if sample_dataset_ready(root):
        return root
    if (root / COMPLETE).exists():  # an older version: its clips must not be reused
        for d in ("UCF-101", "ucfTrainTestlist"):
            shutil.rmtree(root / d, ignore_errors=True)
        (root / COMPLETE).unlink()
    videos = make_ucf101_tree(root, SAMPLE_CLASSES, workers=workers, **SAMPLE_SETTINGS)
    marker = {
        "version": SAMPLE_VERSION,
        "classes": {c: list(s) for c, s in SAMPLE_CLASSES.items()},
        "settings": SAMPLE_SETTINGS,
        "videos": videos,
    }
    # Written last: its presence means every clip and list file above is in place.
    write_text_atomic(root / COMPLETE, [json.dumps(marker, indent=1)], "\n")
    return root


def holds_only_sample(root: Path) -> bool:
    """True when root is missing, empty, or holds nothing but (part of) a generated sample dataset:
    a place the sample may be generated into without mixing it into someone's files."""
    root = Path(root)
    if not root.exists():
        return True
    return root.is_dir() and {p.name for p in root.iterdir()} <= {"UCF-101", "ucfTrainTestlist", COMPLETE}


def sample_dataset_ready(root: Path) -> bool:
    """True when root holds a complete sample dataset of the current version (every clip present)."""
    try:
        marker = json.loads((Path(root) / COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("version") != SAMPLE_VERSION:
        return False
    return all((Path(root) / "UCF-101" / rel).is_file() for rel in marker.get("videos", []))
