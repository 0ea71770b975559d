"""What the picture-family tests share: a stored set's rows beside the same frames decoded
by hand with PyAV into PIL images (a clip model's row: its clip's K frames), and the
agreement measure.

With random weights a raw cosine says little (random features share a large common part),
so rows are compared after subtracting the mean row of the compared rows; the control pairs
each stored row with another frame's reference row.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import h5py
import numpy as np
import torch

from pipeline import store
from stages.extract import extract_features
from stages.extract.config import ExtractConfig


def extract(picture_csv: Path, root: Path, backbone: str, weights, **kw) -> Path:
    """Stage one on the picture set, T=2 (unless `frames` says), fp32 on the CPU: the set's directory."""
    cfg = ExtractConfig(
        dataset="csv", data_dir=picture_csv, features_root=root, device="cpu",
        backbone=backbone, weights=str(weights), precision="fp32", **({"frames": 2} | kw),
    )  # fmt: skip
    return extract_features(cfg, quiet=True).set_dir


# Library-agnostic: n PIL images (or n clips, each a list of K) -> (n, D) float32 reference features.
Reference = Callable[[list], np.ndarray]


def decoded_pictures(path: Path, indices: np.ndarray) -> list:
    """The frames at the decode-order ordinals `indices` of `path`, as full-size RGB PIL images:
    indices (n,) -> n images; (n, K) (a clip model's rows) -> n lists of K images."""
    wanted, out = set(int(i) for i in np.ravel(indices)), {}
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                out[k] = frame.to_image()
    if np.ndim(indices) == 2:
        return [[out[int(i)] for i in clip] for clip in indices]
    return [out[int(i)] for i in indices]


def stored_and_reference(set_dir: Path, video_path: Callable[[str], Path], reference: Reference):
    """Every stored row of the set and the reference forward of the same frame (or clip):
    (stored (n, D) float32, reference (n, D) float32)."""
    ours, theirs = [], []
    for s in store.load_manifest(set_dir)["shards"]:
        with h5py.File(set_dir / s["file"], "r") as f:
            for vid, x, n, idx in zip(
                f["video_ids"].asstr()[()], f["features"][()], f["lengths"][()], f["frame_indices"][()]
            ):
                ours.append(x[:n].astype(np.float32))
                with torch.no_grad():
                    theirs.append(reference(decoded_pictures(video_path(vid), idx[:n])))
    return np.concatenate(ours), np.concatenate(theirs)


def centred_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row cosine of a and b, each with the mean of its rows subtracted: (n,)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def assert_same_features(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Each stored row agrees with its frame's (clip's) reference (>= 0.99), and not with another's."""
    assert ours.shape == theirs.shape and len(ours) >= 6, (ours.shape, theirs.shape)
    same = centred_cosines(ours, theirs)
    wrong = centred_cosines(ours, np.roll(theirs, 1, axis=0))
    assert same.min() >= 0.99, f"stored vs reference, per frame: min {same.min():.4f}, {np.round(same, 4)}"
    assert wrong.mean() < 0.8 and wrong.max() < same.min() - 0.05, f"control (wrong frames): {np.round(wrong, 3)}"
