"""Clips with a sound track: tones over scenes, in every container and codec stage one meets.

A clip's sound is a sequence of *tones*, (frequency in Hz, seconds) with 0 Hz for silence,
drawn by ffmpeg's lavfi `sine` and `anullsrc` sources; its pictures are scenes from
clips.SCENES. Pictures and sound last exactly as long as each other, and both are made by
ONE ffmpeg call per clip, written atomically like every generated clip (clips.run_ffmpeg).

    make_sound_clip          one clip: any container (.avi MP3, .mp4 AAC, .mkv Vorbis, .webm Opus),
                             any sample rate and channel count, or no sound track at all
    make_ucf101_sound_tree   a UCF101-layout tree where some classes have an MP3 track (UCF101's
                             AVIs: 51 of 101 classes) and the others none
    make_av_dataset          the audio-visual set: scene kind x order of two tones, where neither
                             modality alone names the class (see AV_CLASSES)
    make_sound_corpus        single clips for the decoder's tests, a corrupt sound track included
    make_sound_bench_clips   UCF101-like 7 s AVIs with 44.1 kHz stereo MP3, for measuring
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg  # ffmpeg-python: builds the argument lists

from ..files import atomic_write_bytes
from .clips import MUXERS, SynthError, lavfi, partial_name, remove_stale_partials, run_ffmpeg, scene_sequence
from .layouts import make_ucf101_tree, ucf101_name

# The sound codec each container usually carries (and the one WebM allows).
AUDIO_CODECS = {".avi": "libmp3lame", ".mp4": "aac", ".mov": "aac", ".mkv": "libvorbis", ".webm": "libopus"}
TONE_AMPLITUDE = 0.25  # of full scale: loud, and far from clipping after any resampling
Tone = tuple[float, float]  # (frequency Hz, 0 for silence; seconds)
SoundClasses = Mapping[str, tuple[Sequence[str], Sequence[float] | None]]  # class -> (scenes, tone frequencies)


@dataclass(frozen=True)
class SoundClip:
    """One generated clip with its sound: what each stream holds.

    tones: the sound track's segments in order, () when the clip has no sound track.
    sample_rate (Hz) and channels describe the track as encoded (0 without one).
    """

    path: Path
    scenes: tuple[str, ...]
    frames: int
    fps: float
    tones: tuple[Tone, ...]
    sample_rate: int
    channels: int
    audio_codec: str | None

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


# ---------------------------------------------------------------- one clip
def scene_video(scenes: Sequence[str], frames: int, fps: float, size: tuple[int, int], rng: random.Random):
    """The pictures: `scenes` in order, sharing `frames` frames as evenly as possible, with a hue look."""
    shares = [frames // len(scenes) + (i < frames % len(scenes)) for i in range(len(scenes))]
    video = scene_sequence(scenes, shares, fps, size, rng)
    video = video.filter("hue", h=round(rng.uniform(-8, 8), 1), s=round(rng.uniform(0.85, 1.15), 2))
    # A time base of one frame: ffmpeg 7's concat hands on 1/1000000, which its mpeg4 encoder refuses.
    rate = Fraction(fps).limit_denominator(1001)
    return video.filter("settb", f"{rate.denominator}/{rate.numerator}")


def tone_track(tones: Sequence[Tone], sample_rate: int, channels: int):
    """The sound: each (frequency, seconds) segment exactly round(seconds * rate) samples long, in order."""
    keys = [(freq, max(1, round(seconds * sample_rate))) for freq, seconds in tones]
    # ffmpeg-python merges equal nodes into one, so a segment used twice is made once and split.
    copies = {}
    for (freq, n), uses in Counter(keys).items():
        src = (
            lavfi("sine", frequency=freq, sample_rate=sample_rate)
            if freq > 0
            else lavfi("anullsrc", r=sample_rate, cl="mono")
        )
        # sine's amplitude is fixed at 1/8; the volume filter sets ours. asetpts: concat wants 0-based parts.
        part = (
            src.filter("atrim", end_sample=n)
            .filter("asetpts", "PTS-STARTPTS")
            .filter("volume", TONE_AMPLITUDE * 8 if freq > 0 else 1)
        )
        split = part.filter_multi_output("asplit", uses) if uses > 1 else None
        copies[freq, n] = iter([part] if split is None else [split[i] for i in range(uses)])
    segments = [next(copies[key]) for key in keys]
    audio = ffmpeg.concat(*segments, v=0, a=1) if len(segments) > 1 else segments[0]
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    if channels == 2:
        # The same signal in both channels at full level (ffmpeg's own upmix would lower it by 3 dB).
        twins = audio.filter("aformat", channel_layouts="mono").filter_multi_output("asplit", 2)
        audio = ffmpeg.filter([twins[0], twins[1]], "amerge", inputs=2)
    return audio.filter(
        "aformat", sample_fmts="fltp", sample_rates=sample_rate, channel_layouts="stereo" if channels == 2 else "mono"
    )


def sound_clip_node(
    dest: Path, video, audio, audio_codec: str | None, sample_rate: int, channels: int, video_codec: str
):
    """The output node: the pictures (and the sound, if any) into dest's container, one encoder thread each."""
    muxer = MUXERS.get(dest.suffix.lower())
    if muxer is None:
        raise SynthError(f"{dest}: unknown video extension {dest.suffix!r}; use one of {', '.join(MUXERS)}")
    kw = dict(format=muxer, fflags="+bitexact", flags="+bitexact", vcodec=video_codec, pix_fmt="yuv420p", threads=1)
    kw.update({"q:v": 4} if video_codec == "mpeg4" else {"b:v": "200k"})
    streams = [video]
    if audio is not None:
        streams.append(audio)
        # libvorbis refuses 64 kbit/s at 8 kHz; 24 kbit/s suits every encoder at low rates.
        kw.update(acodec=audio_codec, ac=channels, audio_bitrate="64k" if sample_rate >= 32000 else "24k")
        if audio_codec != "libopus":  # Opus encodes at 48 kHz whatever the source; ffmpeg converts
            kw["ar"] = sample_rate
    return ffmpeg.output(*streams, str(partial_name(dest)), **kw)


