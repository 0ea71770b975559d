"""The sound track as a modality: decoding (stages/extract/decode/sound.py), the log-mel front end and its
time alignment (stages/extract/logmel.py), VGGish and its weights policy
(stages/extract/extractors/vggish.py), and the generated clips with sound.

Every clip is generated here with ffmpeg, tiny (64-96 px, 1.5-2 s), once per module.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import synth
import torch

from pipeline.errors import ConfigError
from stages.extract.decode import sound as audio_mod
from stages.extract.decode.sound import SAMPLE_RATE, decode_audio
from stages.extract.errors import WeightsError
from stages.extract.extractors import vggish as vggish_mod
from stages.extract.extractors.vggish import VGGish, build_vggish, prepare, resolve_audio_weights, vggish_cache_path
from stages.extract.logmel import (
    EXAMPLE_S,
    MEL_BANDS,
    SILENCE_LOG_MEL,
    audio_features_at,
    example_frames,
    frames_in,
    log_mel,
    log_mel_examples,
    mel_matrix_np,
    segments_at,
    summarize,
)

SILENCE_SUMMARY = np.array([SILENCE_LOG_MEL] * MEL_BANDS + [0.0] * MEL_BANDS, np.float32)
# torchvggish's VGG state dict, key for key (github.com/harritaylor/torchvggish, torchvggish/vggish.py):
# features = make_layers() (conv, ReLU, pool as nn.Sequential), embeddings = fc-ReLU-fc-ReLU-fc-ReLU.
TORCHVGGISH_KEYS = {
    "features.0.weight": (64, 1, 3, 3),
    "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3),
    "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3),
    "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3),
    "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3),
    "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3),
    "features.13.bias": (512,),
    "embeddings.0.weight": (4096, 12288),
    "embeddings.0.bias": (4096,),
    "embeddings.2.weight": (4096, 4096),
    "embeddings.2.bias": (4096,),
    "embeddings.4.weight": (128, 4096),
    "embeddings.4.bias": (128,),
}


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, synth.SoundClip]:
    return synth.make_sound_corpus(tmp_path_factory.mktemp("sound_corpus"))


@pytest.fixture(scope="module")
def sound_tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sound_tree")
    return root, synth.make_ucf101_sound_tree(root)


@pytest.fixture(scope="module")
def av_set(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("av_set")
    return root, synth.make_av_dataset(root, groups=3, clips_per_group=1)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A VGGish state dict written from the architecture (seed 7): 72M float32 tensors, ~290 MB."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("vggish") / "vggish.pth"
    torch.save(VGGish().state_dict(), path)
    return path


def dominant_hz(samples: np.ndarray) -> float:
    """The strongest frequency in samples at 16 kHz (Hann-windowed, 0.5 Hz resolution by zero padding)."""
    n = 32000
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)), n=n))
    return float(np.argmax(spectrum) * SAMPLE_RATE / n)


def band_of(hz: float) -> int:
    """The mel band that weighs the FFT bin of `hz` most."""
    return int(np.argmax(mel_matrix_np()[round(hz * 512 / SAMPLE_RATE)]))


# ---------------------------------------------------------------- decoding
SOUNDING = ["mp3_44k_stereo.avi", "aac_48k_stereo.mp4", "vorbis_8k_mono.mkv", "opus_mono.webm", "tone_at_1s.avi"]
DECODERS = {"libmp3lame": "mp3float", "aac": "aac", "libvorbis": "vorbis", "libopus": "opus"}


@pytest.mark.parametrize(
    "fmt, dtype, full",
    [
        ("s16", np.int16, 32767),
        ("u8", np.uint8, 127),
        ("fltp", np.float32, 1.0),
        ("s32p", np.int32, 2**31 - 1),
        ("dbl", np.float64, 1.0),
    ],
)
def test_every_sample_format_downmixes_to_the_mean_of_the_channels(fmt, dtype, full):
    """A tone in the left channel only comes out at half its amplitude: the mean, as VGGish's front end."""
    n = 1600
    left = 0.5 * np.sin(2 * np.pi * 500 * np.arange(n) / SAMPLE_RATE)
    stereo = np.stack([left, np.zeros(n)]) * full + (128 if fmt == "u8" else 0)
    planar = stereo if fmt.endswith("p") else stereo.T.reshape(1, -1)  # packed: interleaved L R L R
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(np.round(planar) if full != 1.0 else planar, dtype=dtype), format=fmt, layout="stereo"
    )
    frame.sample_rate = SAMPLE_RATE
    frame.pts, frame.time_base = 8000, Fraction(1, SAMPLE_RATE)  # 0.5 s after the container's start
    sink = audio_mod.MonoAssembler(origin_s=0.0)
    sink.add(frame)
    out = sink.samples()
    assert out.dtype == np.float32 and len(out) == 8000 + n and not out[:8000].any()  # leading silence
    np.testing.assert_allclose(out[8000:], left / 2, atol=2 / full + 1e-6)


