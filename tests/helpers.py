"""Helpers shared by the tests of several directories (tests/ is on sys.path: conftest.py lives here).

reference_features(weights_file, frames)  what a user would write by hand: torchvision, fp32, CPU
ffmpeg_crops(path, indices, size, resize) frames by number from the ffmpeg command, scaled and cropped as ResNet-50's
assert_fp16_close(got, want, what)        fp16 compute against fp32, per frame vector
stored(set_dir)                           a feature set read with plain h5py, video by video
write_feature_set(...) / random_set(...)  feature sets written with plain h5py (the documented schema),
                                          of either modality (rgb; audio with its has_audio flags)
FakeExtractor                             a backbone stand-in whose features name their frames
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import synth
import torch
import torchvision

from pipeline import store
from stages.extract.config import ExtractConfig

STR = h5py.string_dtype(encoding="utf-8")
# Small UCF101-layout tree for the adapter and stage-one tests: 3 classes x 3 groups x
# 2 clips = 18 clips, each >= 16 frames (the default T), so none is padded.
UCF_TREE_CLASSES = {
    "ApplyEyeMakeup": ("sunset", "stripes"),
    "Basketball": ("testcard", "life"),
    "JumpRope": ("plasma", "box"),
}
UCF_TREE_SETTINGS = dict(groups=3, clips_per_group=2, fps=10, size=(160, 120), seconds_per_scene=1.2, seed=1)


@functools.lru_cache(maxsize=2)
def reference_model(weights_file) -> torch.nn.Module:
    model = torchvision.models.resnet50()
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    model.fc = torch.nn.Identity()
    return model.eval()


def reference_features(weights_file, frames: np.ndarray) -> np.ndarray:
    """What a user would write by hand: torchvision ResNet-50, fc removed, fp32, Normalize, on the CPU.

    frames (B, S, S, 3) uint8 -> (B, 2048) float32."""
    model = reference_model(weights_file)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        return model(x).numpy()


def ffmpeg_crops(path: Path, indices: np.ndarray, size: int, resize: int) -> np.ndarray:
    """The frames numbered `indices` (decoder output order, from 0) as the ffmpeg command decodes
    them, scaled and cropped as ResNet-50's sets are (shorter side `resize`, bilinear, centre
    crop): (n,) -> (n, size, size, 3) uint8, in the order of `indices`."""
    wanted = sorted(set(int(i) for i in indices))
    scale = f"scale=w='if(lte(iw,ih),{resize},-2)':h='if(lte(iw,ih),-2,{resize})':flags=bilinear,crop={size}:{size}"
    raw = b""
    for part in range(0, len(wanted), 40):  # a long select expression is more than ffmpeg parses
        group = wanted[part : part + 40]
        select = "+".join(f"eq(n\\,{i})" for i in group)
        raw += subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"select={select},{scale}",
             "-fps_mode", "passthrough", "-frames:v", str(len(group)), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
    frames = np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)
    assert len(frames) == len(wanted), f"{path}: ffmpeg gave {len(frames)} of the frames {wanted}"
    return frames[[wanted.index(int(i)) for i in indices]]


def assert_fp16_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """fp16 compute against fp32, got and want (..., D): finite, not degenerate, each frame's
    vector within 2% (L2), and frames that are padding in `want` (all zero) zero in `got`."""
    got = got.astype(np.float32)
    assert np.isfinite(got).all(), f"{what}: non-finite features"
    norms = np.linalg.norm(want, axis=-1)
    pad = norms == 0
    assert not pad.all() and np.abs(got).max() > 0, f"{what}: all-zero features"
    assert (got[pad] == 0).all(), f"{what}: padded frames are not zero"
    err = np.linalg.norm(got - want, axis=-1)[~pad] / norms[~pad]
    assert err.max() < 2e-2, f"{what}: relative L2 error {err.max():.4f} per frame (fp16 noise is ~1e-3)"


def stored(set_dir: Path) -> dict:
    """video_id -> (features (T, D) float16, length, label), read with plain h5py."""
    out = {}
    for s in store.load_manifest(set_dir)["shards"]:
        with h5py.File(set_dir / s["file"], "r") as f:
            for vid, x, n, y in zip(f["video_ids"].asstr()[()], f["features"][()], f["lengths"][()], f["labels"][()]):
                assert vid not in out, f"{vid} stored twice"
                out[vid] = (x, int(n), int(y))
    return out


def write_feature_set(
    set_dir: Path,
    features: np.ndarray,
    lengths: np.ndarray,
    labels: np.ndarray,
    video_ids: list[str],
    groups: list[str],
    classes: list[str],
    splits: dict,
    shard_size: int = 16,
    identity: dict | None = None,
    feature_set_id: str | None = None,
    complete: bool = True,
    modality: str | None = None,
    has_audio: np.ndarray | None = None,
) -> Path:
    """A feature set exactly as docs/store.md's schema describes it, written with plain h5py.

    features (N, T, D) float16, padded frames zero; lengths (N,) int32; labels (N,) int32.
    modality: the manifest's "modality" ("rgb", "audio"; None: no key, as sets made before
    audio existed); has_audio (N,) bool or 0/1: written per shard as `has_audio` (n,) uint8.
    """
    set_dir.mkdir(parents=True, exist_ok=True)
    n, t, d = features.shape
    fsid = feature_set_id or set_dir.name
    config = {"dataset": "synthetic", "frames": t, "image_size": 224, "weights": "random"}
    shards = []
    for k, s in enumerate(range(0, n, shard_size)):
        e = min(n, s + shard_size)
        path = set_dir / f"shard-{k:05d}.h5"
        valid = np.arange(t)[None, :] < lengths[s:e, None]
        with h5py.File(path, "w") as f:
            f["features"] = features[s:e].astype(np.float16)
            f["lengths"] = lengths[s:e].astype(np.int32)
            f["labels"] = labels[s:e].astype(np.int32)
            f.create_dataset("video_ids", data=np.array(video_ids[s:e], dtype=object), dtype=STR)
            f.create_dataset("groups", data=np.array(groups[s:e], dtype=object), dtype=STR)
            f["frame_indices"] = np.where(valid, np.arange(t)[None, :] * 3, -1).astype(np.int32)
            f["timestamps"] = np.where(valid, np.arange(t)[None, :] * 0.12, np.nan).astype(np.float32)
            if has_audio is not None:
                f["has_audio"] = np.asarray(has_audio[s:e]).astype(np.uint8)
            f.attrs.update(
                {"schema_version": 1, "feature_set_id": fsid, "config": json.dumps(config), "shard_index": k}
            )
        data = path.read_bytes()
        shards.append(
            {
                "index": k,
                "file": path.name,
                "videos": e - s,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "failures": [],
            }
        )
    manifest = {
        "schema_version": 1,
        "feature_set_id": fsid,
        "dataset": "synthetic",
        "identity": identity
        or {
            "schema_version": 1,
            "dataset": "synthetic",
            "videos_sha256": "x",
            "backbone": "resnet50",
            "weights": "random:seed0",
            "sampling": {"mode": "uniform", "frames": t},
            "image_size": 224,
        },
        "config": config,
        "frames": t,
        "feature_dim": d,
        "classes": classes,
        "splits": splits,
        "shards": shards,
        "num_videos": n,
        "num_stored": n,
        "num_failed": 0,
        "shard_size": shard_size,
        "num_shards": len(shards),
        "complete": complete,
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:00:00+00:00",
    } | ({"modality": modality} if modality else {})
    (set_dir / "manifest.json").write_text(json.dumps(manifest))
    return set_dir


def random_set(
    set_dir: Path,
    n: int = 60,
    t: int = 6,
    d: int = 16,
    classes: int = 3,
    groups_per_class: int = 5,
    splits: str = "ucf",
    seed: int = 0,
    offset: float = 50.0,
    **kw,
) -> Path:
    """Random features with a large common offset; UCF-like groups; 3 official splits or only "all"."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    group_no = (np.arange(n) // classes) % groups_per_class
    ids = [f"c{y}/v_c{y}_g{g:02d}_c{i:03d}.avi" for i, (y, g) in enumerate(zip(labels, group_no))]
    groups = [f"c{y}/g{g:02d}" for y, g in zip(labels, group_no)]
    lengths = rng.integers(2, t + 1, n)
    feats = (offset + rng.standard_normal((n, t, d)) * (1 + np.arange(d) / d)).astype(np.float16)
    feats[np.arange(t)[None, :] >= lengths[:, None]] = 0
    if splits == "ucf":
        split_map = {
            str(k): {
                "train": [v for v, g in zip(ids, group_no) if g != k - 1],
                "test": [v for v, g in zip(ids, group_no) if g == k - 1],
            }
            for k in (1, 2, 3)
        }
    else:
        split_map = {"all": {"train": list(ids), "test": []}}
    return write_feature_set(
        set_dir, feats, lengths, labels, ids, groups, [f"c{k}" for k in range(classes)], split_map, **kw
    )


