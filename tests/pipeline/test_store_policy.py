"""The store's own policies, without the command line: `store verify`'s repair and exit
decision (check_set, verify_advice) and which set `store info` describes (the_set)."""

import pytest
from helpers import random_set

from pipeline import store
from pipeline.errors import ConfigError


def test_a_sound_set_checks_ok_and_needs_no_advice(tmp_path):
    d = random_set(tmp_path / "ds" / "set-a")
    check = store.check_set(d)
    assert (check.shards, check.problems, check.bad) == (4, {}, False)
    assert check.lines() == ["ds/set-a: OK (4 shards checked)"]
    assert store.verify_advice([check], repair=False) is None


def test_a_bad_shard_is_bad_until_repaired_and_repair_drops_only_it(tmp_path):
    d = random_set(tmp_path / "ds" / "set-a")
    (d / "shard-00002.h5").write_bytes(b"garbage")
    check = store.check_set(d)
    assert check.bad and list(check.problems) == ["shard-00002.h5"] and not check.repaired
    assert "1 of 1 feature set(s) have problems: `store verify --repair`" in store.verify_advice([check], False)
    assert store.read_manifest(d).complete  # verify alone changes nothing

    repaired = store.check_set(d, repair=True)
    assert not repaired.bad and repaired.repaired == ["shard-00002.h5"]
    assert repaired.lines()[-1].startswith("  repaired: dropped 1 shard(s)")
    assert store.verify_advice([repaired], repair=True) is None
    m = store.read_manifest(d)
    assert not m.complete and "shard-00002.h5" not in [s.file for s in m.shards] and len(m.shards) == 3
    assert not (d / "shard-00002.h5").exists() and not store.check_set(d).bad


def test_an_unreadable_manifest_is_reported_never_repaired(tmp_path):
    good = random_set(tmp_path / "ds" / "set-a")
    bad = random_set(tmp_path / "ds" / "set-b")
    (bad / store.MANIFEST).write_text("{not json")
    checks = [store.check_set(good, repair=True), store.check_set(bad, repair=True)]
    assert [c.bad for c in checks] == [False, True] and checks[1].shards == 0
    assert checks[1].lines()[0] == "ds/set-b: CORRUPT (0 shards checked)" and "not valid JSON" in checks[1].lines()[1]
    assert (bad / store.MANIFEST).read_text() == "{not json"
    advice = store.verify_advice(checks, repair=True)
    assert advice.startswith("1 of 2 feature set(s) have problems: an unreadable manifest cannot be repaired")


def test_the_set_is_the_named_one_or_the_only_one(tmp_path):
    root = tmp_path / "features"
    with pytest.raises(store.StoreError, match="no feature sets under .*`make features` makes one"):
        store.the_set(root)
    a = random_set(root / "ds" / "set-a")
    assert store.the_set(root) == a == store.the_set(root, "set-") == store.the_set(root, "ds/set-a")
    b = random_set(root / "ds" / "set-b")
    with pytest.raises(ConfigError, match="2 feature sets under .*ID= for `make store-info`(.|\n)*set-a(.|\n)*set-b"):
        store.the_set(root)
    assert store.the_set(root, "set-b") == b and store.the_set(root, str(a)) == a


def test_the_table_aligns_a_header_a_rule_and_a_row_per_set(tmp_path):
    root = tmp_path / "features"
    random_set(root / "ds" / "set-a")
    random_set(root / "ds" / "set-b", n=30)
    lines = store.table(store.list_sets(root)).splitlines()
    assert lines[0].split() == list(store.catalog.COLUMNS) and set(lines[1]) == {"-", " "} and len(lines) == 4
    starts = [lines[0].index(c) for c in ("id", "videos", "state")]
    assert all(row[s - 2 : s] == "  " for row in lines[1:] for s in starts)
    assert "30/30" in lines[3] and "60/60" in lines[2]
