"""Temporal action localization from dense (FRAMES=all) feature sets: `make localize`.

annotations.py  ActivityNet's JSON matched to a set's videos by file stem; THUMOS14's files converted
scoring.py      mAP at temporal IoU thresholds, as ActivityNet's official code computes it
data.py         a dense set's videos in memory, and the step grid between seconds and rows
heads.py        the heads: an anchor-free feature pyramid in ActionFormer's manner, the per-step tagger
run.py          train, score, write the run directory; re-score a run; one video's segments
plots.py        a scored video's timeline, ground truth against predictions
config.py       LocalizeConfig: one field per option

It is stage two's side: it imports the core and stage two (the training loop's pieces, the fusion
input, the run directory's conventions), never stage one.
"""

from pipeline.lazy import lazy_exports

PUBLIC = {
    "localize": "run",
    "evaluate_run": "run",
    "is_localization_run": "run",
    "load_run": "run",
    "segments_of": "run",
    "thumos14_database": "annotations",
    "read_dense": "data",
    "LocalizeConfig": "config",
}
__all__ = sorted(PUBLIC)

__getattr__ = lazy_exports(__name__, PUBLIC)