def make_sound_clip(
    path: Path,
    scenes: Sequence[str],
    tones: Sequence[Tone] | None,
    *,
    fps: float = 10,
    size: tuple[int, int] = (96, 64),
    sample_rate: int = 44100,
    channels: int = 2,
    audio_codec: str | None = None,
    seed: int | str = 0,
    timeout: float = 120.0,
) -> SoundClip:
    """Write one clip: `scenes` as pictures and `tones` as its sound track, with one ffmpeg call.

    path: its extension picks the container and, unless audio_codec is given, the sound codec
    (AUDIO_CODECS: .avi MP3, .mp4 AAC, .mkv Vorbis, .webm Opus; WebM pictures are VP8, the
    others mpeg4 as in UCF101). tones: (Hz, seconds) segments, 0 Hz for silence; the clip
    lasts their total (whole frames at fps); None or () makes a clip with no sound track,
    lasting one second per scene. sample_rate (Hz) and channels (1 or 2): the source and
    encoded format. seed picks scene offsets and the hue look.
    """
    clip = plan_sound_clip(
        path, scenes, tones, fps=fps, sample_rate=sample_rate, channels=channels, audio_codec=audio_codec
    )
    clip.path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"sound:{seed}")
    video = scene_video(scenes, clip.frames, fps, size, rng)
    audio = tone_track(clip.tones, sample_rate, channels) if clip.tones else None
    video_codec = "libvpx" if clip.path.suffix.lower() == ".webm" else "mpeg4"
    run_ffmpeg(
        sound_clip_node(clip.path, video, audio, clip.audio_codec, sample_rate, channels, video_codec),
        clip.path,
        timeout,
    )
    return clip