@pytest.mark.parametrize("name", SOUNDING)
def test_containers_codecs_and_rates_decode_to_16k_mono(corpus, name):
    clip = corpus[name]
    track = decode_audio(clip.path, timeout=30)
    assert track.error is None and track.has_audio
    assert track.samples.dtype == np.float32 and track.samples.ndim == 1
    assert track.codec == DECODERS[clip.audio_codec]
    # Opus always decodes at 48 kHz, whatever the source rate; the others keep theirs.
    assert track.source_rate == (48000 if clip.audio_codec == "libopus" else clip.sample_rate)
    assert track.source_channels == clip.channels
    # Encoders add up to ~50 ms of delay and padding (MP3 in AVI has no gapless info).
    assert clip.seconds - 0.01 <= track.duration_s <= clip.seconds + 0.08
    assert track.duration_s == pytest.approx(len(track.samples) / SAMPLE_RATE)
    freq, seconds = clip.tones[-1]
    tail = track.samples[-round((seconds - 0.3) * SAMPLE_RATE) : -round(0.15 * SAMPLE_RATE)]
    assert dominant_hz(tail) == pytest.approx(freq, abs=3)  # the tone, at its pitch: resampled right
    assert 0.2 < np.abs(tail).max() < 0.3  # amplitude 0.25 in every channel at the source: no 3 dB gain or loss


