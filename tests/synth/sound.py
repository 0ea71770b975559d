"""Test sets with sound: a UCF101-layout tree where some classes have a sound track, the
audio-visual set, single clips for the decoder's tests, a corrupt sound track.

    make_ucf101_sound_tree   some classes with an MP3 track (UCF101's AVIs: 51 of 101 classes),
                             the others none
    make_av_dataset          scene kind x order of two tones, where neither modality alone
                             names the class (see AV_CLASSES)
    make_sound_corpus        single clips for the decoder's tests, a corrupt sound track included
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.files import atomic_write_bytes
from stages.samples.clips import SynthError, remove_stale_partials
from stages.samples.sound_clips import SoundClip, jittered_tones, plan_sound_clip, run_all
from stages.samples.ucf101 import make_ucf101_tree, ucf101_name

SoundClasses = Mapping[str, tuple[Sequence[str], Sequence[float] | None]]  # class -> (scenes, tone frequencies)


# ---------------------------------------------------------------- trees
# Class -> (scenes, tone frequencies in order or None for no sound track). Two classes with
# MP3 sound, two without, as UCF101 mixes them.
SOUND_TREE_CLASSES = {
    "PlayingPiano": (("plasma", "rings"), (523.0, 784.0)),
    "Drumming": (("checker", "box"), (200.0,)),
    "Typing": (("life", "stripes"), None),
    "WallPushups": (("sunset", "bars"), None),
}


def make_ucf101_sound_tree(
    root: Path,
    classes: SoundClasses = SOUND_TREE_CLASSES,
    groups: int = 3,
    clips_per_group: int = 1,
    *,
    seconds: float = 1.5,
    fps: float = 10,
    size: tuple[int, int] = (96, 64),
    sample_rate: int = 44100,
    channels: int = 2,
    seed: int | str = 0,
    workers: int | None = None,
) -> dict[str, SoundClip | None]:
    """A UCF101-layout tree (layouts.make_ucf101_tree's files and lists) where some classes have sound.

    classes: name -> (scenes, tone frequencies or None). A class with tones gets MP3 in AVI
    at sample_rate/channels (UCF101's are mostly 44.1 kHz stereo), its tones played in order
    for jittered shares of `seconds`; a class with None gets clips with no sound track.
    Idempotent (existing clips are kept). Returns video id -> the SoundClip of each clip with
    sound, None for each clip without.
    """
    root = Path(root)
    remove_stale_partials(root)
    jobs: dict[str, dict | None] = {}
    for cls, (scenes, freqs) in classes.items():
        for rel in (ucf101_name(cls, g, c) for g in range(1, groups + 1) for c in range(1, clips_per_group + 1)):
            tones = jittered_tones(freqs, seconds, random.Random(f"{seed}/{rel}")) if freqs else None
            jobs[rel] = (
                dict(
                    path=root / "UCF-101" / rel,
                    scenes=scenes,
                    fps=fps,
                    size=size,
                    sample_rate=sample_rate,
                    channels=channels,
                    tones=tones,
                    seed=f"{seed}/{rel}",
                )
                if freqs
                else None
            )
    run_all([j for j in jobs.values() if j and not j["path"].is_file()], workers)
    # The silent classes' clips and the list files: make_ucf101_tree keeps the clips made above.
    make_ucf101_tree(
        root,
        {cls: tuple(scenes) for cls, (scenes, _) in classes.items()},
        groups,
        clips_per_group,
        fps=fps,
        size=size,
        seconds_per_scene=seconds / max(len(s) for s, _ in classes.values()),
        seed=seed,
        workers=workers,
    )
    return {rel: plan_sound_clip(**job) if job else None for rel, job in jobs.items()}


# The audio-visual set: 2 scene kinds x 2 orders of a low and a high tone. The pictures tell
# only the scene (2 groups of 2 classes: ~50%), the sound only the order (the other 2 groups:
# ~50%, and only to a model that reads time, since both orders hold the same two tones), and
# both together name the class (~100%).
AV_LOW_HZ, AV_HIGH_HZ = 400.0, 2000.0  # 9 mel bands apart: no front end confuses them


AV_CLASSES = {
    "BarsLowHigh": ("bars", (AV_LOW_HZ, AV_HIGH_HZ)),
    "BarsHighLow": ("bars", (AV_HIGH_HZ, AV_LOW_HZ)),
    "LifeLowHigh": ("life", (AV_LOW_HZ, AV_HIGH_HZ)),
    "LifeHighLow": ("life", (AV_HIGH_HZ, AV_LOW_HZ)),
}


def make_av_dataset(
    root: Path,
    classes: Mapping[str, tuple[str, Sequence[float]]] = AV_CLASSES,
    groups: int = 6,
    clips_per_group: int = 2,
    *,
    seconds: float = 2.0,
    fps: float = 8,
    size: tuple[int, int] = (64, 48),
    seed: int | str = 0,
    workers: int | None = None,
) -> dict[str, tuple[str, tuple[float, ...]]]:
    """The audio-visual test set in the UCF101 layout: every clip one scene and a sequence of tones.

    classes: name -> (scene, tone frequencies in order); the default AV_CLASSES crosses 2
    scenes with 2 orders of 2 tones, so rgb alone and audio alone each reach about 50% and
    the two fused about 100% (the tones change at a jittered moment, 35-65% into the clip).
    Other tables work too, e.g. scene x one tone frequency. Sound: MP3, 44.1 kHz stereo, in
    AVI. groups >= 3 (the 3 splits test disjoint groups). Default: 4 classes x 6 groups x
    2 clips = 48 clips of 2 s. Idempotent. Returns the class table.
    """
    table = {cls: (scene, tuple(float(f) for f in freqs)) for cls, (scene, freqs) in classes.items()}
    make_ucf101_sound_tree(
        root,
        {cls: ((scene,), freqs) for cls, (scene, freqs) in table.items()},
        groups,
        clips_per_group,
        seconds=seconds,
        fps=fps,
        size=size,
        seed=f"av{seed}",
        workers=workers,
    )
    return table


# ---------------------------------------------------------------- single clips for the decoder
def garble_avi_audio(src: Path, dest: Path, seed: int | str = 0) -> int:
    """Copy an AVI to dest with the payload of every audio chunk ('##wb') replaced by random bytes.

    The RIFF structure, the index and the pictures stay intact, so a demuxer reads the file
    and its video decodes, but no audio packet holds a frame. Returns the chunks garbled.
    """
    data = bytearray(Path(src).read_bytes())
    rng = random.Random(f"garble:{seed}")
    garbled = 0
    for tag, body, end in riff_chunks(data, 12, len(data)):
        if tag == b"LIST" and data[body : body + 4] == b"movi":
            for tag2, body2, end2 in riff_chunks(data, body + 4, end):
                if tag2[2:] == b"wb":
                    data[body2:end2] = rng.randbytes(end2 - body2)
                    garbled += 1
    if not garbled:
        raise SynthError(f"{src}: no audio chunks in its movi list, nothing to garble")
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(dest), bytes(data))
    return garbled


def riff_chunks(buf: bytes | bytearray, start: int, end: int):
    """(tag, body offset, body end) of each RIFF chunk in buf[start:end]."""
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(buf[pos + 4 : pos + 8], "little")
        yield bytes(buf[pos : pos + 4]), pos + 8, min(pos + 8 + size, end)
        pos += 8 + size + (size & 1)


def make_sound_corpus(root: Path, workers: int | None = None) -> dict[str, SoundClip]:
    """Single clips covering the containers, codecs, rates and faults the sound decoder meets.

    Returns name -> SoundClip (its path under root):
      mp3_44k_stereo.avi   MP3 in AVI, 44.1 kHz stereo, 1000 Hz for 1.5 s (UCF101's format)
      aac_48k_stereo.mp4   AAC in MP4, 48 kHz stereo, 1500 Hz for 1.5 s
      vorbis_8k_mono.mkv   Vorbis in Matroska, 8 kHz mono, 700 Hz for 1.5 s
      opus_mono.webm       Opus in WebM (VP8 pictures), 16 kHz mono source, 1200 Hz for 1.5 s
      no_sound.avi         pictures only: no audio stream at all
      tone_at_1s.avi       MP3 in AVI: 1.0 s of silence, then 1000 Hz for 1.0 s
      corrupt_sound.avi    mp3_44k_stereo.avi with every audio packet garbled (pictures intact)
    Idempotent (existing files are kept). About 1 s on 2 cores.
    """
    root = Path(root)
    specs = {
        "mp3_44k_stereo.avi": dict(tones=[(1000, 1.5)], sample_rate=44100, channels=2),
        "aac_48k_stereo.mp4": dict(tones=[(1500, 1.5)], sample_rate=48000, channels=2),
        "vorbis_8k_mono.mkv": dict(tones=[(700, 1.5)], sample_rate=8000, channels=1),
        "opus_mono.webm": dict(tones=[(1200, 1.5)], sample_rate=16000, channels=1),
        "no_sound.avi": dict(tones=None),
        "tone_at_1s.avi": dict(tones=[(0, 1.0), (1000, 1.0)], sample_rate=44100, channels=2),
    }
    jobs = [dict(path=root / name, scenes=("testcard",), seed=f"corpus/{name}", **kw) for name, kw in specs.items()]
    run_all([j for j in jobs if not j["path"].is_file()], workers)
    clips = {j["path"].name: plan_sound_clip(**j) for j in jobs}
    corrupt = root / "corrupt_sound.avi"
    if not corrupt.is_file():
        garble_avi_audio(root / "mp3_44k_stereo.avi", corrupt, seed="corpus")
    clips[corrupt.name] = dataclasses.replace(clips["mp3_44k_stereo.avi"], path=corrupt)
    return clips
