"""Log-mel front end and time-aligned audio features, in torch (batched, CPU or GPU).

The front end is VGGish's, the field's reference (AudioSet, YouTube-8M's audio features,
v-iashin/video_features), formula for formula, so that its 96x64 examples are what a
VGGish checkpoint was trained on:

    16 kHz mono -> frames of 25 ms (400 samples), hop 10 ms (160), no padding
    -> periodic Hann window -> |rfft| with 512 points (257 bins; magnitude, not power)
    -> 64 triangular mel bands from 125 to 7500 Hz on the HTK mel scale, DC bin excluded
    -> log(mel + 0.01)

Alignment: step t of a video's audio features describes the sound *centred* on the
timestamp of step t of its pictures (stage one's `timestamps`, seconds): a window of
0.96 s, i.e. 96 frames of 10 ms = one VGGish example of 96x64 log-mel. Where the window
runs past either end of the sound track it sees silence (zeros), so every step has the
same shape and a step near an edge is partly silent, as it is in the video.

The families that read these windows are extractors/logmel_summary.py (per band, the mean
and std over the window) and extractors/vggish.py (an embedding of the 96x64 example).

A video without a sound track gets silence features: every log-mel value is
log(0 + 0.01) = SILENCE_LOG_MEL (-4.605), so its summary is 64 x -4.605 then 64 zeros;
the store's `has_audio` flag, not these values, tells a missing track from a silent one.
Steps whose timestamp is NaN (stage one's padding past a short video's last frame) get
zeros, like the padded rows of the visual features.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

SAMPLE_RATE = 16000  # Hz
WINDOW = 400  # samples per STFT frame: 25 ms
HOP = 160  # samples between frames: 10 ms
FFT = 512  # points: the power of two above WINDOW, as VGGish
MEL_BANDS = 64
MEL_LOW_HZ, MEL_HIGH_HZ = 125.0, 7500.0
LOG_OFFSET = 0.01  # log(mel + 0.01): VGGish's floor, so silence is finite
EXAMPLE_S = 0.96  # one VGGish example: 96 frames
SILENCE_LOG_MEL = math.log(LOG_OFFSET)
# What an audio set's identity records of this front end (any change is another feature set).
FRONT_END = {
    "sample_rate": SAMPLE_RATE,
    "window": WINDOW,
    "hop": HOP,
    "fft": FFT,
    "mel_bands": MEL_BANDS,
    "mel_hz": [MEL_LOW_HZ, MEL_HIGH_HZ],
    "log_offset": LOG_OFFSET,
    "mel_scale": "htk",
    "downmix": "mean",
}


# ---------------------------------------------------------------- the front end
def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as VGGish: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def mel_matrix_np() -> np.ndarray:
    """(FFT // 2 + 1, MEL_BANDS) float64: triangles that post-multiply a magnitude spectrogram.

    Band i rises from edge i to its centre i+1 and falls to edge i+2, linearly in mel,
    over MEL_BANDS + 2 edges evenly spaced in mel from 125 to 7500 Hz; bin 0 (DC) gets 0.
    """
    bins_mel = hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))
    edges = np.linspace(hz_to_mel(MEL_LOW_HZ), hz_to_mel(MEL_HIGH_HZ), MEL_BANDS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


@functools.cache
def front_end_constants(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(periodic Hann window (WINDOW,), mel matrix (257, MEL_BANDS)), float32 on `device`, made once."""
    window = torch.hann_window(WINDOW, periodic=True, dtype=torch.float64)  # 0.5 - 0.5 cos(2 pi n / N)
    mel = torch.from_numpy(mel_matrix_np())
    return window.to(device, torch.float32), mel.to(device, torch.float32)


def frames_in(samples: int) -> int:
    """STFT frames in `samples` samples (no padding, as VGGish): 1 + (samples - 400) // 160, or 0."""
    return 0 if samples < WINDOW else 1 + (samples - WINDOW) // HOP


def log_mel(x: torch.Tensor) -> torch.Tensor:
    """x (..., L) float32 samples at 16 kHz -> (..., frames_in(L), 64) float32 log-mel, on x's device."""
    window, mel = front_end_constants(str(x.device))
    frames = x.unfold(-1, WINDOW, HOP) * window  # (..., F, 400), a view until the multiply
    if frames.numel() == 0:  # no steps (MKL's FFT refuses an empty batch)
        return torch.empty(*frames.shape[:-1], MEL_BANDS, dtype=x.dtype, device=x.device)
    spectrum = torch.fft.rfft(frames, n=FFT)  # zero-padded to 512 points -> 257 bins
    # |z| as sqrt(re^2 + im^2): faster than complex abs() on a CPU, the same values to float32
    # rounding (docs/bench.md, "Figures behind the code").
    magnitude = (spectrum.real.square() + spectrum.imag.square()).sqrt()
    return torch.log(magnitude @ mel + LOG_OFFSET)


# ---------------------------------------------------------------- alignment
def example_frames(window_s: float) -> int:
    """Log-mel frames in a window of window_s seconds (0.96 -> 96)."""
    frames = round(window_s * SAMPLE_RATE / HOP)
    if frames < 1:
        raise ValueError(f"window_s must cover at least one 10 ms frame, got {window_s}")
    return frames


def segments_at(samples: np.ndarray, timestamps: np.ndarray, frames: int) -> np.ndarray:
    """(T, L) float32: for each timestamp, the L = (frames - 1) * 160 + 400 samples centred on it.

    samples (n,) float32 at 16 kHz (may be empty); timestamps (T,) float seconds, NaN for
    padded steps. Samples outside [0, n) are zeros (silence); a NaN step is all zeros.
    """
    samples = np.asarray(samples, np.float32).reshape(-1)
    ts = np.asarray(timestamps, np.float64).reshape(-1)
    n, length = len(samples), (frames - 1) * HOP + WINDOW
    # Silence on both sides, one window wide, so every window is a plain slice.
    padded = np.zeros(n + 2 * length, np.float32)
    padded[length : length + n] = samples
    out = np.zeros((len(ts), length), np.float32)
    for i, t in enumerate(ts):
        if np.isfinite(t):
            # The window's centre is its start + length / 2, so it starts at t * rate - length / 2;
            # a window wholly outside the sound is clipped to one wholly in the silence.
            start = int(np.clip(round(t * SAMPLE_RATE - length / 2), -length, n)) + length
            out[i] = padded[start : start + length]
    return out


def log_mel_examples(
    samples: np.ndarray, timestamps: np.ndarray, window_s: float = EXAMPLE_S, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(T, frames, 64) float32 log-mel on `device`: the window_s seconds of sound centred on each timestamp.

    samples (n,) float32 mono at 16 kHz (decode_audio's); timestamps (T,) float seconds.
    With window_s = 0.96 each row is one VGGish example (96 x 64).
    """
    frames = example_frames(window_s)
    segments = torch.from_numpy(segments_at(samples, timestamps, frames)).to(device)
    return log_mel(segments)


def summarize(examples: torch.Tensor) -> torch.Tensor:
    """(T, frames, 64) log-mel -> (T, 128): per band, the mean then the (population) std over frames."""
    if examples.shape[0] == 0:  # no steps: torch's std would warn about an empty reduction
        return examples.new_zeros(0, 2 * examples.shape[-1])
    return torch.cat([examples.mean(dim=1), examples.std(dim=1, unbiased=False)], dim=1)


def audio_features_at(
    samples: np.ndarray,
    timestamps: np.ndarray,
    window_s: float = EXAMPLE_S,
    embed=None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(T, D) float32 audio features, step t centred on timestamps[t] (seconds).

    samples: (n,) float32 mono at 16 kHz; empty for a video without sound (-> silence
    features). timestamps: (T,) float, NaN where a step is padding (-> a row of zeros).
    embed: None for the log-mel summary (D = 128), or a callable taking (T, 1, frames, 64)
    float32 examples on `device` to (T, D), e.g. vggish.VGGishEmbedder (needs
    window_s = 0.96). device: where the front end (and embed) run.
    """
    timestamps = np.asarray(timestamps, np.float64).reshape(-1)
    examples = log_mel_examples(samples, timestamps, window_s, device)
    with torch.inference_mode():
        features = summarize(examples) if embed is None else embed(examples[:, None])
    features = features.float().cpu().numpy()
    features[~np.isfinite(timestamps)] = 0.0
    return features
