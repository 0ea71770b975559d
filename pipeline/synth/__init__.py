"""Generated videos: every synthetic clip and dataset tree the project needs, made with ffmpeg.

The embedded sample dataset (`make features` with no DATASET), the test fixtures, the
bad-input corpus and the benchmark clips all come from here, so there is one place that
knows how to draw a scene and one place that knows each official layout:

    clips.py     scenes, one ffmpeg call per clip, atomic writes        make_clip, make_clips
    layouts.py   UCF101, the sample, temporal order, HMDB51, folder, CSV make_*_tree, make_sample_dataset
    corpus.py    bad-input corpus, unreadable/missing files, bench clips make_bad_corpus, make_bench_clips
    sound.py     clips with a sound track (tones), trees with and without   make_sound_clip, make_av_dataset

The names below are the package's interface; import them from `pipeline.synth`.
"""

from .clips import PARTIAL, SCENES, Clip, SynthError, has_encoder, make_clip, make_clips, pid_alive, require_ffmpeg
from .corpus import (
    BENCH_SCENES,
    MUST_FAIL,
    MUST_SUCCEED,
    make_audio_only,
    make_bad_corpus,
    make_bench_clips,
    make_missing_listed_tree,
    make_unreadable_tree,
    make_vfr_clip,
)
from .layouts import (
    COMPLETE,
    CSV_CLASSES,
    FOLDER_CLASSES,
    HMDB51_CLASSES,
    HMDB51_FILMS,
    SAMPLE_CLASSES,
    SAMPLE_VERSION,
    TEMPORAL_SCENES,
    holds_only_sample,
    make_csv_dataset,
    make_folder_tree,
    make_hmdb51_tree,
    make_sample_dataset,
    make_temporal_order_dataset,
    make_ucf101_tree,
    order_classes,
    sample_dataset_ready,
    split_test_groups,
    ucf101_name,
)
from .sound import (
    AUDIO_CODECS,
    AV_CLASSES,
    AV_HIGH_HZ,
    AV_LOW_HZ,
    SOUND_TREE_CLASSES,
    SoundClip,
    garble_avi_audio,
    jittered_tones,
    make_av_dataset,
    make_sound_bench_clips,
    make_sound_clip,
    make_sound_corpus,
    make_ucf101_sound_tree,
    plan_sound_clip,
)

__all__ = [
    "AUDIO_CODECS",
    "AV_CLASSES",
    "AV_HIGH_HZ",
    "AV_LOW_HZ",
    "SOUND_TREE_CLASSES",
    "SoundClip",
    "garble_avi_audio",
    "jittered_tones",
    "make_av_dataset",
    "make_sound_bench_clips",
    "make_sound_clip",
    "make_sound_corpus",
    "make_ucf101_sound_tree",
    "plan_sound_clip",
    "BENCH_SCENES",
    "COMPLETE",
    "CSV_CLASSES",
    "Clip",
    "FOLDER_CLASSES",
    "HMDB51_CLASSES",
    "HMDB51_FILMS",
    "MUST_FAIL",
    "MUST_SUCCEED",
    "PARTIAL",
    "SAMPLE_CLASSES",
    "SAMPLE_VERSION",
    "SCENES",
    "SynthError",
    "TEMPORAL_SCENES",
    "has_encoder",
    "make_audio_only",
    "make_bad_corpus",
    "make_bench_clips",
    "make_clip",
    "make_clips",
    "make_csv_dataset",
    "make_folder_tree",
    "make_hmdb51_tree",
    "make_missing_listed_tree",
    "make_sample_dataset",
    "make_temporal_order_dataset",
    "make_ucf101_tree",
    "make_unreadable_tree",
    "make_vfr_clip",
    "order_classes",
    "pid_alive",
    "require_ffmpeg",
    "holds_only_sample",
    "sample_dataset_ready",
    "split_test_groups",
    "ucf101_name",
]