def test_no_sound_track_is_not_an_error_and_gives_silence_features(corpus):
    track = decode_audio(corpus["no_sound.avi"].path, timeout=30)
    assert (track.has_audio, track.error, len(track.samples), track.duration_s) == (False, None, 0, 0.0)
    features = audio_features_at(track.samples, np.array([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(features, np.tile(SILENCE_SUMMARY, (3, 1)), atol=1e-6)


def test_corrupt_sound_track_fails_with_its_reason_while_the_pictures_decode(corpus):
    path = corpus["corrupt_sound.avi"].path
    track = decode_audio(path, timeout=30)
    assert track.error.startswith("audio: not decodable: the mp3float decoder failed on"), track.error
    assert "Invalid data" in track.error and len(track.samples) == 0 and not track.has_audio
    with av.open(str(path)) as container:  # the sound alone is bad: every picture is there
        assert sum(1 for _ in container.decode(video=0)) == corpus["corrupt_sound.avi"].frames


def test_audio_stream_without_a_decoder_fails_with_its_reason(corpus, tmp_path):
    data = bytearray(corpus["mp3_44k_stereo.avi"].path.read_bytes())
    strf = data.index(b"strf", data.index(b"auds"))
    data[strf + 8 : strf + 10] = (0x7777).to_bytes(2, "little")  # WAVEFORMATEX.wFormatTag: no such codec
    path = tmp_path / "unknown_codec.avi"
    path.write_bytes(bytes(data))
    track = decode_audio(path, timeout=30)
    assert track.error == "audio: not decodable: FFmpeg has no decoder for this audio stream's codec"


def test_a_few_lost_frames_become_silence_in_place(corpus, tmp_path):
    """Zeroed MP3 chunks are dropped by the parser: the sound after them keeps its time."""
    src = corpus["mp3_44k_stereo.avi"].path
    data = bytearray(src.read_bytes())
    movi = data.index(b"movi")
    chunks = [i for i in range(movi, len(data) - 8) if data[i : i + 4] == b"01wb"]
    for i in chunks[20:24]:
        size = int.from_bytes(data[i + 4 : i + 8], "little")
        data[i + 8 : i + 8 + size] = bytes(size)
    path = tmp_path / "lost_frames.avi"
    path.write_bytes(bytes(data))
    whole, damaged = decode_audio(src, timeout=30), decode_audio(path, timeout=30)
    assert damaged.error is None and len(damaged.samples) == len(whole.samples)
    silent = np.abs(damaged.samples) < 1e-4
    assert 0.05 < silent[SAMPLE_RATE // 10 : -SAMPLE_RATE // 10].mean() < 0.3  # a gap, not a shift
    np.testing.assert_allclose(damaged.samples[-4000:], whole.samples[-4000:], atol=1e-4)


def test_missing_empty_and_directory_have_reasons(tmp_path):
    (tmp_path / "empty.avi").write_bytes(b"")
    missing = tmp_path / "nothing.avi"
    assert decode_audio(missing, timeout=5).error == f"audio: missing: no file at {missing}"
    assert decode_audio(tmp_path / "empty.avi", timeout=5).error == "audio: empty file (0 bytes)"
    assert decode_audio(tmp_path, timeout=5).error == "audio: not a file: it is a directory"


def test_a_text_file_is_not_a_readable_file(tmp_path):
    path = tmp_path / "notes.avi"
    path.write_text("not a video\n" * 100)
    assert decode_audio(path, timeout=5).error.startswith("audio: not a readable file: FFmpeg says")


def test_fifo_fails_at_once_without_being_opened(tmp_path):
    fifo = tmp_path / "hang.avi"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    track = decode_audio(fifo, timeout=30)
    assert time.monotonic() - t0 < 1.0
    assert track.error == "audio: not a regular file: it is a FIFO (named pipe)"


def test_a_read_past_the_deadline_ends_with_a_timeout(corpus, monkeypatch):
    """The reader's own deadline: every read the demuxer asks for after it has passed is refused."""
    real_read = os.read

    def slow_read(fd, size):
        time.sleep(0.3)  # a source that gives its data slowly, as a loaded network file system does
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", slow_read)
    t0 = time.monotonic()
    track = audio_mod.guarded(corpus["mp3_44k_stereo.avi"].path, time.monotonic() + 1.0, 1.0)
    assert 0.9 < time.monotonic() - t0 < 3.0
    assert track.error == "audio: timeout after 1 s (reading the file did not finish)"


def test_a_read_that_never_returns_is_abandoned_at_the_timeout(corpus, monkeypatch):
    """A read stuck in the kernel (a dead network mount): decode_audio still answers at the timeout."""
    release, real_read = threading.Event(), os.read

    def stuck_read(fd, size):
        release.wait(30)
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", stuck_read)
    t0 = time.monotonic()
    track = decode_audio(corpus["mp3_44k_stereo.avi"].path, timeout=1.0)
    elapsed = time.monotonic() - t0
    release.set()
    for thread in [t for t in threading.enumerate() if t.name == "audio-decode"]:
        thread.join(5)  # the abandoned decode ends once its read returns (past its deadline)
    assert 1.0 <= elapsed < 1.0 + audio_mod.ABANDON_GRACE_S + 1.0
    assert track.error == "audio: timeout after 1 s (a read of the file did not return; abandoned)"


# ---------------------------------------------------------------- the log-mel front end
def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """VGGish's mel_features.log_mel_spectrogram with its settings, written out plainly in float64."""
    hz_to_mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    window = 0.5 - 0.5 * np.cos(2 * np.pi / 400 * np.arange(400))  # periodic Hann
    frames = np.array([x[i * 160 : i * 160 + 400] for i in range(1 + (len(x) - 400) // 160)], np.float64)
    spectrum = np.abs(np.fft.rfft(frames * window, 512))  # (F, 257)
    bins_mel = hz_to_mel(np.linspace(0.0, 8000.0, 257))
    edges = np.linspace(hz_to_mel(125.0), hz_to_mel(7500.0), 66)
    weights = np.zeros((257, 64))
    for band in range(64):
        lo, mid, hi = edges[band : band + 3]
        for b in range(1, 257):  # bin 0 (DC) stays 0, as in HTK
            weights[b, band] = max(0.0, min((bins_mel[b] - lo) / (mid - lo), (hi - bins_mel[b]) / (hi - mid)))
    return np.log(spectrum @ weights + 0.01)


def test_log_mel_matches_the_numpy_reference():
    rng = np.random.default_rng(0)
    t = np.arange(24000) / SAMPLE_RATE
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    x[:3000] = 0.0  # a silent stretch: log(0 + 0.01)
    ours = log_mel(torch.from_numpy(x)).numpy()
    ref = reference_log_mel(x.astype(np.float64))
    assert ours.shape == ref.shape == (frames_in(24000), 64) == (148, 64)
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    np.testing.assert_allclose(ours[:10], SILENCE_LOG_MEL, atol=1e-6)


def test_log_mel_is_batched_and_rows_are_independent():
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 2, 4000)).astype(np.float32))
    batched = log_mel(x)
    assert batched.shape == (3, 2, frames_in(4000), 64) and batched.dtype == torch.float32
    np.testing.assert_allclose(batched[2, 1].numpy(), log_mel(x[2, 1]).numpy(), atol=1e-5)


def test_example_window_is_one_vggish_example():
    assert example_frames(EXAMPLE_S) == 96
    assert log_mel_examples(np.zeros(32000, np.float32), np.array([1.0])).shape == (1, 96, 64)


# ---------------------------------------------------------------- alignment
def test_windows_are_centred_on_the_timestamps_and_padded_with_silence():
    n, length = 32000, 95 * 160 + 400
    samples = np.zeros(n, np.float32)
    samples[16000] = 1.0  # an impulse at exactly 1.0 s
    seg = segments_at(samples, np.array([1.0, 0.0, 2.0, 5.0, np.nan]), 96)
    assert seg.shape == (5, length)
    assert np.flatnonzero(seg[0]).tolist() == [length // 2]  # the centre of step 0's window is 1.0 s
    assert not seg[1, : length // 2].any() and not seg[2, length // 2 :].any()  # before 0 s, after the end
    assert not seg[3].any() and not seg[4].any()  # wholly past the end; a padded step


def test_a_tone_starting_at_1s_is_silent_before_and_in_its_band_after(corpus):
    track = decode_audio(corpus["tone_at_1s.avi"].path, timeout=30)
    # 0.96 s windows: steps up to 0.5 s end before 0.98 s; steps from 1.5 s start after 1.02 s.
    times = np.array([0.2, 0.5, 1.5, 1.7])
    features = audio_features_at(track.samples, times)
    assert features.shape == (4, 128) and features.dtype == np.float32
    np.testing.assert_allclose(features[:2], np.tile(SILENCE_SUMMARY, (2, 1)), atol=1e-3)
    band = band_of(1000.0)
    for row in features[2:]:
        means = row[:64]
        assert int(np.argmax(means)) == band
        assert means[band] > SILENCE_LOG_MEL + 3  # far above the silence floor
    # At 1.5 s the window holds only the steady tone (little change); at 1.7 s it runs past
    # the end of the sound (2.0 s) into the silence padding, and the band's spread shows it.
    assert features[2, 64 + band] < 0.5 < features[3, 64 + band]


def test_summary_is_per_band_mean_then_std():
    examples = torch.from_numpy(np.random.default_rng(2).standard_normal((2, 96, 64)).astype(np.float32))
    s = summarize(examples).numpy()
    assert s.shape == (2, 128)
    np.testing.assert_allclose(s[:, :64], examples.numpy().mean(1), atol=1e-5)
    np.testing.assert_allclose(s[:, 64:], examples.numpy().std(1), atol=1e-5)


def test_padded_steps_are_zeros_and_no_steps_is_empty():
    features = audio_features_at(np.ones(16000, np.float32), np.array([0.5, np.nan]))
    assert features[0].any() and not features[1].any()
    assert audio_features_at(np.zeros(0, np.float32), np.zeros(0)).shape == (0, 128)


# ---------------------------------------------------------------- VGGish
def test_vggish_state_dict_has_torchvggish_keys_and_shapes():
    with torch.device("meta"):
        plain, with_pca = VGGish().state_dict(), VGGish(postprocess=True).state_dict()
    assert {k: tuple(v.shape) for k, v in plain.items()} == TORCHVGGISH_KEYS
    assert set(with_pca) - set(plain) == {"pproc.pca_matrix", "pproc.pca_means"}
    assert tuple(with_pca["pproc.pca_matrix"].shape) == (128, 128)
    assert tuple(with_pca["pproc.pca_means"].shape) == (128, 1)


def test_vggish_flattens_like_torchvggish():
    """torchvggish's VGG.forward: features, transpose(1, 3), transpose(1, 2), view, embeddings."""
    torch.manual_seed(0)
    model = VGGish().eval()
    x = torch.randn(2, 1, 96, 64)
    with torch.inference_mode():
        y = model.features(x)
        expected = model.embeddings(torch.transpose(torch.transpose(y, 1, 3), 1, 2).contiguous().view(2, -1))
        out = model(x)
    assert out.shape == (2, 128) and (out >= 0).all()
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_weights_file_loads_and_is_named_by_its_content(weights_file):
    spec = resolve_audio_weights(str(weights_file))
    assert spec.kind == "file" and spec.identity.startswith("sha256:") and len(spec.identity) == len("sha256:") + 16
    model = build_vggish(spec)
    embedder = lambda x: model(prepare(x))  # the family's input check, then its model
    torch.manual_seed(7)
    reference = VGGish().eval()
    x = torch.randn(3, 1, 96, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(embedder(x).numpy(), reference(x).numpy(), rtol=1e-5, atol=1e-6)
    samples = np.random.default_rng(3).standard_normal(48000).astype(np.float32) * 0.1
    features = audio_features_at(samples, np.array([0.5, 1.5, np.nan]), embed=embedder)
    assert features.shape == (3, 128) and features.dtype == np.float32 and not features[2].any()
    with pytest.raises(ValueError, match="window_s=0.96"):  # VGGish takes 96 x 64 examples only
        audio_features_at(samples, np.array([1.0]), window_s=0.5, embed=embedder)


def test_pca_postprocessing_is_used_when_the_state_dict_has_it(weights_file, tmp_path):
    state = torch.load(weights_file, weights_only=True)
    state["pproc.pca_matrix"] = torch.eye(128)
    state["pproc.pca_means"] = torch.zeros(128, 1)
    path = tmp_path / "with_pca.pth"
    torch.save(state, path)
    model = build_vggish(resolve_audio_weights(str(path)))
    assert model.pproc is not None
    with torch.inference_mode():
        out = model(torch.randn(2, 1, 96, 64))
    assert ((out >= 0) & (out <= 255) & (out == out.round())).all()  # quantised as AudioSet's embeddings


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s.pop("embeddings.4.weight"), "1 missing (e.g. ['embeddings.4.weight'])"),
        (lambda s: s.__setitem__("features.0.weight", torch.zeros(32, 1, 3, 3)), "1 of the wrong shape"),
        (lambda s: s.__setitem__("fc.weight", torch.zeros(2, 2)), "1 unexpected (e.g. ['fc.weight'])"),
        (lambda s: s.__setitem__("pproc.pca_matrix", torch.zeros(128, 128)), "1 missing (e.g. ['pproc.pca_means'])"),
    ],
)
def test_a_weights_file_that_does_not_fit_is_refused_naming_the_option(tmp_path, edit, words):
    with torch.device("meta"):  # shapes without data: the check before any work reads only shapes
        state = VGGish().state_dict()
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as e:
        resolve_audio_weights(str(path))
    assert str(e.value).startswith(f"--audio-weights (AUDIO_WEIGHTS=) {path} does not fit VGGish: ")
    assert words in str(e.value)


def test_weights_that_are_not_a_state_dict_or_not_there(tmp_path):
    with torch.device("meta"):
        torch.save(VGGish().state_dict(), tmp_path / "meta.pth")
    with pytest.raises(WeightsError, match="its tensors hold no data"):
        build_vggish(resolve_audio_weights(str(tmp_path / "meta.pth")))
    with pytest.raises(ConfigError, match=r"AUDIO_WEIGHTS=\): no file at"):
        resolve_audio_weights(str(tmp_path / "absent.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a loadable PyTorch state dict"):
        resolve_audio_weights(str(junk))


def test_offline_without_a_cached_checkpoint_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # A port nothing listens on: refused at once, whether or not this machine has a network.
    monkeypatch.setattr(vggish_mod, "VGGISH_URL", "http://127.0.0.1:9/vggish-10086976.pth")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "vggish-10086976.pth"
    assert vggish_cache_path() == cached
    t0 = time.monotonic()
    with pytest.raises(WeightsError) as e:
        resolve_audio_weights("vggish", download_timeout=5)
    assert time.monotonic() - t0 < 5
    message = str(e.value)
    assert f"VGGish weights are not cached at {cached} and could not be downloaded" in message
    assert "copy vggish-10086976.pth there, or pass AUDIO_WEIGHTS=/path/to/vggish.pth" in message
    spec = resolve_audio_weights("vggish", seed=4, fallback_to_random=True, download_timeout=5)
    assert (spec.kind, spec.identity) == ("random", "random:seed4")
    err = capsys.readouterr().err
    assert "USING SEEDED RANDOM WEIGHTS" in err and "NOT AudioSet (VGGish) embeddings" in err


def test_a_cached_torchvggish_checkpoint_is_used(weights_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    vggish_cache_path().parent.mkdir(parents=True)
    vggish_cache_path().symlink_to(weights_file)
    spec = resolve_audio_weights("vggish")
    assert (spec.kind, spec.identity, spec.path) == ("vggish", "torchvggish:vggish-10086976", vggish_cache_path())


def test_random_weights_only_when_asked_loudly_and_seeded(capsys):
    spec = resolve_audio_weights("random", seed=3)
    assert (spec.kind, spec.identity) == ("random", "random:seed3")
    err = capsys.readouterr().err
    assert "USING SEEDED RANDOM WEIGHTS" in err and "NOT AudioSet (VGGish) embeddings" in err
    a, b = build_vggish(spec), build_vggish(spec)
    assert torch.equal(a.embeddings[4].weight, b.embeddings[4].weight)


@pytest.mark.gpu
def test_front_end_and_vggish_on_the_gpu_match_the_cpu(weights_file):
    samples = np.random.default_rng(4).standard_normal(40000).astype(np.float32) * 0.1
    times = np.array([0.3, 1.2, 2.4, np.nan])
    cpu, gpu = audio_features_at(samples, times), audio_features_at(samples, times, device="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=2e-4)
    spec = resolve_audio_weights(str(weights_file))
    cpu_model, gpu_model = build_vggish(spec), build_vggish(spec).to("cuda")
    on_cpu = audio_features_at(samples, times, embed=lambda x: cpu_model(prepare(x)))
    on_gpu = audio_features_at(samples, times, embed=lambda x: gpu_model(prepare(x)), device="cuda")
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-3)  # TF32 may be on for convolutions


# ---------------------------------------------------------------- generated datasets
def test_ucf101_sound_tree_has_sound_in_some_classes_only(sound_tree):
    root, clips = sound_tree
    lists = root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_bytes().decode().split("\r\n")[:4] == [
        f"{i} {cls}" for i, cls in enumerate(synth.SOUND_TREE_CLASSES, start=1)
    ]
    assert len(clips) == 4 * 3 and all((root / "UCF-101" / rel).is_file() for rel in clips)
    for rel, clip in clips.items():
        track = decode_audio(root / "UCF-101" / rel, timeout=30)
        assert track.error is None, rel
        sounding = synth.SOUND_TREE_CLASSES[rel.split("/")[0]][1] is not None
        assert track.has_audio == sounding == (clip is not None), rel
        if sounding:
            assert (track.codec, track.source_rate, track.source_channels) == ("mp3float", 44100, 2)
            assert dominant_hz(track.samples[-6000:-2000]) == pytest.approx(clip.tones[-1][0], abs=3)


def test_av_dataset_classes_are_what_they_claim(av_set):
    """Probe every clip with PyAV: the pictures show the class's scene, the sound plays its tones in order."""
    root, table = av_set
    assert set(table) == set(synth.AV_CLASSES)
    scenes = {scene for scene, _ in table.values()}
    orders = {freqs for _, freqs in table.values()}
    assert len(scenes) == 2 and len(orders) == 2 and len(table) == 4  # 2 x 2: neither alone names the class
    for cls, (scene, freqs) in table.items():
        for path in sorted((root / "UCF-101" / cls).glob("*.avi")):
            with av.open(str(path)) as container:
                (video,), (sound,) = container.streams.video, container.streams.audio
                ctx = sound.codec_context
                assert (ctx.name, ctx.sample_rate, ctx.layout.nb_channels) == ("mp3float", 44100, 2)
                rgb = np.mean([f.to_ndarray(format="rgb24").reshape(-1, 3).mean(0) for f in container.decode(video)], 0)
            greenish = rgb[1] > rgb[0] + 30 and rgb[1] > rgb[2] + 30  # life: green cells; bars: grey on average
            assert greenish == (scene == "life"), (path, rgb)
            track = decode_audio(path, timeout=30)
            n = len(track.samples)
            # The tones change 35-65% into the clip: the first and last 30% hold one tone each.
            first, last = track.samples[: int(0.3 * n)], track.samples[int(0.7 * n) : n - 2000]
            assert dominant_hz(first) == pytest.approx(freqs[0], abs=3)
            assert dominant_hz(last) == pytest.approx(freqs[1], abs=3)
            assert (root / "ucfTrainTestlist" / "trainlist01.txt").read_text().count(f"{cls}/") >= 1


def test_av_dataset_features_separate_each_distinction(av_set):
    """The audio features carry the order (first step vs last step) and nothing of the scene."""
    root, table = av_set
    low, high = band_of(synth.AV_LOW_HZ), band_of(synth.AV_HIGH_HZ)
    for cls, (_, freqs) in table.items():
        for path in sorted((root / "UCF-101" / cls).glob("*.avi")):
            track = decode_audio(path, timeout=30)
            f = audio_features_at(track.samples, np.array([0.3, track.duration_s - 0.4]))
            louder_low = f[:, low] > f[:, high]
            assert louder_low.tolist() == [freqs[0] < freqs[1], freqs[1] < freqs[0]], (path, f[:, [low, high]])


def test_jittered_tones_fill_the_clip_in_order():
    tones = synth.jittered_tones([400.0, 2000.0], 2.0, random.Random(0))
    assert [f for f, _ in tones] == [400.0, 2000.0] and math.isclose(sum(s for _, s in tones), 2.0)
    assert 0.35 * 2 <= tones[0][1] <= 0.65 * 2


# ---------------------------------------------------------------- in decoder processes
def test_a_decoder_process_gives_the_sound_this_process_decodes(corpus, tmp_path):
    """Stage one decodes sound in its PyAV decoder processes (decode/processes.py): the same
    samples, flags and reasons as decode_audio here, for every container, codec and fault."""
    from stages.extract.decode.processes import DecoderProcesses

    (tmp_path / "not_a_file").mkdir()
    paths = [clip.path for clip in corpus.values()] + [tmp_path / "missing.avi", tmp_path / "not_a_file"]
    with DecoderProcesses(2) as procs:
        for path in paths:
            here, there = decode_audio(path), procs.decode_sound(path)
            assert (there.error, there.has_audio, there.codec) == (here.error, here.has_audio, here.codec), path.name
            assert (there.source_rate, there.source_channels, there.duration_s) == (
                here.source_rate,
                here.source_channels,
                here.duration_s,
            ), path.name
            assert there.samples.dtype == np.float32 and np.array_equal(there.samples, here.samples), path.name
