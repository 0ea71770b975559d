"""Dataset adapters: each turns a dataset root into a sorted list of VideoRecords.

Every adapter returns the same `Dataset`: class names, one record per video found
on disk (video_id = path relative to the video root, POSIX style; a CSV may also list
absolute paths, whose id is the path itself), the split
memberships, and `problems` for entries that were listed (in a split or CSV file)
but cannot be used. A problem becomes a line in failures.jsonl; it is never opened.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline import console
from pipeline.errors import ConfigError
from pipeline.files import digest
from stages.samples import SAMPLE_VERSION, holds_only_sample, make_sample_dataset, sample_dataset_ready

from .config import ExtractConfig
from .errors import DatasetError

VIDEO_EXTENSIONS = {
    ".avi",
    ".mp4",
    ".mkv",
    ".webm",
    ".mov",
    ".mpg",
    ".mpeg",
    ".m4v",
    ".flv",
    ".wmv",
    ".ogv",
    ".3gp",
    ".ts",
}
UCF101_URLS = (
    "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar (videos) and "
    "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip (splits)"
)
HMDB51_URL = "https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/ (hmdb51_org.rar and test_train_splits.rar)"


@dataclass(frozen=True)
class VideoRecord:
    video_id: str  # path relative to the video root, POSIX separators (a CSV's absolute path: itself)
    path: Path  # absolute path on this machine
    label: int  # 0-based class index; -1 when unknown
    group: str  # videos of one group never straddle train/validation (UCF101: Class/gXX)


@dataclass
class Dataset:
    name: str
    video_root: Path
    classes: list[str]  # [] for an unlabelled set (a CSV without a label column): every label -1
    records: list[VideoRecord]  # sorted by video_id
    splits: dict[str, dict[str, list[str]]]  # {"1": {"train": [ids], "test": [ids]}, ...}
    problems: list[dict] = field(default_factory=list)  # [{"video_id", "reason"}]
    version: str = ""  # what names alone don't tell: the generated sample's version, a CSV's labels, groups, split

    @property
    def listing_sha256(self) -> str:
        """Identity of the video list: another listing (or content version) is another feature set."""
        ids = [r.video_id for r in self.records]
        return digest([self.version, ids] if self.version else ids)


def safe_relative(rel: str) -> str | None:
    """Normalise a path read from a split/CSV file; None if it could leave the root.

    The check is lexical on purpose: a dataset may legitimately be a tree of symlinks,
    but a listed path that is absolute or climbs out with '..' is never followed.
    """
    rel = rel.strip().replace("\\", "/")
    if not rel or "\x00" in rel or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        return None
    norm = os.path.normpath(rel)
    if norm == ".." or norm.startswith("../") or norm.startswith("/"):
        return None
    return PurePosixPath(norm).as_posix()


def list_videos(root: Path) -> list[Path]:
    """Video files (by extension, case-insensitive) anywhere below root, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames) if Path(f).suffix.lower() in VIDEO_EXTENSIONS]
    return out


def read_lines(path: Path) -> list[str]:
    """Lines of a split file without CRLF/LF endings or blanks (the real files use CRLF)."""
    return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]


