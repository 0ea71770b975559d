"""Dataset adapters on trees laid out exactly like the real datasets (files need not decode here)."""

from pathlib import Path

import pytest

from stages.extract.config import ExtractConfig
from stages.extract.datasets import load_csv, load_dataset, load_folder, load_hmdb51, load_ucf101, safe_relative
from stages.extract.errors import DatasetError

CRLF = "\r\n"


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")


def write_crlf(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CRLF.join(lines).encode() + CRLF.encode())


@pytest.fixture
def ucf(tmp_path):
    """3 classes x 3 groups x 2 clips; split k tests group k. One class folder differs in case
    from classInd (as HandstandPushups does in the real set), and trainlist01 names a missing file."""
    classes = ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]
    folder = {"HandstandPushups": "HandStandPushups"}
    for c in classes:
        for g in (1, 2, 3):
            for k in (1, 2):
                touch(tmp_path / "UCF-101" / folder.get(c, c) / f"v_{folder.get(c, c)}_g{g:02d}_c{k:02d}.avi")
    lists = tmp_path / "ucfTrainTestlist"
    write_crlf(lists / "classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(classes)])
    for s in (1, 2, 3):
        train = [
            f"{folder.get(c, c)}/v_{folder.get(c, c)}_g{g:02d}_c{k:02d}.avi {i + 1}"
            for i, c in enumerate(classes)
            for g in (1, 2, 3)
            if g != s
            for k in (1, 2)
        ]
        test = [f"{folder.get(c, c)}/v_{folder.get(c, c)}_g{s:02d}_c{k:02d}.avi" for c in classes for k in (1, 2)]
        if s == 1:
            train += ["Basketball/v_Basketball_g09_c01.avi 2", "../../../etc/passwd 1"]
        write_crlf(lists / f"trainlist0{s}.txt", train)
        write_crlf(lists / f"testlist0{s}.txt", test)
    return tmp_path


def test_ucf101_lists_every_video_once_with_classind_labels(ucf):
    ds = load_ucf101(ucf)
    assert ds.classes == ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]
    assert len(ds.records) == 18 and len({r.video_id for r in ds.records}) == 18
    assert [r.video_id for r in ds.records] == sorted(r.video_id for r in ds.records)
    labels = {r.video_id.split("/")[0]: r.label for r in ds.records}
    assert labels == {"ApplyEyeMakeup": 0, "Basketball": 1, "HandStandPushups": 2}  # case-insensitive match
    assert ds.records[0].group == "ApplyEyeMakeup/g01"


def test_ucf101_three_splits_from_crlf_files(ucf):
    ds = load_ucf101(ucf)
    assert sorted(ds.splits) == ["1", "2", "3"]
    for s in ("1", "2", "3"):
        train, test = set(ds.splits[s]["train"]), set(ds.splits[s]["test"])
        assert len(test) == 6 and len(train) == 12 and not train & test
        assert all(f"_g0{s}_" in v for v in test)
        assert not any(v.endswith("\r") for v in train | test)


def test_ucf101_missing_and_escaping_entries_are_problems_never_records(ucf):
    ds = load_ucf101(ucf)
    reasons = {p["video_id"]: p["reason"] for p in ds.problems}
    assert reasons["Basketball/v_Basketball_g09_c01.avi"].startswith("listed in trainlist01.txt but missing")
    assert "escapes the dataset root" in reasons["../../../etc/passwd"]
    assert all("passwd" not in r.video_id for r in ds.records)


