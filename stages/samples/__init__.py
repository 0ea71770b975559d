"""Generated videos the product ships: the embedded sample dataset (`make features` with no
DATASET, `make demo`) and the benchmark's clips (`make bench`), all made with ffmpeg.

    clips.py        scenes, one ffmpeg call per clip, atomic writes      make_clip, make_clips
    ucf101.py       the UCF101 layout, and the sample dataset in it      make_ucf101_tree, make_sample_dataset
    sound_clips.py  clips with a sound track (tones over scenes)         make_sound_clip
    bench_clips.py  UCF101-like clips for the benchmark, with or without sound

It imports only the shared core (pipeline): stage one uses the sample, the bench its clips.
The generators that only tests need (bad inputs, other layouts, the audio-visual set) are
under tests/synth/.
"""

from .bench_clips import make_bench_clips, make_dense_bench_video, make_sound_bench_clips
from .ucf101 import SAMPLE_VERSION, holds_only_sample, make_sample_dataset, sample_dataset_ready

__all__ = [
    "SAMPLE_VERSION",
    "holds_only_sample",
    "make_bench_clips",
    "make_dense_bench_video",
    "make_sample_dataset",
    "make_sound_bench_clips",
    "sample_dataset_ready",
]