# ---------------------------------------------------------------- UCF101
def load_ucf101(root: Path, name: str = "ucf101") -> Dataset:
    """Official UCF101: root/UCF-101/<Class>/v_<Class>_gXX_cYY.avi + root/ucfTrainTestlist/."""
    video_root, lists = root / "UCF-101", root / "ucfTrainTestlist"
    if not (video_root.is_dir() and (lists / "classInd.txt").is_file()):
        raise DatasetError(
            f"UCF101 not found at {root}. Expected:\n"
            f"  {video_root}/<Class>/v_<Class>_gXX_cYY.avi   (13,320 videos in 101 class folders)\n"
            f"  {lists}/classInd.txt, trainlist01-03.txt, testlist01-03.txt\n"
            f"Download {UCF101_URLS}, unpack both into {root} (or pass DATA_DIR=/path/to/it)."
        )
    classes: list[str] = []
    for line in read_lines(lists / "classInd.txt"):
        idx, cls = line.split()
        if int(idx) != len(classes) + 1:
            raise DatasetError(f"{lists / 'classInd.txt'}: expected index {len(classes) + 1}, found {idx!r}")
        classes.append(cls)
    # The official folder names differ in case from classInd for one class
    # (HandstandPushups vs HandStandPushups), so class lookup is case-insensitive.
    by_lower = {c.lower(): i for i, c in enumerate(classes)}
    records, problems = [], []
    for path in list_videos(video_root):
        vid = path.relative_to(video_root).as_posix()
        label = by_lower.get(vid.split("/")[0].lower(), -1)
        if label < 0:
            problems.append({"video_id": vid, "reason": f"class folder {vid.split('/')[0]!r} is not in classInd.txt"})
            continue
        group = ucf_group(classes[label], path, vid)
        records.append(VideoRecord(vid, path, label, group))
    splits = read_ucf_splits(lists, {r.video_id.lower(): r.video_id for r in records}, problems)
    return Dataset(name, video_root, classes, records, splits, problems)


def ucf_group(cls: str, path: Path, video_id: str) -> str:
    """The group of a UCF101-style name (v_<Class>_gXX_cYY: clips cut from one video) as <cls>/gXX;
    a name without one is its own group."""
    m = re.search(r"_g(\d+)_c\d+", path.stem)
    return f"{cls}/g{m.group(1)}" if m else video_id


def read_ucf_splits(lists: Path, known: dict[str, str], problems: list[dict]) -> dict:
    """trainlist0k.txt ('Class/v_x.avi 12') and testlist0k.txt ('Class/v_x.avi') for k=1..3."""
    splits: dict[str, dict[str, list[str]]] = {}
    reported = set()
    for k in ("1", "2", "3"):
        for part in ("train", "test"):
            f = lists / f"{part}list0{k}.txt"
            if not f.is_file():
                continue
            ids = []
            for line in read_lines(f):
                rel = safe_relative(line.split()[0])
                if rel is None:
                    problems.append(
                        {
                            "video_id": line.split()[0],
                            "reason": f"listed in {f.name} with a path that escapes the dataset root; not opened",
                        }
                    )
                    continue
                vid = known.get(rel.lower())
                if vid is None:
                    if rel not in reported:
                        reported.add(rel)
                        problems.append(
                            {"video_id": rel, "reason": f"listed in {f.name} but missing: no file at UCF-101/{rel}"}
                        )
                    continue
                ids.append(vid)
            splits.setdefault(k, {"train": [], "test": []})[part] = ids
    if not splits:
        raise DatasetError(f"no trainlist0k.txt/testlist0k.txt in {lists}; the official split files are needed")
    return splits


# ---------------------------------------------------------------- HMDB51
def load_hmdb51(root: Path, name: str = "hmdb51") -> Dataset:
    """HMDB51: root/<class>/<clip>.avi + <class>_test_split{1,2,3}.txt (1 train, 2 test, 0 unused)."""
    split_files = sorted(root.rglob("*_test_split[123].txt")) if root.is_dir() else []
    if not split_files:
        raise DatasetError(
            f"HMDB51 not found at {root}. Expected:\n"
            f"  {root}/<class>/<clip>.avi   (51 class folders, 6,766 clips)\n"
            f"  {root}/testTrainMulti_7030_splits/<class>_test_split1.txt (and 2, 3)\n"
            f"Download {HMDB51_URL}, unrar the per-class archives into {root} (or pass DATA_DIR=...)."
        )
    classes = sorted({f.name.rsplit("_test_split", 1)[0] for f in split_files})
    records, problems = [], []
    for label, cls in enumerate(classes):
        for path in list_videos(root / cls):
            vid = path.relative_to(root).as_posix()
            # Clips cut from one film share a prefix before "_<class>_": keep them together.
            group = path.stem.split(f"_{cls}_")[0] if f"_{cls}_" in path.stem else path.stem
            records.append(VideoRecord(vid, path, label, f"{cls}/{group}"))
    known = {r.video_id for r in records}
    splits: dict[str, dict[str, list[str]]] = {}
    for f in split_files:
        cls, k = f.stem.rsplit("_test_split", 1)
        part_of = {"1": "train", "2": "test"}
        s = splits.setdefault(k, {"train": [], "test": []})
        for line in read_lines(f):
            clip, mark = line.rsplit(None, 1)
            rel = safe_relative(f"{cls}/{clip}")
            if rel is None:
                problems.append(
                    {
                        "video_id": clip,
                        "reason": f"listed in {f.name} with a path that escapes the dataset root; not opened",
                    }
                )
            elif mark in part_of:
                if rel in known:
                    s[part_of[mark]].append(rel)
                else:
                    problems.append(
                        {"video_id": rel, "reason": f"listed in {f.name} but missing: no file at {root / rel}"}
                    )
    for s in splits.values():
        s["train"].sort()
        s["test"].sort()
    return Dataset(name, root, classes, sorted(records, key=lambda r: r.video_id), splits, dedupe(problems))


