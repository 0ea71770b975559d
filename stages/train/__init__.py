"""Stage two: temporal heads trained and evaluated straight from the shards.

trainer.py   train (one split or all), load_data: the set(s), index and splits, read once
sources.py   batch sources: a part held whole on the device, or streamed shard by shard
models.py    the heads (mean, LSTM, GRU, attention, fusion, TCN, transformer), standardisation
fusion.py    several modalities: early, late and gated fusion, missing streams, modality dropout
spec.py      the model spec a run records in config.json, and the model rebuilt from it
loop.py      optimiser, schedule, one step, one epoch, early stopping
evaluate.py  predictions, metrics, reports; re-evaluating a run
runs.py      a run directory's files; loading a trained model back
config.py    TrainConfig: stage two's settings, one field per option
compare.py   every head on the same split, one table
profile.py   where one training step goes (the bench's and the GPU check's profile)
"""

from pipeline.lazy import lazy_exports

# The stage's public names -> the module that holds each. Imported on first use, so that
# reading TrainConfig (stages.train.config, the command line's options) does not load torch.
PUBLIC = {
    "compare": "compare",
    "evaluate_run": "evaluate",
    "headline": "evaluate",
    "profile_steps": "profile",
    "load_run": "runs",
    "run_dirs": "runs",
    "TrainResult": "trainer",
    "load_data": "trainer",
    "train": "trainer",
}
__all__ = sorted(PUBLIC)

__getattr__ = lazy_exports(__name__, PUBLIC)
