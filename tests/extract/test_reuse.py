"""Reuse across sets: a video is computed once per store and extraction settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import audio_cfg, shard_arrays
from reliability_harness import check_feature_set, features_cmd, make_tiny_tree, run_to_end, start, wait_until

from pipeline import store
from stages.extract import extract_features
from stages.extract.config import ExtractConfig

SMALL = dict(weights="random", image_size=64, frames=4, shard_size=4, workers=2, device="cpu")


@pytest.fixture
def tree(ucf_tree, tmp_path) -> Path:
    """A private copy of the UCF101-layout tree (tests below rewrite and move its files)."""
    return Path(shutil.copytree(ucf_tree, tmp_path / "ucf101"))


def videos(tree: Path) -> list[str]:
    return sorted(p.relative_to(tree / "UCF-101").as_posix() for p in (tree / "UCF-101").glob("*/*.avi"))


def write_csv(tree: Path, ids: list[str]) -> Path:
    """A CSV list over some of the tree's clips (paths relative to UCF-101/)."""
    path = tree / "UCF-101" / "part.csv"
    path.write_text("path,label\n" + "".join(f"{v},{v.split('/')[0]}\n" for v in ids))
    return path


def by_video(set_dir: Path) -> dict[str, tuple]:
    """video_id -> (features, length, frame indices, timestamps, fingerprint) of a set."""
    a = shard_arrays(set_dir)
    return {
        vid: (a["features"][k], a["lengths"][k], a["frame_indices"][k], a["timestamps"][k], a["fingerprints"][k])
        for k, vid in enumerate(a["video_ids"])
    }