class FakeExtractor:
    """A ModelThread stand-in on (size, size, 3) uint8 frames. embed: every feature of a frame is
    the frame's first pixel value (so frames name themselves)."""

    def __init__(self, compiled=False, fail=False, size=4):
        self.device, self.compiled, self.fail, self.shapes = torch.device("cpu"), compiled, fail, []
        self.family = SimpleNamespace(
            item_shape=lambda: (size, size, 3), item_dtype=torch.uint8, dim=2048, one_video_per_batch=False
        )
        self.runner = cf.ThreadPoolExecutor(1)

    def submit(self, fn, *args):
        return self.runner.submit(fn, *args)

    def ready(self):
        pass

    def embed(self, x):
        self.shapes.append(tuple(x.shape))
        if self.fail:
            raise RuntimeError("CUDA out of memory (pretend)")
        return x[:, 0, 0, 0].float()[:, None].expand(-1, 2048)


AUDIO_T = 4  # steps per video in the audio tests


def audio_cfg(tree: Path, root: Path, **kw) -> ExtractConfig:
    """An audio stage-one config on a UCF101-layout tree, T=4, on the CPU; kw overrides."""
    base = {
        "dataset": "ucf101",
        "data_dir": tree,
        "features_root": root,
        "frames": AUDIO_T,
        "device": "cpu",
        "workers": 2,
        "modality": "audio",
    }
    return ExtractConfig(**(base | kw))