# ---------------------------------------------------------------- folder / CSV
def load_folder(root: Path, name: str) -> Dataset:
    """Any tree root/<class>/<video>; no official split (stage two carves one by group). Clips named
    UCF101-style (..._gXX_cYY) are grouped by gXX within their class; any other clip is its own group."""
    classes = (
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    )
    if not classes:
        raise DatasetError(
            f"no class folders under {root}. The folder dataset expects {root}/<class>/<video file> "
            f"(extensions: {', '.join(sorted(VIDEO_EXTENSIONS))}); pass DATA_DIR=/path/to/tree"
        )
    records = [
        VideoRecord(p.relative_to(root).as_posix(), p, label, ucf_group(cls, p, p.relative_to(root).as_posix()))
        for label, cls in enumerate(classes)
        for p in list_videos(root / cls)
    ]
    records.sort(key=lambda r: r.video_id)
    # Warned, not refused: a class without videos yet (or with files of another extension) is
    # often a work in progress, and the other classes are still worth extracting. Its label stays
    # in the class list so that adding its videos later keeps every other label's number.
    empty = [cls for cls in classes if not any(r.video_id.startswith(f"{cls}/") for r in records)]
    for cls in empty:
        console.say(
            f"warning: class folder {root / cls} holds no video files "
            f"({', '.join(sorted(VIDEO_EXTENSIONS))}); the class gets no training examples"
        )
    return Dataset(name, root, classes, records, {"1": {"train": [r.video_id for r in records], "test": []}})


CSV_COLUMNS = "path[,label][,split][,group]"


def load_csv(csv_path: Path, name: str) -> Dataset:
    """A CSV with columns path[,label][,split][,group].

    path: relative to the CSV's folder (the video id is that path, normalised), or absolute
    (the video id is the absolute path, normalised: no relative id starts with '/', so the two
    never collide). label: a class name or number; without the column the set is unlabelled
    (untrimmed videos have no single label): classes [] and every label -1. Rows with the same
    group are kept on one side of a carved split; a row without one is its own group.
    """
    if not csv_path.is_file():
        raise DatasetError(
            f"CSV list not found at {csv_path}. Expected a file with a header '{CSV_COLUMNS}', "
            f"paths relative to its folder or absolute, split = train|test (optional), no label column "
            f"for unlabelled videos; pass DATA_DIR=/path/to/list.csv"
        )
    root = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0]:
        raise DatasetError(f"{csv_path}: the header must name the columns {CSV_COLUMNS} (path at least)")
    labelled = "label" in rows[0]
    labels = [r["label"].strip() for r in rows] if labelled else []
    # Integer labels keep their numeric order; names are sorted.
    classes = sorted(set(labels), key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))
    index = {c: i for i, c in enumerate(classes)}
    records: dict[str, VideoRecord] = {}
    problems: list[dict] = []
    splits: dict[str, dict[str, list[str]]] = {"1": {"train": [], "test": []}}
    for line_no, row in enumerate(rows, start=2):
        vid, path = csv_video(row["path"] or "", root)
        where = f"{csv_path.name}:{line_no}"
        if path is None:
            problems.append(
                {
                    "video_id": vid,
                    "reason": f"{where}: path escapes the dataset root; not opened (list it by its absolute path)",
                }
            )
            continue
        if not path.exists() and not path.is_symlink():
            problems.append({"video_id": vid, "reason": f"{where}: listed but missing: no file at {path}"})
            continue
        group = (row.get("group") or "").strip()
        records[vid] = VideoRecord(vid, path, index[row["label"].strip()] if labelled else -1, group or vid)
        part = (row.get("split") or "").strip().lower()
        if part:
            if part not in ("train", "test", "val"):
                raise DatasetError(f"{csv_path}:{line_no}: split must be train, val or test, got {part!r}")
            splits["1"]["test" if part == "test" else "train"].append(vid)
    if not splits["1"]["train"] and not splits["1"]["test"]:
        splits = {"1": {"train": sorted(records), "test": []}}
    listed = [records[k] for k in sorted(records)]
    return Dataset(name, root, classes, listed, splits, problems, csv_version(labelled, classes, listed, splits))


