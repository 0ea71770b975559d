"""The catalog commands on a small store: `store list`, `info`, `verify`, `gc`."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import store
from pipeline.store import human_bytes, list_sets
from pipeline.store.catalog import COLUMNS
from stages.cli import main
from stages.extract import extract_features
from stages.extract.config import ExtractConfig


@pytest.fixture(scope="module")
def made(folder_tree, tmp_path_factory) -> tuple[Path, ExtractConfig]:
    """A store root holding one complete feature set of 6 clips in 2 shards, and its config."""
    root = tmp_path_factory.mktemp("store")
    cfg = ExtractConfig(
        dataset="folder",
        data_dir=folder_tree,
        name="clips",
        features_root=root,
        weights="random",
        image_size=64,
        frames=2,
        shard_size=3,
        workers=2,
        device="cpu",
    )
    extract_features(cfg, quiet=True)
    return root, cfg


@pytest.fixture
def root(made, tmp_path) -> Path:
    """A private copy of the store, so a test may damage it."""
    shutil.copytree(made[0], tmp_path / "store")
    return tmp_path / "store"


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def the_set(root: Path) -> Path:
    """The complete set the fixture made (dataset 'clips')."""
    (d,) = (root / "clips").iterdir()
    return d


def make_partial_copy(root: Path) -> Path:
    """Another dataset's set with only shard 0 committed, as a crashed run leaves it."""
    src = the_set(root)
    dst = root / "other" / src.name
    shutil.copytree(src, dst)
    m = json.loads((dst / store.MANIFEST).read_text())
    m.update(dataset="other", complete=False, shards=m["shards"][:1])
    m.pop("completed_at", None)
    store.write_manifest(dst, m)
    (dst / "shard-00001.h5").unlink()
    return dst


def test_list_shows_every_set_with_the_team_columns(root):
    make_partial_copy(root)
    out = cli("store", "list", "--features-root", str(root)).output
    header, rule, *rows = out.splitlines()[:4]
    assert header.split() == list(COLUMNS)
    d = the_set(root)
    clips = next(r for r in rows if r.startswith("clips"))
    assert clips.split()[:8] == [
        "clips",
        d.name,
        "rgb",
        "resnet50/random:seed0",
        "2",
        "6/6",
        "0",
        human_bytes(sum(s["bytes"] for s in store.load_manifest(d)["shards"])).split()[0],
    ]
    assert "complete" in clips
    other = next(r for r in rows if r.startswith("other"))
    assert "3/6" in other and "partial (1/2 shards)" in other
    assert "2 feature set(s) under" in out


def test_list_json_and_an_unreadable_manifest_still_listed(root):
    broken = root / "broken" / "resnet50-x"
    broken.mkdir(parents=True)
    (broken / store.MANIFEST).write_text("{not json")
    lines = [
        json.loads(line) for line in cli("store", "list", "--json", "--features-root", str(root)).output.splitlines()
    ]
    by_dataset = {r["dataset"]: r for r in lines}
    assert (
        by_dataset["clips"]["complete"]
        and by_dataset["clips"]["stored"] == 6
        and by_dataset["clips"]["sampling"] == {"mode": "uniform", "frames": 2}
    )
    assert "not valid JSON" in by_dataset["broken"]["unreadable"]
    assert "unreadable" in cli("store", "list", "--features-root", str(root)).output


def test_list_says_when_a_run_is_writing_a_set(root):
    d = make_partial_copy(root)
    claim = store.Claim(d, 1)
    assert claim.acquire()
    try:
        row = next(r for r in list_sets(root) if r["dataset"] == "other")
        assert row["running"]
        assert "running (1/2 shards)" in cli("store", "list", "--features-root", str(root)).output
    finally:
        claim.release()
    assert not next(r for r in list_sets(root) if r["dataset"] == "other")["running"]


def test_info_prints_identity_config_and_split_sizes(root):
    d = the_set(root)
    out = cli("store", "info", d.name[:20], "--features-root", str(root)).output
    assert f"feature set {d.name}" in out and "state:      complete" in out
    assert 'weights: "random:seed0"' in out and "image_size: 64" in out and "shard_size: 3" in out
    assert "1: train 6/6, test 0/0" in out
    assert cli("store", "info", f"clips/{d.name}", "--features-root", str(root)).output == out
    assert cli("store", "info", str(d)).output == out
    assert cli("store", "info", "--features-root", str(root)).output == out  # no ID: the only set


def test_info_without_an_id_among_several_sets_lists_them_and_asks_for_one(root):
    other = make_partial_copy(root)
    res = CliRunner().invoke(main, ["store", "info", "--features-root", str(root)])
    assert res.exit_code == 2 and "2 feature sets under" in res.output and "ID=" in res.output, res.output
    assert "clips " in res.output and "other " in res.output and other.name in res.output
    assert "more than one feature set matches" not in res.output