def assert_same_rows(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for vid in want:
        for g, w in zip(got[vid], want[vid]):
            np.testing.assert_array_equal(g, w, err_msg=vid)


def test_grown_listing_computes_only_new_videos_bit_for_bit(tree, tmp_path, capfd):
    ids = videos(tree)
    root = tmp_path / "store"
    part = extract_features(
        ExtractConfig(dataset="csv", data_dir=write_csv(tree, ids[: 2 * len(ids) // 3]), features_root=root, **SMALL)
    )
    assert part.computed == 2 * len(ids) // 3 and part.copied == 0
    whole = extract_features(ExtractConfig(dataset="ucf101", data_dir=tree, features_root=root, **SMALL))
    assert whole.computed == len(ids) - part.computed and whole.copied == part.computed
    assert whole.copied_from == {part.feature_set_id: part.computed}
    assert f"computed {whole.computed}, copied {whole.copied} (from {part.feature_set_id})" in capfd.readouterr().err
    m = store.load_manifest(whole.set_dir)
    assert sum(sum(s.get("copied", {}).values()) for s in m["shards"]) == part.computed
    assert f"copied from {part.feature_set_id}: {part.computed}" in store.describe(whole.set_dir)

    scratch = extract_features(
        ExtractConfig(dataset="ucf101", data_dir=tree, features_root=tmp_path / "fresh", **SMALL)
    )
    assert scratch.copied == 0
    assert_same_rows(by_video(whole.set_dir), by_video(scratch.set_dir))
    # labels and groups come from the new set's listing, not from the copied rows
    assert (shard_arrays(whole.set_dir)["labels"] == shard_arrays(scratch.set_dir)["labels"]).all()
    assert list(shard_arrays(whole.set_dir)["groups"]) == list(shard_arrays(scratch.set_dir)["groups"])


def test_a_relabelled_csv_is_a_new_set_copied_with_the_new_labels(tree, tmp_path):
    """Edit one video's label in the CSV: the next run makes another set (never the old one with
    the old label), computes nothing and stores the new label; `make train` then picks it, newest."""
    ids = videos(tree)
    root = tmp_path / "store"
    listing = write_csv(tree, ids)
    first = extract_features(ExtractConfig(dataset="csv", data_dir=listing, features_root=root, **SMALL))
    moved = ids[0]
    listing.write_text(
        listing.read_text().replace(f"{moved},{moved.split('/')[0]}", f"{moved},{ids[-1].split('/')[0]}")
    )
    again = extract_features(ExtractConfig(dataset="csv", data_dir=listing, features_root=root, **SMALL))
    assert again.set_dir != first.set_dir and not again.reused_set
    assert again.computed == 0 and again.copied == len(ids)
    assert_same_rows(by_video(again.set_dir), by_video(first.set_dir))
    old, new = shard_arrays(first.set_dir), shard_arrays(again.set_dir)
    k = list(new["video_ids"]).index(moved)
    assert new["labels"][k] == new["labels"][list(new["video_ids"]).index(ids[-1])] != old["labels"][k]
    assert store.resolve_feature_sets(again.set_dir.parent.name, features_root=root) == [again.set_dir]


def test_same_tree_elsewhere_as_a_folder_set_computes_nothing(tree, tmp_path):
    root = tmp_path / "store"
    first = extract_features(ExtractConfig(dataset="ucf101", data_dir=tree, features_root=root, **SMALL))
    moved = Path(shutil.copytree(tree / "UCF-101", tmp_path / "elsewhere" / "clips"))
    again = extract_features(ExtractConfig(dataset="folder", data_dir=moved, features_root=root, **SMALL))
    assert again.set_dir != first.set_dir
    assert again.computed == 0 and again.copied == len(videos(tree))
    assert_same_rows(by_video(again.set_dir), by_video(first.set_dir))


def test_changed_file_is_computed_and_renamed_file_copied(tree, tmp_path):
    ids = videos(tree)
    root = tmp_path / "store"
    first = extract_features(ExtractConfig(dataset="csv", data_dir=write_csv(tree, ids), features_root=root, **SMALL))
    clips = tree / "UCF-101"
    changed, renamed = clips / ids[0], clips / ids[-1]
    # same path, other bytes: another clip's frames re-encoded (a different file than any stored one)
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(clips / ids[1]),
            "-vf",
            "hflip",
            "-c:v",
            "mpeg4",
            str(tmp_path / "x.avi"),
        ],
        check=True,
    )
    shutil.move(tmp_path / "x.avi", changed)
    renamed.rename(renamed.with_name("v_Moved_g01_c01.avi"))
    again = extract_features(ExtractConfig(dataset="folder", data_dir=clips, features_root=root, **SMALL))
    assert again.computed == 1 and again.copied == len(ids) - 1
    rows, before = by_video(again.set_dir), by_video(first.set_dir)
    moved_id = renamed.with_name("v_Moved_g01_c01.avi").relative_to(clips).as_posix()
    assert_same_rows({moved_id: rows[moved_id]}, {moved_id: before[ids[-1]]})
    assert not np.array_equal(rows[ids[0]][0], before[ids[0]][0])


@pytest.mark.parametrize("damage", ["deleted", "garbled"])
def test_lost_index_is_rebuilt_with_the_same_result(tree, tmp_path, damage):
    ids = videos(tree)
    root = tmp_path / "store"
    part = extract_features(
        ExtractConfig(dataset="csv", data_dir=write_csv(tree, ids[:9]), features_root=root, **SMALL)
    )
    for p in store.index_path(root).parent.iterdir():
        p.unlink()
    if damage == "garbled":
        store.index_path(root).write_bytes(b"not a database" * 100)
    whole = extract_features(ExtractConfig(dataset="ucf101", data_dir=tree, features_root=root, **SMALL))
    assert whole.copied == 9 and whole.computed == len(ids) - 9
    assert_same_rows({v: by_video(whole.set_dir)[v] for v in ids[:9]}, by_video(part.set_dir))


def test_vanished_source_shard_is_computed_instead(tree, tmp_path):
    ids = videos(tree)
    root = tmp_path / "store"
    part = extract_features(
        ExtractConfig(dataset="csv", data_dir=write_csv(tree, ids[:8]), features_root=root, **SMALL)
    )
    gone = store.load_manifest(part.set_dir)["shards"][0]
    (part.set_dir / gone["file"]).unlink()  # as if gc or verify --repair removed it after the index saw it
    whole = extract_features(ExtractConfig(dataset="ucf101", data_dir=tree, features_root=root, **SMALL))
    assert whole.copied == 8 - gone["videos"] and whole.computed == len(ids) - whole.copied and whole.failed == 0


def test_audio_sets_reuse_the_same_way(sound_tree, tmp_path):
    tree, _ = sound_tree
    root = tmp_path / "store"
    first = extract_features(audio_cfg(tree, root))
    moved = Path(shutil.copytree(tree / "UCF-101", tmp_path / "elsewhere" / "clips"))
    again = extract_features(audio_cfg(moved, root, dataset="folder"))
    assert again.computed == 0 and again.copied == first.computed
    a, b = shard_arrays(again.set_dir), shard_arrays(first.set_dir)
    assert list(a["video_ids"]) == list(b["video_ids"])
    for name in ("features", "lengths", "has_audio", "fingerprints"):
        np.testing.assert_array_equal(a[name], b[name])


def test_runs_at_once_copy_from_and_write_to_the_same_sets(tmp_path):
    """Two runs share a new set (claims) while a third writes another set, all copying from one source."""
    tree = tmp_path / "tree"
    ids = make_tiny_tree(tree, clips_per_class=4, classes=3)
    root = tmp_path / "store"
    (tree / "part.csv").write_text("path,label\n" + "".join(f"{v},{v.split('/')[0]}\n" for v in ids[:6]))
    run_to_end(features_cmd(tree / "part.csv", root, dataset="csv", shard_size=1), tmp_path, "source")
    elsewhere = Path(shutil.copytree(tree, tmp_path / "elsewhere"))
    runs = [
        start(features_cmd(tree, root, shard_size=1, workers=1), tmp_path, "a"),
        start(features_cmd(tree, root, shard_size=1, workers=1), tmp_path, "b"),
        start(features_cmd(elsewhere, root, shard_size=1, workers=1), tmp_path, "c"),
    ]
    for run in runs:
        assert run.wait(300) == 0, run.stderr[-3000:]
    counts = [tuple(map(int, re.search(r"computed (\d+), copied (\d+)", r.stderr).groups())) for r in runs]
    # a and b split one set's 12 videos: the source's 6 copied once, the other 6 computed once
    assert (counts[0][0] + counts[1][0], counts[0][1] + counts[1][1]) == (6, 6), counts
    # c copies the source's 6 and whatever a and b committed before it looked; nothing twice
    assert sum(counts[2]) == 12 and counts[2][1] >= 6, counts
    sets = {d.parent.name: d for d in store.feature_sets(root)}
    source = by_video(sets["csv-part"])
    for name in ("folder-tree", "folder-elsewhere"):
        assert store.load_manifest(sets[name])["complete"]
        rows = by_video(sets[name])
        assert sorted(rows) == ids
        assert_same_rows({v: rows[v] for v in source}, source)
    # c's rows copied from a/b's set are theirs bit for bit; a video both computed may differ by a
    # float16 step (a CPU's kernels vary with the batch a frame lands in, as on any two runs)
    tree_rows, c_rows = by_video(sets["folder-tree"]), by_video(sets["folder-elsewhere"])
    copied_from_tree = copied_videos(sets["folder-elsewhere"], sets["folder-tree"].name)
    assert_same_rows({v: c_rows[v] for v in copied_from_tree}, {v: tree_rows[v] for v in copied_from_tree})
    for vid, (features, *rest) in c_rows.items():
        np.testing.assert_allclose(features, tree_rows[vid][0], rtol=2**-10, atol=1e-4, err_msg=vid)
        for g, w in zip(rest, tree_rows[vid][1:]):
            np.testing.assert_array_equal(g, w, err_msg=vid)


def copied_videos(set_dir: Path, from_set: str) -> list[str]:
    """The videos of `set_dir` whose one-video shards say they were copied from `from_set`."""
    found = []
    for s in store.load_manifest(set_dir)["shards"]:
        if s.get("copied", {}).get(from_set):
            with h5py.File(set_dir / s["file"], "r") as f:
                found += list(f["video_ids"].asstr()[()])
    return found


def test_kill_9_while_copying_then_the_rerun_completes_the_same_rows(tmp_path):
    """Every other video is in the source set, so copies and computations alternate shard by
    shard: a kill after two commits lands while copies are still to come, which the killed set
    shows (some rows copied, not all), and the rerun copies the rest."""
    tree = tmp_path / "tree"
    ids = make_tiny_tree(tree, clips_per_class=4, classes=3)
    root = tmp_path / "store"
    in_source = ids[::2]
    (tree / "part.csv").write_text("path,label\n" + "".join(f"{v},{v.split('/')[0]}\n" for v in in_source))
    run_to_end(features_cmd(tree / "part.csv", root, dataset="csv", shard_size=1), tmp_path, "source")
    (source_dir,) = [d for d in store.feature_sets(root) if d.parent.name == "csv-part"]
    cmd = features_cmd(tree, root, shard_size=1, workers=1)
    run = start(cmd, tmp_path, "killed")

    def committed() -> int:
        sets = [d for d in store.feature_sets(root) if d.parent.name == "folder-tree"]
        return len(store.load_manifest(sets[0])["shards"]) if sets else 0

    assert wait_until(lambda: committed() >= 2, 120), run.stderr[-3000:]
    assert run.kill(), "the run ended before it could be killed"
    (set_dir,) = [d for d in store.feature_sets(root) if d.parent.name == "folder-tree"]
    check_feature_set(set_dir, [[v] for v in ids])
    copied_before = copied_videos(set_dir, source_dir.name)
    kept = len(store.load_manifest(set_dir)["shards"])
    assert 0 < len(copied_before) < len(in_source), (
        f"the kill did not land while copying: {len(copied_before)} of {len(in_source)} rows copied"
    )
    rerun = run_to_end(cmd, tmp_path, "rerun")
    counts = re.search(r"computed (\d+), copied (\d+)(?: \(from \S+\))?, reused (\d+)", rerun.stderr)
    assert counts, rerun.stderr[-3000:]
    assert int(counts[2]) == len(in_source) - len(copied_before) and int(counts[3]) == kept, rerun.stderr[-3000:]
    rows = check_feature_set(set_dir, [[v] for v in ids])
    assert sorted(rows) == ids and store.load_manifest(set_dir)["complete"]
    assert sorted(copied_videos(set_dir, source_dir.name)) == in_source
    assert_same_rows({v: by_video(set_dir)[v] for v in in_source}, by_video(source_dir))
