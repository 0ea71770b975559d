"""Annotations as the field writes them: ActivityNet's JSON, matched to a set's videos.

    {"database": {"<id>": {"subset": "training", "duration": 120.5,
                           "annotations": [{"segment": [12.0, 19.5], "label": "Jump"}, ...]}}}

An entry's id is matched to a set's video by file stem (`clips/v_abc.mp4` is `v_abc`; ActivityNet's
ids drop the `v_` its files carry, so `abc` matches too). Its subset decides the part: TRAIN_SUBSET=
(training by default) is trained on, EVAL_SUBSET= (validation) scored. Nothing is dropped in
silence: an entry the set lacks, a segment cut at or lying past the video's end, a subset used
by neither part, a set video with no entry: each is counted in a note (`Matched.notes`); a file
that is not ActivityNet's JSON, a segment that ends before it starts, an unknown subset word:
an AnnotationError naming the file and the entry.

THUMOS14's per-class files (`<Class>_val.txt`, `<Class>_test.txt`: `video_name start end` a line)
convert to it with `vidstore annotations thumos14 DIR OUT.json` (thumos14_database).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.errors import ConfigError

# Subset words of ActivityNet (training, validation, testing) and THUMOS14 as ActionFormer's
# JSON writes them (Validation: trained on, Test: scored): any of these may be left unused.
KNOWN_SUBSETS = ("training", "validation", "testing", "test")
# A segment may pass the video's end by this much before it counts as cut (container durations
# and annotators' rounding differ by a frame or two).
END_SLACK = 0.5  # s


class AnnotationError(ConfigError):
    """An annotation file that cannot be used as it is; the message names the file and the entry."""


@dataclass(frozen=True)
class Segment:
    start: float  # s
    end: float  # s
    label: str


@dataclass(frozen=True)
class VideoTruth:
    """One annotated video of the set: its set id, entry id, part ("train" or "eval"), segments."""

    video_id: str
    entry: str
    part: str
    duration: float
    segments: tuple[Segment, ...]


@dataclass
class Matched:
    """The annotations matched to a set: classes (sorted), videos by set id, and the counted notes."""

    classes: list[str]
    videos: dict[str, VideoTruth]
    notes: list[str] = field(default_factory=list)

    def part(self, name: str) -> list[VideoTruth]:
        return [v for v in self.videos.values() if v.part == name]


def read_database(path: Path) -> dict[str, dict]:
    """The "database" of an ActivityNet JSON file, each entry checked for subset and annotations."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"--annotations (ANNOTATIONS=): no file at {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f"--annotations (ANNOTATIONS=): {path} is not JSON ({e})") from None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise AnnotationError(
            f'--annotations (ANNOTATIONS=): {path} has no "database" object; ActivityNet\'s layout is '
            f'{{"database": {{id: {{"subset", "duration", "annotations": [{{"segment": [s, e], "label"}}]}}}}}}'
        )
    for key, entry in database.items():
        where = f"{path}: entry {key!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("subset"), str):
            raise AnnotationError(f'--annotations (ANNOTATIONS=): {where} has no "subset"')
        for k, a in enumerate(entry.get("annotations", [])):
            seg = a.get("segment") if isinstance(a, dict) else None
            if not (isinstance(seg, list) and len(seg) == 2 and all(isinstance(x, (int, float)) for x in seg)) or not (
                isinstance(a.get("label"), str)
            ):
                raise AnnotationError(
                    f'--annotations (ANNOTATIONS=): {where}, annotation {k}: needs "segment": [start, end] '
                    f'in seconds and a "label", got {a!r}'
                )
            if not seg[1] > seg[0]:
                raise AnnotationError(
                    f"--annotations (ANNOTATIONS=): {where}, annotation {k}: the segment {seg} ends before it starts"
                )
    return database


def stems(video_ids: Sequence[str]) -> dict[str, str]:
    """Each set video's file stem (and the stem without ActivityNet's `v_`) -> its id; a stem two
    videos share is an error (the annotations could not say which)."""
    out: dict[str, str] = {}
    for vid in video_ids:
        stem = PurePosixPath(vid).stem
        if stem in out and out[stem] != vid:
            raise AnnotationError(
                f"--annotations (ANNOTATIONS=): the set holds two videos with the file stem {stem!r} "
                f"({out[stem]}, {vid}); annotations name videos by stem, so rename one"
            )
        out[stem] = vid
    for stem, vid in list(out.items()):
        if stem.startswith("v_"):
            out.setdefault(stem[2:], vid)
    return out