def test_missing_ucf101_says_where_what_and_where_from(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_ucf101(tmp_path / "nowhere")
    msg = str(e.value)
    assert (
        str(tmp_path / "nowhere") in msg
        and "v_<Class>_gXX_cYY.avi" in msg
        and "classInd.txt" in msg
        and "crcv.ucf.edu" in msg
    )


def test_hmdb51_marks_one_train_two_test_zero_unused(tmp_path):
    for cls in ("brush_hair", "cartwheel"):
        names = [f"Film{i}_{cls}_u_nm_np1_fr_goo_{i}.avi" for i in range(4)]
        for n in names:
            touch(tmp_path / cls / n)
        for s in (1, 2, 3):
            marks = ["1", "2", "0", "1"]
            # real HMDB51 split files end each line with a space
            write_crlf(
                tmp_path / "testTrainMulti_7030_splits" / f"{cls}_test_split{s}.txt",
                [f"{n} {m} " for n, m in zip(names, marks)],
            )
    ds = load_hmdb51(tmp_path)
    assert ds.classes == ["brush_hair", "cartwheel"] and len(ds.records) == 8
    assert sorted(ds.splits) == ["1", "2", "3"]
    assert len(ds.splits["1"]["train"]) == 4 and len(ds.splits["1"]["test"]) == 2
    assert "brush_hair/Film2_brush_hair_u_nm_np1_fr_goo_2.avi" not in ds.splits["1"]["train"] + ds.splits["1"]["test"]
    assert ds.records[0].group == "brush_hair/Film0"


def test_missing_hmdb51_explains_layout(tmp_path):
    with pytest.raises(DatasetError, match="_test_split1.txt"):
        load_hmdb51(tmp_path)


def test_folder_adapter_sorted_classes_and_video_extensions_only(tmp_path):
    for rel in ("walk/a.avi", "walk/b.MP4", "run/c.mkv", "run/notes.txt", ".hidden/x.avi"):
        touch(tmp_path / rel)
    ds = load_folder(tmp_path, "folder-x")
    assert ds.classes == ["run", "walk"]
    assert [(r.video_id, r.label) for r in ds.records] == [("run/c.mkv", 0), ("walk/a.avi", 1), ("walk/b.MP4", 1)]
    assert ds.splits == {"1": {"train": ["run/c.mkv", "walk/a.avi", "walk/b.MP4"], "test": []}}


def test_csv_adapter_labels_splits_and_path_safety(tmp_path):
    for rel in ("v/a.avi", "v/b.avi", "v/c.avi"):
        touch(tmp_path / rel)
    (tmp_path / "list.csv").write_text(
        "path,label,split\nv/a.avi,jump,train\nv/b.avi,sit,test\nv/c.avi,jump,train\n../up.avi,sit,train\nv/gone.avi,sit,train\n"
    )
    ds = load_csv(tmp_path / "list.csv", "csv-list")
    assert ds.classes == ["jump", "sit"]
    assert [(r.video_id, r.label) for r in ds.records] == [("v/a.avi", 0), ("v/b.avi", 1), ("v/c.avi", 0)]
    assert ds.splits == {"1": {"train": ["v/a.avi", "v/c.avi"], "test": ["v/b.avi"]}}
    reasons = [p["reason"] for p in ds.problems]
    assert any("escapes the dataset root" in r for r in reasons) and any("listed but missing" in r for r in reasons)


def test_a_path_only_csv_is_an_unlabelled_set_with_relative_and_absolute_paths(tmp_path):
    """Untrimmed videos have no single label: no label column, classes [] and every label -1.
    An absolute path is its own video id (a relative id never starts with '/')."""
    for rel in ("list/a.avi", "list/sub/b.avi", "elsewhere/c.avi"):
        touch(tmp_path / rel)
    far = (tmp_path / "elsewhere" / "c.avi").as_posix()
    (tmp_path / "list" / "l.csv").write_text(
        f"path,split\na.avi,train\nsub/b.avi,test\n{far},train\n/gone/d.avi,train\n"
    )
    ds = load_csv(tmp_path / "list" / "l.csv", "csv-l")
    assert ds.classes == []
    assert [(r.video_id, r.label, r.group) for r in ds.records] == [
        (far, -1, far),
        ("a.avi", -1, "a.avi"),
        ("sub/b.avi", -1, "sub/b.avi"),
    ]
    assert [r.path for r in ds.records] == [Path(far), tmp_path / "list/a.avi", tmp_path / "list/sub/b.avi"]
    assert ds.splits == {"1": {"train": ["a.avi", far], "test": ["sub/b.avi"]}}
    assert ds.problems == [{"video_id": "/gone/d.avi", "reason": "l.csv:5: listed but missing: no file at /gone/d.avi"}]
    (tmp_path / "list" / "l.csv").write_text(f"path,label,split\na.avi,x,train\nsub/b.avi,x,test\n{far},x,train\n")
    assert load_csv(tmp_path / "list" / "l.csv", "csv-l").listing_sha256 != ds.listing_sha256  # another set


def test_a_csv_edited_in_a_label_group_or_split_is_another_set(tmp_path):
    """A set stores each video's label and group and the split: a CSV that says other ones is
    another listing (a new set, its rows copied), whatever the order of its rows."""
    for rel in ("v/a.avi", "v/b.avi", "v/c.avi"):
        touch(tmp_path / rel)
    listing = lambda text: (tmp_path / "l.csv").write_text(text) and load_csv(tmp_path / "l.csv", "x")
    base = "path,label,split,group\nv/b.avi,x,train,g1\nv/a.avi,y,train,g2\nv/c.avi,y,test,g3\n"
    ds = listing(base)
    assert [(r.video_id, r.label, r.group) for r in ds.records] == [
        ("v/a.avi", 1, "g2"),
        ("v/b.avi", 0, "g1"),
        ("v/c.avi", 1, "g3"),
    ]
    reordered = "path,label,split,group\nv/c.avi,y,test,g3\nv/a.avi,y,train,g2\nv/b.avi,x,train,g1\n"
    assert listing(reordered).listing_sha256 == ds.listing_sha256
    edits = {
        "a label": base.replace("v/a.avi,y", "v/a.avi,x"),
        "the class names": base.replace(",x,", ",z,"),
        "a group": base.replace("g3", "g4"),
        "a side of the split": base.replace("v/c.avi,y,test", "v/c.avi,y,train"),
    }
    hashes = {what: listing(text).listing_sha256 for what, text in edits.items()}
    assert all(h != ds.listing_sha256 for h in hashes.values()), hashes
    assert len(set(hashes.values())) == len(edits)


def test_csv_integer_labels_keep_numeric_order(tmp_path):
    for rel in ("a.avi", "b.avi", "c.avi"):
        touch(tmp_path / rel)
    (tmp_path / "l.csv").write_text("path,label\na.avi,10\nb.avi,2\nc.avi,1\n")
    ds = load_csv(tmp_path / "l.csv", "x")
    assert ds.classes == ["1", "2", "10"] and list(ds.splits) == ["1"]


@pytest.mark.parametrize(
    "rel,ok",
    [
        ("a/b.avi", "a/b.avi"),
        ("a/./b.avi", "a/b.avi"),
        ("a/../b.avi", "b.avi"),
        ("../b.avi", None),
        ("/abs.avi", None),
        ("a/../../b.avi", None),
        ("C:\\x.avi", None),
        ("", None),
    ],
)
def test_safe_relative(rel, ok):
    assert safe_relative(rel) == ok


def test_dataset_root_defaults_to_data_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSTORE_HOME", str(tmp_path))
    with pytest.raises(DatasetError, match=str(tmp_path / "data" / "ucf101")):
        load_dataset(ExtractConfig(dataset="ucf101"))


def test_folder_and_csv_groups_ucf_style_names_and_a_group_column(tmp_path):
    for rel in ("walk/v_walk_g01_c01.avi", "walk/v_walk_g01_c02.avi", "walk/other.avi"):
        touch(tmp_path / "tree" / rel)
    groups = {r.video_id: r.group for r in load_folder(tmp_path / "tree", "folder-tree").records}
    assert groups == {
        "walk/v_walk_g01_c01.avi": "walk/g01",
        "walk/v_walk_g01_c02.avi": "walk/g01",
        "walk/other.avi": "walk/other.avi",
    }
    for rel in ("a.avi", "b.avi", "c.avi"):
        touch(tmp_path / rel)
    (tmp_path / "l.csv").write_text("path,label,group\na.avi,x,film1\nb.avi,x,film1\nc.avi,y,\n")
    assert [r.group for r in load_csv(tmp_path / "l.csv", "csv-l").records] == ["film1", "film1", "c.avi"]


def test_a_class_folder_without_videos_is_named_in_a_warning(tmp_path, capsys):
    touch(tmp_path / "walk" / "a.avi")
    touch(tmp_path / "run" / "notes.txt")
    ds = load_folder(tmp_path, "folder-x")
    assert ds.classes == ["run", "walk"] and len(ds.records) == 1
    err = capsys.readouterr().err
    assert f"warning: class folder {tmp_path / 'run'} holds no video files" in err and "walk" not in err, err


def test_the_sample_is_never_generated_into_a_folder_holding_other_files(tmp_path):
    from click.testing import CliRunner

    from stages.cli import main as cli

    touch(tmp_path / "clips" / "walk" / "a.avi")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # DATSET=folder misspelled: DATASET= keeps its default, sample, with the user's DATA_DIR=
    args = ["features", "--data-dir", str(tmp_path / "clips"), "--features-root", str(tmp_path / "store")]
    result = CliRunner().invoke(cli, [*args, "--device", "cpu"])
    assert result.exit_code == 2 and "DATASET=sample" in result.output and "DATASET=folder" in result.output, (
        result.output
    )
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    from stages.samples import holds_only_sample  # the guard lets a new or an empty folder through

    (tmp_path / "empty").mkdir()
    assert holds_only_sample(tmp_path / "new") and holds_only_sample(tmp_path / "empty")