def file_hashes(set_dir: Path) -> dict[str, str]:
    """file name -> sha256 of every file of a set directory (to show nothing changed)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(set_dir.iterdir()) if p.is_file()}


def shard_arrays(set_dir: Path) -> dict[str, np.ndarray]:
    """Every committed shard's datasets, concatenated in shard order (plain h5py)."""
    parts: dict[str, list] = {}
    for s in store.load_manifest(set_dir)["shards"]:
        with h5py.File(set_dir / s["file"], "r") as f:
            for name in f:
                parts.setdefault(name, []).append(f[name].asstr()[()] if f[name].dtype.kind == "O" else f[name][()])
    return {k: np.concatenate(v) for k, v in parts.items()}


def without_ffprobe() -> bool:
    """VIDSTORE_TESTS_WITHOUT_FFPROBE=1: this machine has a static ffmpeg and no ffprobe."""
    return os.environ.get("VIDSTORE_TESTS_WITHOUT_FFPROBE") == "1"


def require_ffprobe() -> str:
    """ffprobe for a test that checks files with it; skipped (with the reason) where there is none."""
    if without_ffprobe():
        pytest.skip("this test checks with ffprobe, and VIDSTORE_TESTS_WITHOUT_FFPROBE=1 says there is none")
    return synth.require_ffmpeg("ffprobe")


