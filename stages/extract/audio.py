"""Stage one for MODALITY=audio: the sound around each sampled frame, step for step with the pictures.

For each video, on one of WORKERS threads (PyAV's decoding in the thread's decoder process,
decode_procs.py, as for a visual set):

    picture times   the picture decoder gives the sampled frames' indices and timestamps exactly
                    as a visual set of the same sampling stores them (the same decode, at a tiny
                    size: its pixels are dropped), so step t means the same instant in both sets
    sound           sound.decode_audio: the first audio stream, 16 kHz mono, on the same clock
    features        logmel.audio_features_at: the `audio_window` seconds centred on each step's
                    timestamp -> 128 values (the log-mel summary, or a VGGish embedding)

A video without a sound track is stored, with silence features and has_audio 0, so the
audio set lists the videos its visual set lists; a sound track that cannot be decoded is a
failure with its reason, as a bad picture stream is. Shards, claims, commits, resuming and
the failures log are the visual sets' (runner.py, local.py): only what is computed per
video differs. Decoding sound is cheap next to ResNet-50 (about 45 CPU ms a video on the
development machine), so audio runs on this machine's cores; VGGish, when asked for, runs
on the CPU threads too.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline import store
from pipeline.config import AUDIO_DIM, ExtractConfig

from .datasets import VideoRecord
from .decode import decode_video
from .decode_procs import DecoderProcesses
from .local import work_through
from .logmel import audio_features_at
from .plan import ExtractionPlan
from .runner import CommitToManifest, ShardBuffer, ShardSink, Summary, releasing_claims, write_shard
from .sound import decode_audio
from .vggish import VGGishEmbedder

# The picture decode that only gives the frame times: its smallest crop (pixels are dropped).
TIMES_SIZE, TIMES_RESIZE = 32, 37


@dataclass
class AudioOutcome:
    """One video: features (k, D) float32 for its k sampled frames, or the reason it failed."""

    features: np.ndarray | None = None
    indices: np.ndarray | None = None  # (k,) int32 frame indices, as the visual set's
    timestamps: np.ndarray | None = None  # (k,) float32 seconds, as the visual set's
    has_audio: bool = False
    error: str | None = None
    seconds: float = 0.0

    def sound(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, indices, timestamps) of a video whose sound was computed; a failed one (error set) has none."""
        if self.features is None or self.indices is None or self.timestamps is None:
            raise ValueError(f"no sound features: {self.error}")
        return self.features, self.indices, self.timestamps


class AudioRunner:
    """Computes the claimed shards of an audio set, `workers` videos at a time; returns timings
    (decode: worker-seconds spent per video, write: shard writes, videos)."""

    def __init__(self, plan: ExtractionPlan, sink: ShardSink, bar: tqdm | None = None):
        self.plan, self.sink, self.bar = plan, sink, bar
        self.workers = plan.cfg.workers or os.cpu_count() or 1
        self.embed = VGGishEmbedder(plan.required_weights) if plan.cfg.audio_features == "vggish" else None
        self.timings = {"decode": 0.0, "write": 0.0, "videos": 0}
        self.opened: list[ShardBuffer] = []

    def run(self, claimed: Iterator[tuple[int, store.Claim | None]]) -> dict:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one video per worker thread: the parallelism is across videos
        try:
            with (
                releasing_claims(self.opened),
                DecoderProcesses(self.workers) as self.procs,  # ended after the threads using them
                cf.ThreadPoolExecutor(self.workers, thread_name_prefix="audio") as pool,
            ):
                for index, claim in claimed:
                    self.compute_shard(index, claim, pool)
        finally:
            torch.set_num_threads(threads)
        return self.timings

    def compute_shard(self, index: int, claim: store.Claim | None, pool: cf.Executor) -> None:
        cfg = self.plan.cfg
        shard = ShardBuffer(index, self.plan.shards[index], cfg.frames, claim, dim=AUDIO_DIM, extras=("has_audio",))
        self.opened.append(shard)
        stored = self.sink.rows_to_copy(index)  # --retry-failures: the videos that did not fail are copied
        if stored is not None:
            shard.reuse(stored)
        todo = [pos for pos in range(len(shard.records)) if not shard.ok[pos]]
        for pos, outcome in zip(todo, pool.map(self.one_video, [shard.records[p] for p in todo])):
            self.timings["decode"] += outcome.seconds
            self.timings["videos"] += 1
            if outcome.error:
                shard.fail(pos, outcome.error)
            else:
                self.accept(shard, pos, outcome)
            if self.bar is not None:
                self.bar.update(1)
        t0 = time.perf_counter()
        write_shard(self.plan, self.sink, shard)
        self.timings["write"] += time.perf_counter() - t0

    @staticmethod
    def accept(shard: ShardBuffer, pos: int, outcome: AudioOutcome) -> None:
        features, indices, timestamps = outcome.sound()
        k = len(indices)
        shard.features[pos, :k] = features
        shard.lengths[pos], shard.ok[pos] = k, True
        shard.frame_indices[pos, :k] = indices
        shard.timestamps[pos, :k] = timestamps
        shard.extras["has_audio"][pos] = outcome.has_audio
        shard.embedded()

    def one_video(self, rec: VideoRecord) -> AudioOutcome:
        """On a worker thread."""
        return audio_of_video(rec.path, self.plan.cfg, self.embed, self.procs)


def audio_of_video(
    path: Path, cfg: ExtractConfig, embed: VGGishEmbedder | None = None, procs: DecoderProcesses | None = None
) -> AudioOutcome:
    """One video: the picture times, the sound track, the features at those times (or why not).
    procs: decoder processes for PyAV's decoding (a run's); None decodes in this thread."""
    t0 = time.perf_counter()
    times = decode_video(
        path,
        cfg.frames,
        TIMES_SIZE,
        TIMES_RESIZE,
        cfg.fps,
        cfg.timeout,
        decoder=cfg.decoder,
        workers=cfg.workers,
        procs=procs,
    )
    if times.error:
        return AudioOutcome(error=times.error, seconds=time.perf_counter() - t0)
    track = procs.decode_sound(path, cfg.timeout) if procs is not None else decode_audio(path, cfg.timeout)
    if track.error:
        return AudioOutcome(error=track.error, seconds=time.perf_counter() - t0)
    _, indices, timestamps = times.picture()
    features = audio_features_at(track.samples, timestamps, cfg.audio_window, embed=embed)
    return AudioOutcome(features, indices, timestamps, track.has_audio, seconds=time.perf_counter() - t0)


def extract_audio(plan: ExtractionPlan, summary: Summary, show_progress: bool = True) -> None:
    """Compute every uncommitted shard of an audio set in this process (helping or waiting for
    other runs of the same set, as a visual run does)."""
    kind = "log-mel summary" if plan.cfg.audio_features == "logmel" else f"VGGish ({plan.required_weights.identity})"
    work = f"from the sound tracks ({kind}), {plan.cfg.workers or os.cpu_count()} worker threads"
    sink = CommitToManifest(plan, summary)
    work_through(plan, summary, work, lambda bar: AudioRunner(plan, sink, bar), show_progress)
