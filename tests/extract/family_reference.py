"""What the family agreement tests share: footage with hard cuts in both containers, stage one
run on it, and an independent reference of every stored row.

The reference owes nothing to the project's decoders: plain `ffmpeg` decodes the row's stored
`frame_indices` at full resolution into RGB, the frames become PIL images, and the library's
own transforms and model (loaded from the same weights file stage one read) compute the row.
A family whose decoders scale, crop or pick frames differently from what its library does
on those frames disagrees here.

With random weights a raw cosine says little (random features share a large common part), so
rows are compared after subtracting the reference rows' mean from both; the control pairs
each stored row with another row's reference (the next frame or clip, often in another scene).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import synth
import torch
from PIL import Image

from pipeline import store
from stages.extract import extract_features
from stages.extract.config import ExtractConfig
from stages.samples.ucf101 import write_text_atomic

# Each clip: three scenes with hard cuts between them (a scene of one source changes completely
# from the frame before). .avi: MPEG-4 Part 2 with B-frames, as UCF101's; .mp4: H.264 (B-frames
# by default). Sizes: UCF101's 320x240, a wide one, and portrait ones in both containers.
FOOTAGE = (
    ("cuts_landscape.avi", "mpeg4", (320, 240), ("sunset", "checker", "plasma")),
    ("cuts_portrait.avi", "mpeg4", (180, 320), ("testcard", "rings", "sunset")),
    ("cuts_wide.mp4", "libx264", (352, 198), ("plasma", "box", "testcard")),
    ("cuts_portrait.mp4", "libx264", (240, 320), ("checker", "sunset", "box")),
)
FOOTAGE_FPS = 30  # a clip model trained at 15 frames/s takes every 2nd frame


def make_cut_footage(root: Path) -> Path:
    """root/videos/<name> for each FOOTAGE clip (about 1 s per scene), and root/list.csv: its path."""
    synth.make_clips(
        dict(
            path=root / "videos" / name, scenes=list(scenes), fps=FOOTAGE_FPS, size=size, seed=name,
            codec=codec, bframes=2 if codec == "mpeg4" else None,
        )
        for name, codec, size, scenes in FOOTAGE
    )  # fmt: skip
    rows = [f"videos/{name},{name.split('_')[1].split('.')[0]},train" for name, *_ in FOOTAGE]
    write_text_atomic(root / "list.csv", ["path,label,split", *rows], "\n")
    return root / "list.csv"


def container(video_id: str) -> str:
    """'avi' | 'mp4': the container a stored row's video is in."""
    return Path(video_id).suffix.lstrip(".")


def extract(csv: Path, root: Path, backbone: str, weights, **kw) -> Path:
    """Stage one on the csv set, T=2 (unless `frames` says), fp32 on the CPU: the set's directory."""
    cfg = ExtractConfig(
        dataset="csv", data_dir=csv, features_root=root, device="cpu",
        backbone=backbone, weights=str(weights), precision="fp32", **({"frames": 2} | kw),
    )  # fmt: skip
    return extract_features(cfg, quiet=True).set_dir


# Library-agnostic: n PIL images (or n clips, each a list of K) -> (n, D) float32 reference features.
Reference = Callable[[list], np.ndarray]


def ffmpeg_pictures(path: Path, indices: np.ndarray) -> list:
    """The frames numbered `indices` (in the order the decoder outputs them, from 0) of `path`,
    decoded by the ffmpeg command at full resolution as RGB PIL images: indices (n,) -> n
    images; (n, K) (a clip model's rows) -> n lists of K images."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "json", str(path)],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    stream = json.loads(probe.stdout)["streams"][0]
    width, height = stream["width"], stream["height"]
    wanted = sorted(set(int(i) for i in np.ravel(indices)))
    select = "+".join(f"eq(n\\,{i})" for i in wanted)
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"select={select}",
         "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    frames = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    assert len(frames) == len(wanted), f"{path}: ffmpeg gave {len(frames)} of the frames {wanted}"
    pictures = {i: Image.fromarray(f) for i, f in zip(wanted, frames)}
    if np.ndim(indices) == 2:
        return [[pictures[int(i)] for i in clip] for clip in indices]
    return [pictures[int(i)] for i in indices]


@dataclass
class Agreement:
    """A set's stored rows beside their references: ours and theirs (n, D) float32, and the
    container of each row's video (n,)."""

    set_name: str
    ours: np.ndarray
    theirs: np.ndarray
    containers: np.ndarray

    def cosines(self, shift: int = 0) -> np.ndarray:
        """Per row centred cosine of a stored row and the reference `shift` rows on (0: its own): (n,)."""
        centre = self.theirs.mean(0)
        a, b = self.ours - centre, np.roll(self.theirs, shift, axis=0) - centre
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)

    def figures(self) -> str:
        """Mean/min of the same-row cosines and the control's mean, per container."""
        same, wrong = self.cosines(), self.cosines(1)
        return f"{self.set_name}: " + "; ".join(
            f"{c}: mean {same[self.containers == c].mean():.4f} min {same[self.containers == c].min():.4f} "
            f"control {wrong[self.containers == c].mean():.3f}"
            for c in sorted(set(self.containers))
        )


def stored_and_reference(set_dir: Path, video_path: Callable[[str], Path], reference: Reference) -> Agreement:
    """Every stored row of the set (read back with h5py) and the reference of the same frame
    (or clip), decoded again from its stored frame_indices."""
    ours, theirs, containers = [], [], []
    for s in store.load_manifest(set_dir)["shards"]:
        with h5py.File(set_dir / s["file"], "r") as f:
            for vid, x, n, idx in zip(
                f["video_ids"].asstr()[()], f["features"][()], f["lengths"][()], f["frame_indices"][()]
            ):
                ours.append(x[:n].astype(np.float32))
                with torch.no_grad():
                    theirs.append(reference(ffmpeg_pictures(video_path(vid), idx[:n])))
                containers += [container(vid)] * int(n)
    return Agreement(set_dir.name, np.concatenate(ours), np.concatenate(theirs), np.array(containers))


# (mean, least) centred cosine of a family's rows: the bar every family must reach, and the one
# of the image families, whose frames the decoders scale as their libraries do (scaled as
# ResNet-50's frames are, they miss it: the figures are in docs/extraction.md).
AGREES = (0.99, 0.95)
SCALED_AS_THE_LIBRARY = (0.999, 0.999)


def assert_agrees(agreement: Agreement, bar: tuple[float, float] = AGREES) -> None:
    """In each container, the stored rows agree with their references (centred cosine >= bar[0]
    on average, >= bar[1] each), and not with other rows' references (the control). The
    figures are printed (`pytest -s` shows them)."""
    mean, least = bar
    print(agreement.figures())
    ours, theirs = agreement.ours, agreement.theirs
    assert ours.shape == theirs.shape and len(ours) >= 6, (ours.shape, theirs.shape)
    same, wrong = agreement.cosines(), agreement.cosines(1)
    for c in ("avi", "mp4"):
        rows = agreement.containers == c
        assert rows.any(), f"no rows from .{c} videos"
        assert same[rows].mean() >= mean and same[rows].min() >= least, (
            f"stored vs reference in .{c}: {agreement.figures()}; per row {np.round(same[rows], 4)}"
        )
    assert wrong.mean() < 0.8 and wrong.mean() < same.mean() - 0.15, f"control (wrong rows): {np.round(wrong, 3)}"
