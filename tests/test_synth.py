"""The generated videos and trees are what they claim: exact official layouts, frame counts,
sizes, the bad-input corpus, temporal-order classes, determinism."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from itertools import groupby
from pathlib import Path

import numpy as np
import pytest
import synth
from helpers import require_ffprobe

from stages.extract.datasets import load_csv, load_folder, load_hmdb51, load_ucf101

UCF_NAME = re.compile(r"^([A-Za-z0-9]+)/v_\1_g(\d\d)_c(\d\d)\.avi$")


# ---------------------------------------------------------------- helpers
def probe(path: Path, count: bool = False) -> dict:
    """First video stream of path: width, height, r_frame_rate, nb_frames (header) and, with count, nb_read_frames."""
    args = [
        require_ffprobe(),
        "-v",
        "error",
        "-select_streams",
        "v:0",
        *(["-count_frames"] if count else []),
        "-show_entries",
        "stream=codec_name,width,height,r_frame_rate,nb_frames,nb_read_frames:format=format_name",
        "-of",
        "json",
        str(path),
    ]
    info = json.loads(subprocess.run(args, capture_output=True, check=True, timeout=60).stdout)
    return {**(info["streams"][0] if info["streams"] else {}), "format_name": info["format"]["format_name"]}


def stream_types(path: Path) -> list[str]:
    args = [require_ffprobe(), "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)]
    return subprocess.run(args, capture_output=True, check=True, timeout=60).stdout.decode().split()


def frame_means(path: Path) -> np.ndarray:
    """Mean RGB of every frame, (n, 3) float, from a 16x12 thumbnail (cheap to decode)."""
    args = [
        synth.require_ffmpeg(),
        "-v",
        "error",
        "-i",
        str(path),
        "-vf",
        "scale=16:12",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    raw = subprocess.run(args, capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 16 * 12, 3).mean(axis=1)


def list_lines(path: Path) -> list[str]:
    """Lines of a UCF101 list file, after checking that every line ends in CRLF."""
    data = path.read_bytes()
    assert data.endswith(b"\r\n") and data.count(b"\n") == data.count(b"\r\n"), f"{path.name} is not CRLF throughout"
    return data.decode().split("\r\n")[:-1]


def check_ucf101_layout(
    root: Path, classes: list[str], groups: int, clips_per_group: int, missing: tuple[str, ...] = ()
) -> None:
    """The exact official layout: files, classInd, 3 train/test lists (CRLF), disjoint test groups."""
    listed = {
        f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi"
        for c in classes
        for g in range(1, groups + 1)
        for k in range(1, clips_per_group + 1)
    }
    on_disk = {p.relative_to(root / "UCF-101").as_posix() for p in (root / "UCF-101").rglob("*") if p.is_file()}
    assert on_disk == listed - set(missing)
    lists = root / "ucfTrainTestlist"
    assert sorted(p.name for p in lists.iterdir()) == ["classInd.txt"] + [
        f"{s}list0{k}.txt" for s in ("test", "train") for k in (1, 2, 3)
    ]
    assert list_lines(lists / "classInd.txt") == [f"{i} {c}" for i, c in enumerate(classes, start=1)]
    tested = []
    for k in (1, 2, 3):
        train = [line.split(" ") for line in list_lines(lists / f"trainlist0{k}.txt")]
        test = list_lines(lists / f"testlist0{k}.txt")
        assert all(len(t) == 2 and int(t[1]) == classes.index(t[0].split("/")[0]) + 1 for t in train)  # 1-based label
        assert all(" " not in t for t in test)  # test lists carry no label
        train_ids = [t[0] for t in train]
        assert all(UCF_NAME.match(v) for v in train_ids + test)
        assert sorted(train_ids + test) == sorted(listed) and not set(train_ids) & set(test)
        groups_of = lambda ids: {int(UCF_NAME.match(v).group(2)) for v in ids}
        assert set(synth.split_test_groups(groups)[k]) == groups_of(test)
        assert not groups_of(test) & groups_of(train_ids)  # a group never straddles train and test
        tested.append(groups_of(test))
    assert not (tested[0] & tested[1] or tested[1] & tested[2] or tested[0] & tested[2])


# ---------------------------------------------------------------- the sample dataset
def test_sample_dataset_has_the_exact_ucf101_layout(sample_tree):
    check_ucf101_layout(sample_tree, list(synth.SAMPLE_CLASSES), groups=4, clips_per_group=2)
    assert synth.sample_dataset_ready(sample_tree)
    ds = load_ucf101(sample_tree)
    assert ds.classes == list(synth.SAMPLE_CLASSES) and len(ds.records) == 48 and not ds.problems
    assert {k: (len(s["train"]), len(s["test"])) for k, s in ds.splits.items()} == {
        "1": (36, 12),
        "2": (36, 12),
        "3": (36, 12),
    }


def test_sample_clips_are_small_mpeg4_avi_of_at_least_16_frames(sample_tree):
    for cls in synth.SAMPLE_CLASSES:
        info = probe(sample_tree / "UCF-101" / cls / f"v_{cls}_g01_c01.avi")
        assert (info["codec_name"], info["format_name"], info["width"], info["height"], info["r_frame_rate"]) == (
            "mpeg4",
            "avi",
            160,
            120,
            "10/1",
        )
        assert 16 <= int(info["nb_frames"]) <= 48


def test_sample_order_classes_share_scenes_content_classes_do_not():
    first, last = synth.SAMPLE_CLASSES["SunsetFirst"], synth.SAMPLE_CLASSES["SunsetLast"]
    assert sorted(first) == sorted(last) and first != last
    content = [set(s) for c, s in synth.SAMPLE_CLASSES.items() if c not in ("SunsetFirst", "SunsetLast")]
    assert all(not a & b for i, a in enumerate(content) for b in content[i + 1 :])


def test_sample_dataset_is_idempotent_and_finishes_an_interrupted_run(sample_tree, tmp_path):
    root = tmp_path / "sample"
    shutil.copytree(sample_tree, root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    synth.make_sample_dataset(root)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes  # complete: nothing done
    # Interrupted: one clip and the marker never written, a dead generator's temp clip left behind.
    clip = root / "UCF-101" / "Fractal" / "v_Fractal_g03_c02.avi"
    original = clip.read_bytes()
    clip.unlink()
    (root / synth.COMPLETE).unlink()
    dead = next(p for p in range(4_000_000, 3_000_000, -1) if not synth.pid_alive(p))
    stale = clip.with_name(f".{clip.name}.{dead}{synth.PARTIAL}")
    stale.write_bytes(b"half a clip")
    assert not synth.sample_dataset_ready(root)
    synth.make_sample_dataset(root)
    assert synth.sample_dataset_ready(root) and not stale.exists()
    assert clip.read_bytes() == original  # deterministic: the same bytes as the first time
    other = root / "UCF-101" / "Fractal" / "v_Fractal_g03_c01.avi"
    assert other.stat().st_mtime_ns == mtimes[other]  # finished clips are kept, not remade


# ---------------------------------------------------------------- clips
def test_make_clip_frames_size_rate_and_codec(tmp_path):
    clip = synth.make_clip(
        tmp_path / "a.avi", ["testcard", "life", "rings"], fps=12, size=(128, 96), seconds_per_scene=1.0, seed=3
    )
    assert len(clip.scene_frames) == 3 and all(8 <= n <= 16 for n in clip.scene_frames)  # 12 frames +-30%
    info = probe(clip.path, count=True)
    assert int(info["nb_read_frames"]) == int(info["nb_frames"]) == clip.frames
    assert (info["width"], info["height"], info["r_frame_rate"], info["codec_name"]) == (128, 96, "12/1", "mpeg4")
    fixed = synth.make_clip(tmp_path / "b.mkv", ["bars", "static"], scene_frames=[4, 7], codec="mjpeg")
    info = probe(fixed.path, count=True)
    assert int(info["nb_read_frames"]) == 11 and info["codec_name"] == "mjpeg" and "matroska" in info["format_name"]
    assert not list(tmp_path.glob(f"*{synth.PARTIAL}"))


def test_make_clip_is_deterministic_given_a_seed(tmp_path):
    a = synth.make_clip(tmp_path / "a.mkv", ["fractal", "automaton", "plasma"], seed=7)
    b = synth.make_clip(tmp_path / "b.mkv", ["fractal", "automaton", "plasma"], seed=7)
    c = synth.make_clip(tmp_path / "c.mkv", ["fractal", "automaton", "plasma"], seed=8)
    assert a.path.read_bytes() == b.path.read_bytes() and a.scene_frames == b.scene_frames
    assert a.path.read_bytes() != c.path.read_bytes()


def test_scenes_in_one_clip_keep_their_colours_in_order(tmp_path):
    """A clip is its scenes back to back: each frame looks like the scene the Clip says it is in."""
    scenes = list(synth.TEMPORAL_SCENES)
    clip = synth.make_clip(tmp_path / "x.avi", scenes, seed=1)
    means = frame_means(clip.path)
    protos = {s: frame_means(synth.make_clip(tmp_path / f"{s}.avi", [s], seed=2).path).mean(axis=0) for s in scenes}
    nearest = [min(protos, key=lambda s: np.linalg.norm(m - protos[s])) for m in means]
    assert nearest == [s for s, n in zip(scenes, clip.scene_frames) for _ in range(n)]


def test_unknown_scene_and_failed_encode_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown scene.*choose from"):
        synth.make_clip(tmp_path / "a.avi", ["nope"])
    with pytest.raises(synth.SynthError, match=r"ffmpeg could not make .*b\.avi"):
        synth.make_clip(tmp_path / "b.avi", ["bars"], codec="no_such_encoder")
    assert not list(tmp_path.iterdir())  # no clip and no temp file left


def test_missing_ffmpeg_names_the_fix(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("FFMPEG_BINARY", raising=False)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # no static ffmpeg from the wheel either
    with pytest.raises(synth.SynthError) as e:
        synth.require_ffmpeg()
    assert all(
        hint in str(e.value)
        for hint in ("apt-get install ffmpeg", "brew install ffmpeg", "conda install -c conda-forge ffmpeg")
    )


def test_split_test_groups_scale_ucf101_down():
    assert synth.split_test_groups(25) == {1: list(range(1, 8)), 2: list(range(8, 15)), 3: list(range(15, 22))}
    assert synth.split_test_groups(4) == {1: [1], 2: [2], 3: [3]}
    assert synth.split_test_groups(6) == {1: [1, 2], 2: [3, 4], 3: [5, 6]}
    with pytest.raises(ValueError, match="groups must be >= 3"):
        synth.split_test_groups(2)


# ---------------------------------------------------------------- other trees
def test_ucf_tree_layout_and_lengths(ucf_tree):
    from helpers import UCF_TREE_CLASSES, UCF_TREE_SETTINGS

    check_ucf101_layout(
        ucf_tree, list(UCF_TREE_CLASSES), UCF_TREE_SETTINGS["groups"], UCF_TREE_SETTINGS["clips_per_group"]
    )
    ds = load_ucf101(ucf_tree)
    assert len(ds.records) == 18 and not ds.problems and sorted(ds.splits) == ["1", "2", "3"]
    assert all(int(probe(r.path)["nb_frames"]) >= 16 for r in ds.records[::5])


def test_temporal_tree_classes_share_scenes_and_differ_only_in_order(temporal_tree, tmp_path):
    table = synth.order_classes(4)
    assert list(table) == ["OrderABC", "OrderACB", "OrderBAC", "OrderBCA"]
    check_ucf101_layout(temporal_tree, list(table), groups=6, clips_per_group=2)
    assert synth.split_test_groups(6)[1] == [1, 2]
    protos = {
        s: frame_means(synth.make_clip(tmp_path / f"{s}.avi", [s], size=(128, 96), seed=9).path).mean(axis=0)
        for s in synth.TEMPORAL_SCENES
    }
    for cls, order in table.items():
        for name in (f"v_{cls}_g01_c01.avi", f"v_{cls}_g06_c02.avi"):
            means = frame_means(temporal_tree / "UCF-101" / cls / name)
            nearest = [min(protos, key=lambda s: np.linalg.norm(m - protos[s])) for m in means]
            assert tuple(s for s, _ in groupby(nearest)) == order, f"{cls}/{name}"


def test_hmdb_tree_official_layout_and_marks(hmdb_tree):
    splits = hmdb_tree / "testTrainMulti_7030_splits"
    classes = sorted(synth.HMDB51_CLASSES)
    assert sorted(p.name for p in splits.iterdir()) == sorted(
        f"{c}_test_split{k}.txt" for c in classes for k in (1, 2, 3)
    )
    test_films = {}
    for c in classes:
        videos = sorted(p.name for p in (hmdb_tree / c).iterdir())
        films = synth.HMDB51_FILMS[:3]
        assert videos == sorted(f"{f}_{c}_{t}_cm_np1_fr_med_{n}.avi" for f in films for n, t in ((0, "f"), (1, "u")))
        for k in (1, 2, 3):
            data = (splits / f"{c}_test_split{k}.txt").read_bytes()
            assert b"\r" not in data and data.endswith(b" \n")
            rows = [line.split(" ") for line in data.decode().split("\n")[:-1]]
            assert all(len(r) == 3 and r[2] == "" and r[1] in ("0", "1", "2") for r in rows)  # '<clip>.avi <mark> '
            assert sorted(r[0] for r in rows) == videos
            side = {}
            for name, mark, _ in rows:
                side.setdefault(name.split(f"_{c}_")[0], set()).add(mark)
            assert all(marks in ({"1"}, {"2"}, {"0", "1"}) for marks in side.values())  # a film on one side
            test_films[c, k] = {f for f, m in side.items() if m == {"2"}}
        assert [test_films[c, k] for k in (1, 2, 3)] == [{f} for f in films]  # split k tests film k
    ds = load_hmdb51(hmdb_tree)
    assert ds.classes == classes and len(ds.records) == 18 and not ds.problems
    assert {r.group for r in ds.records} == {f"{c}/{f}" for c in classes for f in synth.HMDB51_FILMS[:3]}
    assert {k: (len(s["train"]), len(s["test"])) for k, s in ds.splits.items()} == {k: (9, 6) for k in "123"}


def test_folder_tree_and_csv_dataset(folder_tree, csv_dataset):
    rels = sorted(p.relative_to(folder_tree).as_posix() for p in folder_tree.rglob("*") if p.is_file())
    assert rels == synth.make_folder_tree(folder_tree)  # and a second call makes nothing new
    assert {Path(r).suffix for r in rels} == {".avi", ".mp4", ".mkv"}
    assert "mp4" in probe(folder_tree / "swim" / "clip_01.mp4")["format_name"]
    assert [r.video_id for r in load_folder(folder_tree, "f").records] == rels
    lines = csv_dataset.read_text().splitlines()
    assert lines[0] == "path,label,split" and len(lines) == 10
    for line in lines[1:]:
        rel, label, split = line.split(",")
        assert not rel.startswith("/") and (csv_dataset.parent / rel).is_file() and split in ("train", "test")
    ds = load_csv(csv_dataset, "c")
    assert ds.classes == sorted(synth.CSV_CLASSES) and len(ds.records) == 9 and not ds.problems
    assert len(ds.splits["1"]["test"]) == 3


# ---------------------------------------------------------------- bad input
def test_bad_corpus_files_are_what_they_claim(bad_corpus):
    root, expected = bad_corpus.root, bad_corpus.expected
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}
    assert on_disk == set(expected)
    assert all(v.startswith((synth.MUST_FAIL + ": ", synth.MUST_SUCCEED + ": ")) for v in expected.values())
    assert len(bad_corpus.paths(synth.MUST_FAIL)) == 5 and len(bad_corpus.paths(synth.MUST_SUCCEED)) == 11
    fail, ok = root / "must_fail", root / "must_succeed"
    assert stat.S_ISFIFO(os.lstat(fail / "hang.avi").st_mode)  # lstat: opening it would block
    assert (fail / "empty.avi").stat().st_size == 0
    assert (fail / "not_a_video.avi").read_text().startswith("This is a plain text file")
    assert stream_types(fail / "audio_only.avi") == ["audio"]
    trunc = probe(fail / "truncated.avi", count=True)
    assert trunc["nb_frames"] == "40" and 0 < int(trunc["nb_read_frames"]) < 40
    for name, frames, size in [
        ("one_frame.avi", 1, (160, 120)),
        ("short_5_frames.avi", 5, (160, 120)),
        ("uhd_3840x2160.avi", 3, (3840, 2160)),
        ("portrait_120x200.avi", 20, (120, 200)),
        ("odd_161x97.avi", 20, (161, 97)),
        ('it\'s a "clip" ü ñ.avi', 20, (160, 120)),
    ]:
        info = probe(ok / name, count=True)
        assert (int(info["nb_read_frames"]), info["width"], info["height"]) == (frames, *size), name
    mp4 = probe(ok / "really_mp4.avi")
    assert "mp4" in mp4["format_name"] and mp4["codec_name"] in ("h264", "mpeg4")
    assert (ok / "same_name.avi").read_bytes() != (root / "twin" / "same_name.avi").read_bytes()


def test_vfr_clip_really_has_variable_frame_durations(bad_corpus):
    args = [
        require_ffprobe(),
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=pts_time",
        "-of",
        "csv=p=0",
        str(bad_corpus.root / "must_succeed" / "vfr.mkv"),
    ]
    pts = sorted(
        float(t) for t in subprocess.run(args, capture_output=True, check=True, timeout=60).stdout.decode().split()
    )
    gaps = np.round(np.diff(pts), 3)
    assert len(pts) == 20 and set(gaps) <= {0.039, 0.04, 0.041, 0.1} and 0.1 in gaps and 0.04 in gaps


def test_missing_listed_tree_lists_exactly_one_absent_clip(missing_listed_tree):
    root, missing = missing_listed_tree
    check_ucf101_layout(root, ["Alpha", "Beta"], groups=3, clips_per_group=1, missing=(missing,))
    listed_in = [p.name for p in sorted((root / "ucfTrainTestlist").glob("*list0*.txt")) if missing in p.read_text()]
    assert listed_in == ["testlist02.txt", "trainlist01.txt", "trainlist03.txt"]
    assert [p["video_id"] for p in load_ucf101(root).problems] == [missing]


def test_unreadable_file_is_unreadable_to_the_ffmpeg_tests_use(unreadable_tree):
    """With the fixture's env (as root) or without it (as anyone else), ffprobe cannot open locked.avi."""
    assert stat.S_IMODE(unreadable_tree.path.stat().st_mode) == 0
    env = {**os.environ, **unreadable_tree.env}
    ffprobe = unreadable_tree.env.get("FFPROBE_BINARY", require_ffprobe())
    run = lambda p: subprocess.run([ffprobe, "-v", "error", str(p)], capture_output=True, timeout=60, env=env)
    locked = run(unreadable_tree.path)
    assert locked.returncode != 0 and b"Permission denied" in locked.stderr
    assert run(unreadable_tree.root / "readable" / "ok.avi").returncode == 0  # the rest stays readable


# ---------------------------------------------------------------- benchmark clips
def test_bench_clips_are_ucf101_like_and_reused(tmp_path):
    paths = synth.make_bench_clips(tmp_path, 2, seconds=1.0)
    assert [p.name for p in paths] == ["bench_0000.avi", "bench_0001.avi"]
    info = probe(paths[0], count=True)
    assert (int(info["nb_read_frames"]), info["width"], info["height"], info["r_frame_rate"], info["codec_name"]) == (
        25,
        320,
        240,
        "25/1",
        "mpeg4",
    )
    mtime = paths[0].stat().st_mtime_ns
    assert synth.make_bench_clips(tmp_path, 3, seconds=1.0)[:2] == paths and paths[0].stat().st_mtime_ns == mtime
    (full,) = synth.make_bench_clips(tmp_path / "full", 1)
    assert int(probe(full)["nb_frames"]) == 175 and 150e3 < full.stat().st_size < 900e3  # ~540 kbit/s x 7 s
