"""Test datasets in the official layouts: the temporal-order set (classes that differ only in
the order of the same scenes), HMDB51 (<class>/<clip>.avi + <class>_test_splitN.txt), a
folder-per-class tree and a CSV list. Each builder is idempotent: clips that exist are kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

from stages.samples.clips import make_clips
from stages.samples.ucf101 import make_ucf101_tree, write_text_atomic

# The official HMDB51 split files end each line with "<mark> " (a trailing space) and LF.
HMDB51_EOL = " \n"


# ---------------------------------------------------------------- temporal order
TEMPORAL_SCENES = ("sunset", "checker", "plasma")


def order_classes(classes: int, scenes: Sequence[str] = TEMPORAL_SCENES) -> dict[str, tuple[str, ...]]:
    """The first `classes` orders of `scenes` (itertools.permutations order), named OrderABC, OrderACB, ...

    >>> order_classes(2, ("sunset", "checker", "plasma"))
    {'OrderABC': ('sunset', 'checker', 'plasma'), 'OrderACB': ('sunset', 'plasma', 'checker')}
    """
    orders = list(itertools.permutations(scenes))
    if len(set(scenes)) != len(scenes) or not 2 <= classes <= len(orders):
        raise ValueError(f"classes must be 2..{len(orders)} (orders of {len(scenes)} distinct scenes), got {classes}")
    return {"Order" + "".join("ABCDEFGH"[scenes.index(s)] for s in order): order for order in orders[:classes]}


def make_temporal_order_dataset(
    root: Path,
    classes: int = 4,
    clips_per_class: int = 12,
    *,
    scenes: Sequence[str] = TEMPORAL_SCENES,
    fps: float = 10,
    size: tuple[int, int] = (128, 96),
    seconds_per_scene: float = 1.0,
    seed: int | str = 0,
    workers: int | None = None,
) -> dict[str, tuple[str, ...]]:
    """Classes that contain the SAME scenes and differ only in their order.

    Class i plays the i-th permutation of `scenes` (itertools order); it is named after the
    order, scenes[0] = A: OrderABC, OrderACB, OrderBAC, ... (classes <= len(scenes)!).
    Scene lengths are drawn per clip from the same distribution in every class, so the
    average frame of a clip says nothing about its class (mean pooling stays at chance).
    The tree is in the UCF101 layout (make_ucf101_tree) with 6 groups, so clips_per_class
    must be a multiple of 6. Returns class -> scene order.
    """
    if clips_per_class % 6:
        raise ValueError(f"clips_per_class must be a multiple of 6 (6 groups), got {clips_per_class}")
    table = order_classes(classes, scenes)
    make_ucf101_tree(
        root,
        table,
        groups=6,
        clips_per_group=clips_per_class // 6,
        fps=fps,
        size=size,
        seconds_per_scene=seconds_per_scene,
        seed=f"order{seed}",
        workers=workers,
    )
    return table


# ---------------------------------------------------------------- HMDB51, folder, CSV
HMDB51_CLASSES = {"brush_hair": ("plasma", "rings"), "cartwheel": ("life", "stripes"), "golf": ("sunset", "box")}


# Film names in the style of the real ones, awkward characters included ("(Rad)Schlag_die_Bank!").
HMDB51_FILMS = ("April_09", "(Rad)Schlag_die_Bank!", "Aussie_Brunette", "My_Routine", "20060723sfjff")


def make_hmdb51_tree(
    root: Path,
    classes: Mapping[str, Sequence[str]] = HMDB51_CLASSES,
    films: int = 3,
    clips_per_film: int = 2,
    *,
    fps: float = 10,
    size: tuple[int, int] = (128, 96),
    seconds_per_scene: float = 1.0,
    seed: int | str = 0,
    workers: int | None = None,
) -> dict[str, dict[int, dict[str, int]]]:
    """A tree in the official HMDB51 layout.

        root/<class>/<film>_<class>_<tags>_<n>.avi        e.g. (Rad)Schlag_die_Bank!_golf_u_cm_np1_fr_med_1.avi
        root/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt
                                                          '<clip>.avi <mark> ' (1 train, 2 test, 0 unused)

    films (<= 5) per class, named from HMDB51_FILMS. Clips of one film stay on one side of
    every split, as in the original. Split k tests film k (1-based, modulo films) and
    leaves the last clip of the next film unused (0).
    Split lines end with a trailing space and LF, like the real files. Returns
    class -> split -> clip name -> mark.
    """
    root = Path(root)
    if not 1 <= films <= len(HMDB51_FILMS):
        raise ValueError(f"films must be 1..{len(HMDB51_FILMS)}, got {films}")
    names = {
        cls: [
            f"{film}_{cls}_{'fu'[n % 2]}_cm_np1_fr_med_{n}.avi"
            for film in HMDB51_FILMS[:films]
            for n in range(clips_per_film)
        ]
        for cls in classes
    }
    make_clips(
        [
            dict(
                path=root / cls / name,
                scenes=list(scenes),
                fps=fps,
                size=size,
                seconds_per_scene=seconds_per_scene,
                seed=f"hmdb{seed}/{cls}/{name}",
            )
            for cls, scenes in classes.items()
            for name in names[cls]
        ],
        workers,
    )
    marks: dict[str, dict[int, dict[str, int]]] = {}
    for cls in classes:
        for k in (1, 2, 3):
            test_film, unused_film = (k - 1) % films + 1, k % films + 1
            row = {}
            for i, name in enumerate(names[cls]):
                film, n = i // clips_per_film + 1, i % clips_per_film
                row[name] = 2 if film == test_film else 0 if (film == unused_film and n == clips_per_film - 1) else 1
            marks.setdefault(cls, {})[k] = row
            write_text_atomic(
                root / "testTrainMulti_7030_splits" / f"{cls}_test_split{k}.txt",
                [f"{name} {mark}" for name, mark in row.items()],
                HMDB51_EOL,
            )
    return marks


FOLDER_CLASSES = {"juggle": ("testcard", "rings"), "swim": ("plasma", "checker")}


def make_folder_tree(
    root: Path,
    classes: Mapping[str, Sequence[str]] = FOLDER_CLASSES,
    clips_per_class: int = 3,
    *,
    fps: float = 10,
    size: tuple[int, int] = (128, 96),
    seed: int | str = 0,
    workers: int | None = None,
) -> list[str]:
    """root/<class>/<video>, with mixed containers as real collections have: clip_00.avi
    (mpeg4), clip_01.mp4 (mpeg4 in MP4), clip_02.mkv (mpeg4 in Matroska), then .avi again.
    Returns the relative paths, sorted."""
    exts = [".avi", ".mp4", ".mkv"]
    rels = [f"{cls}/clip_{i:02d}{exts[i] if i < 3 else '.avi'}" for cls in classes for i in range(clips_per_class)]
    make_clips(
        [
            dict(
                path=Path(root) / rel,
                scenes=list(classes[rel.split("/")[0]]),
                fps=fps,
                size=size,
                seed=f"folder{seed}/{rel}",
            )
            for rel in rels
        ],
        workers,
    )
    return sorted(rels)


CSV_CLASSES = {"wave": ("bars", "static"), "clap": ("fractal", "life"), "run": ("box", "sunset")}


def make_csv_dataset(
    root: Path,
    classes: Mapping[str, Sequence[str]] = CSV_CLASSES,
    clips_per_class: int = 3,
    *,
    fps: float = 10,
    size: tuple[int, int] = (128, 96),
    seed: int | str = 0,
    workers: int | None = None,
) -> Path:
    """root/videos/<class>_NN.avi plus root/list.csv with the header 'path,label,split'.

    Paths are relative to the CSV's folder; labels are class names; the last clip of each
    class is 'test', the others 'train'. Returns the path of list.csv.
    """
    root = Path(root)
    rows = [
        (f"videos/{cls}_{i:02d}.avi", cls, "test" if i == clips_per_class - 1 else "train")
        for cls in classes
        for i in range(clips_per_class)
    ]
    make_clips(
        [
            dict(path=root / rel, scenes=list(classes[cls]), fps=fps, size=size, seed=f"csv{seed}/{rel}")
            for rel, cls, _ in rows
        ],
        workers,
    )
    write_text_atomic(root / "list.csv", ["path,label,split", *(",".join(r) for r in rows)], "\n")
    return root / "list.csv"