def skip_where_ffmpeg_crashes_on(path) -> None:
    """Skip (saying so) where this machine's ffmpeg binary itself crashes decoding `path`, as
    imageio-ffmpeg's static ffmpeg 7.0.2 does on any MPEG-4 in MPEG-TS (SIGSEGV): the
    ffmpeg-cli decoder then fails the video with "ffmpeg crashed", which is all it can do."""
    run = subprocess.run(
        [synth.require_ffmpeg(), "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True
    )
    if run.returncode < 0:
        pytest.skip(f"this machine's ffmpeg crashes (signal {-run.returncode}) decoding {path.name} by itself")


# The audio-visual set: class = scene (seen) x order of two sounds (heard).
AV_SCENES = ("beach", "street")
AV_ORDERS = ("AB", "BA")
AV_CLASSES = [f"{scene}-{order}" for scene in AV_SCENES for order in AV_ORDERS]
SILENCE = -4.6  # log(0 + 0.01): a log-mel front end's value for no sound at all


def audio_visual_sets(
    root: Path,
    groups: int = 6,
    clips: int = 4,
    t: int = 8,
    d_rgb: int = 16,
    d_audio: int = 8,
    absent: tuple[tuple[int, int, int], ...] = ((0, 1, 0), (1, 1, 0), (2, 1, 0), (3, 1, 0), (0, 5, 3), (3, 5, 3)),
    seed: int = 0,
) -> tuple[Path, Path]:
    """An rgb and an audio set of one dataset ("av") in which neither modality alone names the class.

    Class k = scene k // 2 x order k % 2 (AV_CLASSES). rgb: every valid frame shows the scene's
    vector over a large common component, with a per-group offset and noise. audio: sound A
    on the first half of the valid frames and B on the second (order AB), or the reverse
    (BA); lengths are even, so the mean over frames is the same for both orders and only a
    head that reads order can hear the class. absent: (class, group, clip) of videos without
    a sound track: stored with silence features and has_audio 0. 4 classes x `groups` x
    `clips` videos; the last 2 groups of each class are split 1's test side.
    Returns (rgb set dir, audio set dir) under root/av/.
    """
    rng = np.random.default_rng(seed)
    common_rgb, common_audio = np.abs(rng.standard_normal(d_rgb)) * 5, rng.standard_normal(d_audio) - 2
    scenes, sounds = rng.standard_normal((2, d_rgb)) * 0.6, rng.standard_normal((2, d_audio)) * 0.8
    n_videos = len(AV_CLASSES) * groups * clips
    rgb, audio = np.zeros((n_videos, t, d_rgb), np.float32), np.zeros((n_videos, t, d_audio), np.float32)
    lengths, labels, ids, grps, has_audio = [], [], [], [], []
    for i, (y, g, c) in enumerate((y, g, c) for y in range(4) for g in range(groups) for c in range(clips)):
        if c == 0:
            group_rgb, group_audio = rng.standard_normal(d_rgb) * 0.1, rng.standard_normal(d_audio) * 0.1
        n = int(rng.choice([t - 2, t]))  # even: both sounds get half the valid frames
        order = [0, 1] if y % 2 == 0 else [1, 0]
        rgb[i, :n] = common_rgb + group_rgb + scenes[y // 2] + rng.standard_normal((n, d_rgb)) * 0.3
        audio[i, :n] = (
            common_audio + group_audio + sounds[np.repeat(order, n // 2)] + rng.standard_normal((n, d_audio)) * 0.3
        )
        heard = (y, g, c) not in absent
        if not heard:
            audio[i, :n] = SILENCE
        lengths.append(n)
        labels.append(y)
        ids.append(f"{AV_CLASSES[y]}/v_{AV_CLASSES[y]}_g{g:02d}_c{c:02d}.avi")
        grps.append(f"{AV_CLASSES[y]}/g{g:02d}")
        has_audio.append(heard)
    test = [v for v, grp in zip(ids, grps) if int(grp[-2:]) >= groups - 2]
    split = {"1": {"train": [v for v in ids if v not in set(test)], "test": test}}
    common = dict(lengths=np.array(lengths), labels=np.array(labels), video_ids=ids, groups=grps)
    common |= dict(classes=AV_CLASSES, splits=split, shard_size=40)
    return (
        write_feature_set(root / "av" / "rgb-av", rgb.astype(np.float16), modality="rgb", **common),
        write_feature_set(
            root / "av" / "audio-av",
            audio.astype(np.float16),
            modality="audio",
            has_audio=np.array(has_audio),
            **common,
        ),
    )