def csv_version(labelled: bool, classes: list[str], records: list[VideoRecord], splits: dict) -> str:
    """What a CSV says of its videos besides their ids, as part of the set's identity: a set stores
    each video's label and group and the listing's split, so a CSV edited in any of them is another
    set (its rows copied from the old one by per-video reuse, nothing computed again), never the old
    set served with the old labels. An unlabelled listing is never the labelled one of the same paths."""
    said = {
        "classes": classes,
        "videos": [[r.video_id, r.label, r.group] for r in records],
        "splits": {k: {side: sorted(ids) for side, ids in parts.items()} for k, parts in splits.items()},
    }  # in an order of their own: the rows' order in the file says nothing
    return f"{'labelled' if labelled else 'unlabelled'}-{digest(said)[:16]}"


def csv_video(listed: str, root: Path) -> tuple[str, Path | None]:
    """(video id, file) of a CSV row's path: an absolute path as given (normalised), a relative
    one under `root`; the file is None for a relative path that climbs out of `root` (or a drive
    path), which is never opened."""
    text = listed.strip()
    if text.startswith("/") and "\x00" not in text:
        vid = PurePosixPath(os.path.normpath(text)).as_posix()
        return vid, Path(vid)
    rel = safe_relative(text)
    return (listed, None) if rel is None else (rel, root / rel)


def dedupe(problems: list[dict]) -> list[dict]:
    seen, out = set(), []
    for p in problems:
        if p["video_id"] not in seen:
            seen.add(p["video_id"])
            out.append(p)
    return out


def load_dataset(cfg: ExtractConfig) -> Dataset:
    """Dispatch on cfg.dataset. The sample dataset is generated on first use."""
    root = cfg.root
    if cfg.dataset == "sample":
        if cfg.data_dir and not (sample_dataset_ready(root) or holds_only_sample(root)):
            raise ConfigError(
                f"--data-dir (DATA_DIR=) {root}: DATASET=sample (the default) generates the sample dataset "
                f"there, but it holds other files; nothing was written. For your own videos give DATASET=folder, "
                f"csv, ucf101 or hmdb51 with this DATA_DIR=; for the sample leave DATA_DIR= out or name an "
                f"empty or new folder"
            )
        if not sample_dataset_ready(root):
            console.say(f"generating the embedded sample dataset at {root} (UCF101 layout, ffmpeg) ...")
            make_sample_dataset(root)
        ds = load_ucf101(root, name=cfg.dataset_name)
        # Regenerated sample clips keep their names, so the version must enter the identity.
        ds.version = f"sample-v{SAMPLE_VERSION}"
        return ds
    if cfg.dataset == "ucf101":
        return load_ucf101(root, name=cfg.dataset_name)
    if cfg.dataset == "hmdb51":
        return load_hmdb51(root, name=cfg.dataset_name)
    if cfg.dataset == "folder":
        return load_folder(root, name=cfg.dataset_name)
    return load_csv(root, name=cfg.dataset_name)
