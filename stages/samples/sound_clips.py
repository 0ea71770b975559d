"""Clips with a sound track: tones over scenes, in every container and codec stage one meets.

A clip's sound is a sequence of *tones*, (frequency in Hz, seconds) with 0 Hz for silence,
drawn by ffmpeg's lavfi `sine` and `anullsrc` sources; its pictures are scenes from
clips.SCENES. Pictures and sound last exactly as long as each other, and both are made by
ONE ffmpeg call per clip, written atomically like every generated clip (clips.run_ffmpeg).
`make_sound_clip`: any container (.avi MP3, .mp4 AAC, .mkv Vorbis, .webm Opus), any sample
rate and channel count, or no sound track at all.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the argument lists

from .clips import MUXERS, SynthError, lavfi, partial_name, run_ffmpeg, scene_sequence

# The sound codec each container usually carries (and the one WebM allows).
AUDIO_CODECS = {".avi": "libmp3lame", ".mp4": "aac", ".mov": "aac", ".mkv": "libvorbis", ".webm": "libopus"}


TONE_AMPLITUDE = 0.25  # of full scale: loud, and far from clipping after any resampling


Tone = tuple[float, float]  # (frequency Hz, 0 for silence; seconds)


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


def run_all(jobs: list[dict], workers: int | None) -> list[SoundClip]:
    """make_sound_clip(**job) for each job, `workers` ffmpeg processes at a time (threads wait on them)."""
    with ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda j: make_sound_clip(**j), jobs))