def match(
    path: Path,
    video_ids: Sequence[str],
    durations: Sequence[float],
    train_subset: str = "training",
    eval_subset: str = "validation",
) -> Matched:
    """The annotations of `path` matched to a set's videos (ids and durations s, alike ordered)."""
    database = read_database(path)
    by_stem = stems(video_ids)
    duration_of = dict(zip(video_ids, (float(d) for d in durations)))
    parts = {train_subset.lower(): "train", eval_subset.lower(): "eval"}
    unknown = sorted({e["subset"] for e in database.values() if e["subset"].lower() not in (*KNOWN_SUBSETS, *parts)})
    if unknown:
        raise AnnotationError(
            f"--annotations (ANNOTATIONS=): {path} has entries in subset(s) {', '.join(map(repr, unknown))}, "
            f"neither TRAIN_SUBSET={train_subset} nor EVAL_SUBSET={eval_subset} nor one of {', '.join(KNOWN_SUBSETS)}; "
            f"name them with TRAIN_SUBSET= / EVAL_SUBSET="
        )
    counts: Counter[str] = Counter()
    lacking: list[str] = []
    videos: dict[str, VideoTruth] = {}
    for key, entry in database.items():
        part = parts.get(entry["subset"].lower())
        if part is None:
            counts[f"subset {entry['subset']!r}"] += 1
            continue
        vid = by_stem.get(PurePosixPath(key).stem)
        if vid is None:
            lacking.append(key)
            continue
        duration = duration_of[vid]
        segments = []
        for a in entry.get("annotations", []):
            start, end = float(a["segment"][0]), float(a["segment"][1])
            if start >= duration or end <= 0:
                counts["outside"] += 1
                continue
            if start < 0 or end > duration + END_SLACK:
                counts["cut"] += 1
            segments.append(Segment(max(0.0, start), min(end, duration), a["label"]))
        videos[vid] = VideoTruth(vid, key, part, duration, tuple(segments))
    notes = match_notes(path, counts, lacking, len(video_ids) - len(videos), train_subset, eval_subset)
    classes = sorted({s.label for v in videos.values() for s in v.segments})
    for name in ("train", "eval"):
        if not any(v.part == name for v in videos.values()):
            subset = train_subset if name == "train" else eval_subset
            raise AnnotationError(
                f"--annotations (ANNOTATIONS=): no video of the set is in subset {subset!r} of {path}"
                f"{f' ({len(lacking)} entries name videos the set lacks, e.g. {lacking[0]!r})' if lacking else ''}; "
                f"check the file stems, or TRAIN_SUBSET= / EVAL_SUBSET="
            )
    return Matched(classes, videos, notes)


def match_notes(
    path: Path, counts: Counter[str], lacking: list[str], unannotated: int, train_subset: str, eval_subset: str
) -> list[str]:
    """The counted notes of a match: what was left out or cut, and why."""
    notes = []
    if lacking:
        notes.append(
            f"{len(lacking)} annotated video(s) of {path} are not in the set (e.g. {', '.join(lacking[:3])}): "
            f"left out of training and scoring"
        )
    if counts["outside"]:
        notes.append(f"{counts['outside']} segment(s) lie past their video's end: left out")
    if counts["cut"]:
        notes.append(f"{counts['cut']} segment(s) run past their video's end (or start before 0 s): cut to the video")
    for key in sorted(k for k in counts if k.startswith("subset")):
        notes.append(
            f"{counts[key]} entr{'y' if counts[key] == 1 else 'ies'} in {key}: neither TRAIN_SUBSET={train_subset} "
            f"nor EVAL_SUBSET={eval_subset}, not used"
        )
    if unannotated:
        notes.append(f"{unannotated} video(s) of the set have no entry in {path}: not used")
    return notes


# ---------------------------------------------------------------- THUMOS14
THUMOS_FILE = re.compile(r"^(?P<label>.+)_(?P<subset>val|test)\.txt$")
# THUMOS14's annotation files per subset -> the ActivityNet subset the JSON gets: its validation
# videos are the ones trained on, its test videos the ones scored (as ActionFormer and TriDet report).
THUMOS_SUBSETS = {"val": "training", "test": "validation"}
AMBIGUOUS = "Ambiguous"  # THUMOS14's marker of unclear stretches, not a class


def thumos14_database(folder: Path) -> tuple[dict, list[str]]:
    """THUMOS14's per-class files under `folder` as ActivityNet's JSON, and the counted notes.

    Every `<Class>_val.txt` / `<Class>_test.txt` line `video_name start end` (seconds) becomes one
    annotation of `video_name`, in subset training (val) or validation (test). The Ambiguous files
    are THUMOS14's unclear stretches, not a class: skipped and counted. Durations are not in
    these files: entries carry none (the set's own durations are used).
    """
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.txt") if THUMOS_FILE.match(p.name)) if folder.is_dir() else []
    if not files:
        raise AnnotationError(
            f"{folder}: no THUMOS14 annotation files (<Class>_val.txt or <Class>_test.txt, lines "
            f"'video_name start end')"
        )
    database: dict[str, dict] = {}
    skipped = 0
    for p in files:
        m = THUMOS_FILE.match(p.name)
        assert m is not None
        label, subset = m["label"], THUMOS_SUBSETS[m["subset"]]
        for n, line in enumerate(p.read_text().splitlines(), 1):
            words = line.split()
            if not words:
                continue
            try:
                name, start, end = words[0], float(words[1]), float(words[2])
            except (IndexError, ValueError):
                raise AnnotationError(f"{p}, line {n}: expected 'video_name start end', got {line!r}") from None
            if label == AMBIGUOUS:
                skipped += 1
                continue
            entry = database.setdefault(name, {"subset": subset, "annotations": []})
            if entry["subset"] != subset:
                raise AnnotationError(f"{p}, line {n}: {name} is in both THUMOS14's val and test files")
            if not end > start:
                raise AnnotationError(f"{p}, line {n}: the segment [{start}, {end}] ends before it starts")
            entry["annotations"].append({"segment": [start, end], "label": label})
    for entry in database.values():
        entry["annotations"].sort(key=lambda a: (a["segment"][0], a["label"]))
    notes = [f"{skipped} {AMBIGUOUS} segment(s) skipped: THUMOS14's unclear stretches, not a class"] if skipped else []
    return {"database": dict(sorted(database.items()))}, notes
