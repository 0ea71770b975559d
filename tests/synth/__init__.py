"""Every generated video the tests use: the product's generators (stages.samples) and the
test-only ones here, under one name (`import synth`).

    layouts.py  the temporal-order set, HMDB51, folder-per-class and CSV trees
    corpus.py   the bad-input corpus, unreadable and missing files
    sound.py    the UCF101 tree with sound in some classes, the audio-visual set, the sound corpus
    stamped.py  footage whose every frame draws its own index, with hard cuts (import synth.stamped)
"""

from stages.samples.bench_clips import make_bench_clips
from stages.samples.clips import PARTIAL, SynthError, has_encoder, make_clip, make_clips, pid_alive, require_ffmpeg
from stages.samples.sound_clips import SoundClip, jittered_tones
from stages.samples.ucf101 import (
    COMPLETE,
    SAMPLE_CLASSES,
    make_sample_dataset,
    make_ucf101_tree,
    sample_dataset_ready,
    split_test_groups,
)

from .corpus import (
    MUST_FAIL,
    MUST_SUCCEED,
    make_bad_corpus,
    make_dropped_frames_avi,
    make_missing_listed_tree,
    make_unreadable_tree,
    make_vfr_clip,
)
from .layouts import (
    CSV_CLASSES,
    HMDB51_CLASSES,
    HMDB51_FILMS,
    TEMPORAL_SCENES,
    make_csv_dataset,
    make_folder_tree,
    make_hmdb51_tree,
    make_temporal_order_dataset,
    order_classes,
)
from .sound import (
    AV_CLASSES,
    AV_HIGH_HZ,
    AV_LOW_HZ,
    SOUND_TREE_CLASSES,
    make_av_dataset,
    make_sound_corpus,
    make_ucf101_sound_tree,
)

__all__ = [
    "AV_CLASSES",
    "AV_HIGH_HZ",
    "AV_LOW_HZ",
    "COMPLETE",
    "CSV_CLASSES",
    "HMDB51_CLASSES",
    "HMDB51_FILMS",
    "MUST_FAIL",
    "MUST_SUCCEED",
    "PARTIAL",
    "SAMPLE_CLASSES",
    "SOUND_TREE_CLASSES",
    "TEMPORAL_SCENES",
    "SoundClip",
    "SynthError",
    "has_encoder",
    "jittered_tones",
    "make_av_dataset",
    "make_bad_corpus",
    "make_bench_clips",
    "make_clip",
    "make_clips",
    "make_csv_dataset",
    "make_dropped_frames_avi",
    "make_folder_tree",
    "make_hmdb51_tree",
    "make_missing_listed_tree",
    "make_sample_dataset",
    "make_sound_corpus",
    "make_temporal_order_dataset",
    "make_ucf101_sound_tree",
    "make_ucf101_tree",
    "make_unreadable_tree",
    "make_vfr_clip",
    "order_classes",
    "pid_alive",
    "require_ffmpeg",
    "sample_dataset_ready",
    "split_test_groups",
]
