"""The localization heads on synthetic rows (tests/localize_rows.py): the ActionFormer-style head
finds Rise and Fall, which look alike in every single row, the per-step tagger cannot; the run
directory's files; soft-NMS and the GIoU loss by hand."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from anet_reference import reference_map
from localize_rows import as_stored, synthetic_set
from ragged_sets import identity, write_set

from stages import predict
from stages.localize.config import LocalizeConfig
from stages.localize.heads import giou_1d, soft_nms
from stages.localize.run import fit_and_score
from stages.localize.scoring import results_rows


def run(tmp_path, model, **kw):
    dense, matched = synthetic_set()
    dense.records = [{"config": {"dataset": "csv"}, "identity": {"weights": "random:seed0"}}]  # for predict
    cfg = LocalizeConfig(
        model=model, epochs=kw.pop("epochs", 30), hidden=64, levels=3, progress=False, device="cpu", **kw
    )
    out = tmp_path / model
    out.mkdir()
    return fit_and_score(cfg, dense, matched, out, torch.device("cpu")), matched


@pytest.fixture(scope="module")
def actionformer(tmp_path_factory):
    return run(tmp_path_factory.mktemp("runs"), "actionformer")


def test_the_pyramid_head_separates_orders_the_tagger_cannot(actionformer, tmp_path):
    result, _ = actionformer
    assert result.metrics["mAP@0.5"] >= 0.9
    tagger, _ = run(tmp_path, "tagger")
    assert tagger.metrics["per_class"]["Flash"]["AP@0.5"] >= 0.9  # a look of its own: one row tells it
    assert tagger.metrics["mAP@0.5"] < 0.9


def test_the_run_directory_and_its_results_file(actionformer):
    result, matched = actionformer
    d = result.run_dir
    config = json.loads((d / "config.json").read_text())
    assert config["kind"] == "localize" and config["classes"] == ["Fall", "Flash", "Rise"]
    metrics = json.loads((d / "metrics.json").read_text())
    for key in ("mAP@0.3", "mAP@0.4", "mAP@0.5", "mAP@0.6", "mAP@0.7", "mAP", "mAP@0.5:0.95"):
        assert 0 <= metrics[key] <= 1
    assert metrics["mAP"] == pytest.approx(np.mean([metrics[f"mAP@{t}"] for t in (0.3, 0.4, 0.5, 0.6, 0.7)]))
    results = json.loads((d / "predictions.json").read_text())["results"]
    held = matched.part("eval")
    assert sorted(results) == sorted(v.entry for v in held)
    for rows in results.values():
        assert all(set(r) == {"label", "score", "segment"} and r["segment"][0] < r["segment"][1] for r in rows)
    truth = [(v.entry, s.start, s.end, s.label) for v in held for s in v.segments]
    for t in (0.3, 0.5, 0.7):  # the results file, scored by the independent implementation
        assert reference_map(truth, results_rows(results), t) == pytest.approx(metrics[f"mAP@{t}"], abs=1e-6)
    assert sorted(p.name for p in (d / "timelines").iterdir()) == sorted(f"{v.entry}.png" for v in held)
    assert (d / "checkpoint.pt").is_file() and not (d / "FAILED").exists()


def test_soft_nms_decays_overlaps_by_their_tiou():
    rows = np.array([[0, 10, 0, 0.9], [0, 5, 0, 0.8], [20, 30, 0, 0.5]], np.float64)
    kept = soft_nms(rows, 10)
    # [0, 10] kept first; [0, 5] overlaps it by tIoU 0.5: 0.8 * exp(-0.25 / 0.5); [20, 30] untouched
    assert [k[3] for k in kept] == pytest.approx([0.9, 0.5, 0.8 * np.exp(-0.5)])
    assert len(soft_nms(rows, 1)) == 1


def test_giou_of_distances():
    pred = torch.tensor([[2.0, 3.0], [1.0, 1.0]])
    target = torch.tensor([[2.0, 3.0], [2.0, 0.0]])
    # the same segment: 1; [-1, 1] against [-2, 0]: intersection 1, union 3, hull 3 -> 1/3
    assert giou_1d(pred, target).tolist() == pytest.approx([1.0, 1 / 3])


def test_predict_prints_a_localization_runs_segments_with_times(actionformer, tmp_path, monkeypatch, capsys):
    """`make predict` with a localization run: the new file's dense rows (stage one stood in for: the rows
    written as a one-video dense set; the slow acceptance test runs it for real) read back as the run reads
    a set, and the segments printed by start time with their times."""
    result, matched = actionformer
    held = matched.part("eval")[0]
    dense, _ = synthetic_set()
    v = dense.videos[held.video_id]
    stored = as_stored("long.avi", v, "g_g00")
    ident = identity("predict", {"mode": "dense", "fps": 1.0}, 24, ["long.avi"])
    set_dir = write_set(tmp_path / "store", "predict", [stored], ident, "toy-random-all-1fps", None, 4, False)
    listings = []

    class Settings(SimpleNamespace):
        def replace(self, **kw):
            listings.append(kw["data_dir"].read_text())
            return self

    monkeypatch.setattr(predict.extract, "config_from_manifest", lambda config, ident, **kw: (Settings(), None))
    monkeypatch.setattr(predict.extract, "extract_features", lambda cfg, quiet: SimpleNamespace(set_dir=set_dir))
    video = tmp_path / "long.avi"
    video.write_bytes(b"stand-in")
    predict.predict(video, result.run_dir, device="cpu")
    assert listings == [f"path\n{video.resolve()}\n"]  # stage one was asked for this one file
    out = capsys.readouterr().out
    assert f"{video} ({v.duration:.1f} s, {v.length} rows; run {result.run_dir}):" in out
    lines = re.findall(r"^  (\d+):(\d\d\.\d) - (\d+):(\d\d\.\d)  (\w+) +([\d.]+)$", out, re.M)
    found = [(int(a) * 60 + float(b), int(c) * 60 + float(d), label) for a, b, c, d, label, _ in lines]
    assert found and found == sorted(found)  # by start time
    for seg in held.segments:  # every event found by a printed segment of its class, tIoU >= 0.5
        overlaps = [
            max(0.0, min(seg.end, e) - max(seg.start, s)) / (max(seg.end, e) - min(seg.start, s))
            for s, e, label in found
            if label == seg.label
        ]
        assert overlaps and max(overlaps) >= 0.5, (seg, out)
