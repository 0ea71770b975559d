"""The typed manifest: every key checked when read, and the JSON on disk byte for byte what the
dict-based writer before it (commit 122af19) wrote for the same steps."""

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from pipeline import store
from pipeline.store import manifest as manifest_module

# sha256 (first 16 hex digits) of manifest.json + failures.jsonl after each step of
# manifest_history, as 122af19's writer left them (its pipeline/ run through the same function).
BEFORE_THE_TYPED_MANIFEST = [
    "c76c811d3e41717b",
    "6f6a35d3b040b845",
    "0af39e5a0907adc2",
    "02f0202efcc75f0f",
    "d873c87e6cc92c8c",
    "b742568a8cee40bb",
    "0c2d374a4e275c30",
    "7176672052f737fd",
    "f8389b9401ad728b",
    "1c200d458cad279c",
    "c3857577e578ffb6",
]


def manifest_history(set_dir: Path, monkeypatch) -> list[bytes]:
    """manifest.json and failures.jsonl after each step of a set's life, with a fixed clock: created,
    two shards committed (one with failures, one with copied rows), completed, a shard replaced by a
    revision, one dropped and recomputed; then a manifest from before `modality` and
    `default_settings` existed, with a key no field names, rewritten three times."""
    ticks = itertools.count()
    monkeypatch.setattr(manifest_module, "now_iso", lambda: f"2030-01-01T00:00:{next(ticks):02d}+00:00")
    set_dir.mkdir(parents=True)
    out: list[bytes] = []
    snap = lambda: out.append(
        (set_dir / store.MANIFEST).read_bytes() + b"\n--\n" + (set_dir / store.FAILURES).read_bytes()
    )
    identity = {
        "schema_version": 1,
        "backbone": "resnet50",
        "weights": "random:seed0",
        "sampling": {"mode": "uniform", "frames": 4},
    }
    config = {"dataset": "folder", "data_dir": "/data/clips é", "frames": 4, "devices": []}
    splits = {"1": {"train": ["a/v1.avi", "b/v2.avi"], "test": ["a/v3.avi"]}}
    unopened = [{"video_id": "b/gone.avi", "reason": "cannot open"}]
    m = store.new_manifest(
        "set-x", "folder-clips", identity, config, 4, 8, ["a", "b"], splits, 4, 2, 2,
        video_root="/data/clips é", unlisted_failures=unopened, modality="rgb", default_settings=True,
    )  # fmt: skip
    entry = lambda f, n, h: {"file": f, "videos": n, "bytes": 100 + n, "sha256": h * 64}
    store.create(set_dir, m), snap()
    store.commit_shard(set_dir, 1, entry("shard-00001.h5", 1, "b"), [{"video_id": "b/v2.avi", "reason": "timeout"}])
    snap()
    store.commit_shard(set_dir, 0, entry("shard-00000.h5", 2, "a") | {"copied": {"set-y": 1}}, []), snap()
    store.mark_complete(set_dir), snap()
    store.replace_shard(set_dir, 1, entry("shard-00001.r1.h5", 2, "c"), []), snap()
    store.drop_shards(set_dir, ["shard-00000.h5"]), snap()
    store.commit_shard(set_dir, 0, entry("shard-00000.h5", 2, "d"), []), snap()
    store.mark_complete(set_dir), snap()
    old = json.loads((set_dir / store.MANIFEST).read_text())
    for key in ("modality", "default_settings"):
        old.pop(key)
    (set_dir / store.MANIFEST).write_text(json.dumps({"tool": "another"} | old, indent=1, ensure_ascii=False))
    store.drop_shards(set_dir, ["shard-00001.r1.h5"]), snap()
    store.commit_shard(set_dir, 1, entry("shard-00001.h5", 2, "e"), []), snap()
    store.mark_complete(set_dir), snap()
    return out


def test_the_manifest_on_disk_is_byte_for_byte_the_dict_writers(tmp_path, monkeypatch):
    history = manifest_history(tmp_path / "set", monkeypatch)
    got = [hashlib.sha256(h).hexdigest()[:16] for h in history]
    for step, (digest, want) in enumerate(zip(got, BEFORE_THE_TYPED_MANIFEST, strict=True)):
        assert digest == want, f"step {step} wrote other bytes:\n{history[step].decode()}"


def test_a_manifest_from_before_modality_reads_as_rgb_and_keeps_its_keys(tmp_path, monkeypatch):
    manifest_history(tmp_path / "set", monkeypatch)
    m = store.read_manifest(tmp_path / "set")
    assert m.modality == "rgb" and m.default_settings is False and m.complete
    assert list(m.to_json())[:2] == ["tool", "schema_version"] and "modality" not in m.to_json()
    assert [s.file for s in m.shards] == ["shard-00000.h5", "shard-00001.h5"] and m.num_failed == 1


@pytest.fixture
def written(tmp_path, monkeypatch) -> tuple[Path, dict]:
    """A set directory whose manifest went through every step, and its JSON."""
    manifest_history(tmp_path / "set", monkeypatch)
    return tmp_path / "set", json.loads((tmp_path / "set" / store.MANIFEST).read_text())


def rewrite(set_dir: Path, data: dict) -> None:
    (set_dir / store.MANIFEST).write_text(json.dumps(data))


def test_a_missing_key_is_an_error_naming_the_file_and_the_key(written):
    set_dir, data = written
    rewrite(set_dir, {k: v for k, v in data.items() if k != "feature_dim"})
    with pytest.raises(store.StoreError, match=f"^{set_dir / store.MANIFEST}: the key 'feature_dim' is missing$"):
        store.read_manifest(set_dir)
    data["shards"][1].pop("sha256")
    rewrite(set_dir, data)
    with pytest.raises(store.StoreError, match=r"manifest.json: the key 'shards\[1\].sha256' is missing$"):
        store.read_manifest(set_dir)


@pytest.mark.parametrize(
    "change, key, expected",
    [
        (lambda d: d.update(frames="16"), "frames", "a whole number, got a string"),
        (lambda d: d.update(complete=1), "complete", "true or false, got a number"),
        (lambda d: d["shards"][0].update(videos=True), r"shards\[0\].videos", "a whole number, got true/false"),
        (lambda d: d.update(classes=["a", 2]), r"classes\[1\]", "a string, got a number"),
        (lambda d: d["splits"].update({"1": ["a/v1.avi"]}), "splits.1", "an object, got a list"),
        (lambda d: d.update(shards={}), "shards", "a list, got an object"),
        (lambda d: d.update(shards=[7]), r"shards\[0\]", "an object, got a number"),
    ],
)
def test_a_wrongly_typed_key_is_an_error_naming_the_file_and_the_key(written, change, key, expected):
    set_dir, data = written
    change(data)
    rewrite(set_dir, data)
    with pytest.raises(store.StoreError, match=f"manifest.json: the key '{key}' must be {expected}"):
        store.read_manifest(set_dir)
    with pytest.raises(store.StoreError, match="must be"):
        store.load_manifest(set_dir)  # the JSON view is checked the same way


def test_a_hand_edited_manifest_is_checked_before_it_is_written(written):
    set_dir, data = written
    before = (set_dir / store.MANIFEST).read_bytes()
    with pytest.raises(store.StoreError, match="the key 'num_shards' is missing"):
        store.write_manifest(set_dir, {k: v for k, v in data.items() if k != "num_shards"})
    assert (set_dir / store.MANIFEST).read_bytes() == before