def test_info_of_an_unknown_id_names_the_known_ones(root):
    res = CliRunner().invoke(main, ["store", "info", "nope", "--features-root", str(root)])
    assert res.exit_code == 1 and "no feature set matches 'nope'" in res.output and the_set(root).name in res.output


def test_verify_passes_then_catches_a_flipped_byte_and_a_missing_shard(root):
    d = the_set(root)
    res = cli("store", "verify", "--features-root", str(root))
    assert res.exit_code == 0 and "OK (2 shards checked)" in res.output
    shard = d / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    res = cli("store", "verify", d.name, "--features-root", str(root))
    assert res.exit_code == 1 and "CORRUPT" in res.output and "shard-00001.h5: sha256" in res.output
    (d / "shard-00000.h5").unlink()
    res = cli("store", "verify", "--features-root", str(root))
    assert res.exit_code == 1 and "shard-00000.h5: listed in the manifest but missing" in res.output


def test_verify_repair_drops_the_bad_shard_and_a_rerun_recomputes_only_it(root, made):
    d = the_set(root)
    good = (d / "shard-00000.h5").read_bytes()
    (d / "shard-00001.h5").write_bytes(b"garbage")
    res = cli("store", "verify", "--repair", "--features-root", str(root))
    assert res.exit_code == 0 and "dropped 1 shard(s)" in res.output and "have problems" not in res.output
    m = store.load_manifest(d)
    assert not m["complete"] and [s["file"] for s in m["shards"]] == ["shard-00000.h5"] and m["num_stored"] == 3
    assert cli("store", "verify", "--features-root", str(root)).exit_code == 0
    again = extract_features(made[1].replace(features_root=root), quiet=True)
    assert (again.reused, again.computed) == (3, 3) and again.set_dir == d
    assert store.load_manifest(d)["complete"] and store.verify(d) == []
    assert (d / "shard-00000.h5").read_bytes() == good


def test_a_teammate_with_another_shard_size_resumes_the_set_with_its_shard_size(root, made, capfd):
    """SHARD_SIZE is not part of the id, so another value must not re-cut a set already started."""
    d = the_set(root)
    store.drop_shards(d, ["shard-00001.h5"])
    again = extract_features(made[1].replace(features_root=root, shard_size=1))
    assert "was started with --shard-size 3; continuing with that (not 1)" in capfd.readouterr().err
    m = store.load_manifest(d)
    assert (again.reused, again.computed) == (3, 3) and m["complete"] and m["num_shards"] == 2
    assert [s["videos"] for s in m["shards"]] == [3, 3] and store.verify(d) == []


def test_gc_removes_leftovers_of_crashed_runs_and_nothing_committed(root):
    d = the_set(root)
    before = {p.name: p.read_bytes() for p in d.glob("shard-*.h5")} | {
        store.MANIFEST: (d / store.MANIFEST).read_bytes()
    }
    stale = [
        d / "shard-00007.h5.tmp-host-123",
        d / "shard-00001.h5.tmp-dask-host-9-abcd1234",
        d / "manifest.json.tmp-host-5",
    ]
    for p in stale:
        p.write_bytes(b"partial")
    unlisted = d / "shard-00009.h5"
    shutil.copy(d / "shard-00000.h5", unlisted)
    res = cli("store", "gc", "--dry-run", "--features-root", str(root))
    assert "would free" in res.output and all(p.exists() for p in stale + [unlisted])
    res = cli("store", "gc", "--features-root", str(root))
    assert "in 4 file(s)" in res.output
    assert not any(p.exists() for p in stale + [unlisted])
    after = {p.name: p.read_bytes() for p in d.glob("shard-*.h5")} | {store.MANIFEST: (d / store.MANIFEST).read_bytes()}
    assert after == before
    assert store.verify(d) == []
    assert "in 0 file(s)" in cli("store", "gc", "--features-root", str(root)).output


def test_gc_spares_what_a_live_run_is_writing(root):
    d = the_set(root)
    tmp, unlisted, manifest_tmp = (
        d / "shard-00007.h5.tmp-host-123",
        d / "shard-00008.h5",
        d / "failures.jsonl.tmp-host-7",
    )
    for p in (tmp, unlisted, manifest_tmp):
        p.write_bytes(b"being written")
    claims = [store.Claim(d, 7), store.Claim(d, 8)]  # the live run's claims on shards 7 and 8
    assert all(c.acquire() for c in claims)
    try:
        with store.locked(d):  # ... and it is rewriting the manifest right now
            assert store.remove_garbage(d) == []
    finally:
        for c in claims:
            c.release()
    assert tmp.exists() and unlisted.exists() and manifest_tmp.exists()
    assert sorted(p.name for p, _ in store.remove_garbage(d)) == sorted([tmp.name, unlisted.name, manifest_tmp.name])


def test_human_bytes():
    assert [human_bytes(n) for n in (999, 1000, 1_234_567, 5e9, 7.2e12)] == [
        "999 B",
        "1.0 KB",
        "1.2 MB",
        "5.0 GB",
        "7.2 TB",
    ]
