"""Stage two: temporal heads trained and evaluated straight from the shards.

trainer.py   train (one split or all), load_data: the set(s), index and splits, read once
sources.py   batch sources: a part held whole on the device, or streamed shard by shard
models.py    the heads (mean, LSTM, GRU, attention, fusion, TCN, transformer), standardisation
fusion.py    several modalities: early, late and gated fusion, missing streams, modality dropout
spec.py      the model spec a run records in config.json, and the model rebuilt from it
loop.py      optimiser, schedule, one step, one epoch, early stopping
evaluate.py  predictions, metrics, reports; re-evaluating a run
runs.py      a run directory's files; loading a trained model back
compare.py   every head on the same split, one table
profile.py   where one training step goes (the bench's and the GPU check's profile)
"""

from .compare import compare
from .evaluate import evaluate_run, headline
from .profile import profile_steps
from .runs import load_run, run_dirs
from .trainer import TrainResult, load_data, train

__all__ = [
    "TrainResult",
    "compare",
    "evaluate_run",
    "headline",
    "load_data",
    "load_run",
    "profile_steps",
    "run_dirs",
    "train",
]