def plan_sound_clip(
    path: Path,
    scenes: Sequence[str],
    tones: Sequence[Tone] | None,
    *,
    fps: float = 10,
    sample_rate: int = 44100,
    channels: int = 2,
    audio_codec: str | None = None,
    **_drawing,
) -> SoundClip:
    """What make_sound_clip(same arguments) writes, without writing it (size, seed, timeout ignored)."""
    path = Path(path)
    tones = tuple((float(f), float(s)) for f, s in (tones or ()))
    seconds = sum(s for _, s in tones) if tones else float(len(scenes))
    codec = (audio_codec or AUDIO_CODECS.get(path.suffix.lower())) if tones else None
    return SoundClip(
        path,
        tuple(scenes),
        max(len(scenes), round(seconds * fps)),
        float(fps),
        tones,
        sample_rate if tones else 0,
        channels if tones else 0,
        codec,
    )


def jittered_tones(freqs: Sequence[float], seconds: float, rng: random.Random, jitter: float = 0.3) -> tuple[Tone, ...]:
    """Split `seconds` among `freqs` in order, each share scaled by U(1 - jitter, 1 + jitter) and
    rounded to 10 ms, so tones change at a different moment in every clip."""
    weights = [rng.uniform(1 - jitter, 1 + jitter) for _ in freqs]
    cuts = [round(seconds * sum(weights[: i + 1]) / sum(weights), 2) for i in range(len(freqs))]
    return tuple((f, round(b - a, 2)) for f, a, b in zip(freqs, [0.0, *cuts[:-1]], cuts))


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


def run_all(jobs: list[dict], workers: int | None) -> list[SoundClip]:
    """make_sound_clip(**job) for each job, `workers` ffmpeg processes at a time (threads wait on them)."""
    with ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda j: make_sound_clip(**j), jobs))


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
    specs: dict[str, dict[str, Any]] = {
        "mp3_44k_stereo.avi": dict(tones=[(1000, 1.5)], sample_rate=44100, channels=2),
        "aac_48k_stereo.mp4": dict(tones=[(1500, 1.5)], sample_rate=48000, channels=2),
        "vorbis_8k_mono.mkv": dict(tones=[(700, 1.5)], sample_rate=8000, channels=1),
        "opus_mono.webm": dict(tones=[(1200, 1.5)], sample_rate=16000, channels=1),
        "no_sound.avi": dict(tones=None),
        "tone_at_1s.avi": dict(tones=[(0, 1.0), (1000, 1.0)], sample_rate=44100, channels=2),
    }
    jobs: list[dict[str, Any]] = [
        dict(path=root / name, scenes=("testcard",), seed=f"corpus/{name}", **kw) for name, kw in specs.items()
    ]
    run_all([j for j in jobs if not j["path"].is_file()], workers)
    clips = {j["path"].name: plan_sound_clip(**j) for j in jobs}
    corrupt = root / "corrupt_sound.avi"
    if not corrupt.is_file():
        garble_avi_audio(root / "mp3_44k_stereo.avi", corrupt, seed="corpus")
    clips[corrupt.name] = dataclasses.replace(clips["mp3_44k_stereo.avi"], path=corrupt)
    return clips


def make_sound_bench_clips(
    dir: Path,
    count: int,
    seconds: float = 7.0,
    *,
    size: tuple[int, int] = (320, 240),
    fps: float = 25,
    workers: int | None = None,
) -> list[Path]:
    """UCF101-like clips with sound for measuring: dir/sound_bench_NNNN.avi, 320x240 at 25 fps,
    `seconds` long, mpeg4 pictures and a 44.1 kHz stereo MP3 track of three tones (64 kbit/s).
    Existing clips are reused. Returns the paths, sorted."""
    jobs: list[dict[str, Any]] = []  # make_sound_clip keyword arguments
    for i in range(count):
        rng = random.Random(f"sound-bench:{i}")
        freqs = [rng.choice([220.0, 330.0, 440.0, 660.0, 880.0, 1320.0]) for _ in range(3)]
        scenes = rng.sample(["testcard", "plasma", "rings", "box"], 3)
        tones = jittered_tones(freqs, seconds, rng)
        jobs.append(
            dict(
                path=Path(dir) / f"sound_bench_{i:04d}.avi",
                scenes=scenes,
                tones=tones,
                fps=fps,
                size=size,
                seed=f"sound-bench/{i}",
            )
        )
    run_all([j for j in jobs if not Path(j["path"]).is_file()], workers)
    return [j["path"] for j in jobs]
