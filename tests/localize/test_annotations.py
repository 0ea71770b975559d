"""ActivityNet-style annotations matched to a set's videos, and THUMOS14's files converted to them:
nothing dropped without a counted note, bad files stopped with the file and entry named."""

from __future__ import annotations

import json

import pytest

from stages.localize.annotations import AnnotationError, match, thumos14_database

IDS = ["long/v_abc.mp4", "long/clip2.avi", "other/clip3.mp4"]
DURATIONS = [60.0, 90.0, 30.0]


def write(tmp_path, database):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"database": database}))
    return path


def entry(subset, *segments):
    return {
        "subset": subset,
        "duration": 60,
        "annotations": [{"segment": [s, e], "label": lab} for s, e, lab in segments],
    }


def test_entries_match_by_file_stem_and_subset_decides_the_part(tmp_path):
    path = write(
        tmp_path,
        {
            "abc": entry("training", (1, 5, "Jump")),  # ActivityNet's ids drop the files' v_
            "clip2": entry("validation", (10, 20, "Run"), (30, 40, "Jump")),
        },
    )
    m = match(path, IDS, DURATIONS)
    assert m.classes == ["Jump", "Run"]
    assert [v.video_id for v in m.part("train")] == ["long/v_abc.mp4"]
    assert [v.video_id for v in m.part("eval")] == ["long/clip2.avi"]
    assert m.videos["long/clip2.avi"].segments[1].label == "Jump"
    assert m.notes == ["1 video(s) of the set have no entry in " + str(path) + ": not used"]


def test_what_is_left_out_or_cut_is_counted(tmp_path):
    path = write(
        tmp_path,
        {
            "abc": entry("training", (1, 5, "Jump"), (55, 70, "Jump"), (61, 65, "Run")),
            "clip2": entry("validation", (10, 20, "Run")),
            "clip3": entry("testing"),
            "missing_video": entry("training", (1, 2, "Run")),
        },
    )
    m = match(path, IDS, DURATIONS)
    notes = "\n".join(m.notes)
    assert "1 annotated video(s) of " in notes and "missing_video" in notes
    assert "1 segment(s) lie past their video's end: left out" in notes
    assert "1 segment(s) run past their video's end (or start before 0 s): cut to the video" in notes
    assert "1 entry in subset 'testing'" in notes
    assert m.videos["long/v_abc.mp4"].segments[1].end == 60.0


def test_thumos_words_through_the_subset_options(tmp_path):
    path = write(tmp_path, {"abc": entry("Validation", (1, 5, "Jump")), "clip2": entry("Test", (1, 5, "Jump"))})
    m = match(path, IDS, DURATIONS, train_subset="validation", eval_subset="test")
    assert [v.part for v in m.videos.values()] == ["train", "eval"]


@pytest.mark.parametrize(
    "database, words",
    [
        ({"abc": entry("trainnig", (1, 5, "Jump"))}, "'trainnig'"),
        ({"abc": entry("training", (5, 1, "Jump"))}, "ends before it starts"),
        ({"abc": {"subset": "training", "annotations": [{"segment": [1], "label": "Jump"}]}}, "annotation 0"),
        ({"abc": entry("training", (1, 5, "Jump"))}, "no video of the set is in subset 'validation'"),
    ],
)
def test_bad_files_stop_with_the_entry_named(tmp_path, database, words):
    with pytest.raises(AnnotationError, match="ANNOTATIONS=") as e:
        match(write(tmp_path, database), IDS, DURATIONS)
    assert words in str(e.value)


def test_two_videos_with_one_stem_are_refused(tmp_path):
    path = write(tmp_path, {"clip3": entry("training", (1, 5, "Jump"))})
    with pytest.raises(AnnotationError, match="two videos with the file stem 'clip3'"):
        match(path, [*IDS, "more/clip3.avi"], [*DURATIONS, 10.0])


def test_thumos14_files_convert_with_ambiguous_counted(tmp_path):
    (tmp_path / "BaseballPitch_val.txt").write_text(
        "video_validation_0000051 67.5 75.9\nvideo_validation_0000051 8.0 9.5\n"
    )
    (tmp_path / "CliffDiving_test.txt").write_text("video_test_0000004 0.2 1.1 \n\n")
    (tmp_path / "Ambiguous_val.txt").write_text("video_validation_0000051 20.0 21.0\n")
    (tmp_path / "README.txt").write_text("not an annotation file\n")
    database, notes = thumos14_database(tmp_path)
    assert database == {
        "database": {
            "video_test_0000004": {
                "subset": "validation",
                "annotations": [{"segment": [0.2, 1.1], "label": "CliffDiving"}],
            },
            "video_validation_0000051": {
                "subset": "training",
                "annotations": [
                    {"segment": [8.0, 9.5], "label": "BaseballPitch"},
                    {"segment": [67.5, 75.9], "label": "BaseballPitch"},
                ],
            },
        }
    }
    assert notes == ["1 Ambiguous segment(s) skipped: THUMOS14's unclear stretches, not a class"]
    (tmp_path / "CliffDiving_test.txt").write_text("video_test_0000004 zero 1.1\n")
    with pytest.raises(AnnotationError, match="CliffDiving_test.txt, line 1"):
        thumos14_database(tmp_path)
