"""Clips made to be awkward: the bad-input corpus, unreadable and missing files.

The corpus holds files that must fail with a specific reason (empty, truncated, text,
audio only, a FIFO that hangs any reader) and files that must succeed however odd (1
frame, shorter than T, 4K, portrait, odd sizes, variable frame rate, an MP4 named .avi,
hostile names).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the argument lists

from pipeline.files import atomic_write_bytes
from stages.samples.clips import has_encoder, lavfi, make_clips, output, require_ffmpeg, run_ffmpeg
from stages.samples.ucf101 import make_ucf101_tree, ucf101_name

# ---------------------------------------------------------------- bad input (issue 5)
MUST_FAIL, MUST_SUCCEED = "must fail", "must succeed"


def vfr_output_options() -> dict:
    """Keep every frame's own timestamp: -fps_mode vfr since ffmpeg 5.1, -vsync vfr before."""
    out = subprocess.run(
        [require_ffmpeg(), "-hide_banner", "-h", "full"], capture_output=True, text=True, timeout=30
    ).stdout
    return {"fps_mode": "vfr"} if "-fps_mode" in out else {"vsync": "vfr"}


def make_vfr_clip(path: Path, fast_after: int = 10, frames: int = 20, size: tuple[int, int] = (160, 120)) -> Path:
    """A variable-frame-rate clip (use .mkv): frames 0.1 s apart (10 fps), then 0.04 s apart (25 fps)
    from frame `fast_after` on. Matroska keeps 1 ms timestamps, so the gaps survive muxing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = fast_after * 0.1
    video = (
        lavfi("testsrc2", size=f"{size[0]}x{size[1]}", rate=10)
        .trim(end_frame=frames)
        .filter("settb", "1/1000")
        .setpts(f"if(lt(N,{fast_after}),N*0.1,{t0}+(N-{fast_after})*0.04)/TB")
    )
    # Without a 1 ms encoder time base the encoder would round every frame back onto the 0.1 s grid.
    run_ffmpeg(output(video, path, vcodec="mpeg4", threads=1, enc_time_base="1/1000", **vfr_output_options()), path)
    return path


def make_dropped_frames_avi(path: Path, drop: tuple[int, int] = (40, 44), frames: int = 95) -> Path:
    """An mpeg4 AVI of `frames` 25-fps frames (64x48) with frames drop[0]..drop[1] dropped and their
    timestamps kept (passthrough): the AVI muxer fills the gap with empty chunks, which its header
    counts (nb_frames `frames`) while only `frames - (drop[1] - drop[0] + 1)` packets decode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    passthrough = {k: "passthrough" for k in vfr_output_options()}  # -fps_mode, or -vsync before 5.1
    video = lavfi("testsrc", size="64x48", rate=25).trim(end_frame=frames)
    video = video.filter("select", f"not(between(n,{drop[0]},{drop[1]}))")
    run_ffmpeg(output(video, path, vcodec="mpeg4", threads=1, **passthrough), path)
    return path


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """A file with one audio stream (a 440 Hz sine, PCM) and no video stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = ffmpeg.input(f"sine=frequency=440:duration={seconds}", format="lavfi")
    run_ffmpeg(output(audio, path, acodec="pcm_s16le"), path)
    return path


def make_bad_corpus(root: Path) -> dict[str, str]:
    """The real-world bad-input corpus of issue 5, as a folder-per-class tree root/<class>/<file>.

    Classes: must_fail/, must_succeed/, and twin/ (a second same_name.avi). Returns relative
    path -> "must fail: <what it is>" or "must succeed: <what it is>"; a stage-one run over
    the tree must record each "must fail" file in failures.jsonl with its reason and store
    every "must succeed" one (short ones padded, with their true length).

    must_fail/hang.avi is a FIFO with no writer: anything that opens it blocks forever, so
    stage one must refuse it unopened (it is not a regular file). Never copy this tree with shutil.copytree (the copy
    would block on the FIFO); list it, or run on it in place. Idempotent. About 2 s.
    Not here, because they need another layout or another user: make_missing_listed_tree
    (a listed file that is missing) and make_unreadable_tree (a chmod 000 file).
    """
    root = Path(root)
    fail, ok = root / "must_fail", root / "must_succeed"
    corpus: dict[str, str] = {}

    def note(rel: str, outcome: str, what: str) -> Path:
        corpus[rel] = f"{outcome}: {what}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        return root / rel

    clips = [  # (relative path, outcome, description, make_clip arguments)
        (
            "must_succeed/normal.avi",
            MUST_SUCCEED,
            "an ordinary clip, 160x120, 10 fps, 30 frames",
            dict(scenes=["testcard", "plasma"], scene_frames=[15, 15]),
        ),
        (
            "must_succeed/one_frame.avi",
            MUST_SUCCEED,
            "a single frame (padded; length 1)",
            dict(scenes=["bars"], scene_frames=[1]),
        ),
        (
            "must_succeed/short_5_frames.avi",
            MUST_SUCCEED,
            "5 frames, shorter than T (padded; length 5)",
            dict(scenes=["fractal"], scene_frames=[5]),
        ),
        (
            "must_succeed/uhd_3840x2160.avi",
            MUST_SUCCEED,
            "4K, 3840x2160, 3 frames",
            dict(scenes=["testcard"], scene_frames=[3], size=(3840, 2160)),
        ),
        (
            "must_succeed/portrait_120x200.avi",
            MUST_SUCCEED,
            "portrait, 120x200, 20 frames",
            dict(scenes=["life"], scene_frames=[20], size=(120, 200)),
        ),
        (
            "must_succeed/odd_161x97.avi",
            MUST_SUCCEED,
            "odd dimensions, 161x97, 20 frames",
            dict(scenes=["rings"], scene_frames=[20], size=(161, 97)),
        ),
        (
            'must_succeed/it\'s a "clip" ü ñ.avi',
            MUST_SUCCEED,
            "spaces, quotes and non-ASCII in the name, 20 frames",
            dict(scenes=["checker"], scene_frames=[20]),
        ),
        (
            "must_succeed/same_name.avi",
            MUST_SUCCEED,
            "same file name as twin/same_name.avi (a distinct video id)",
            dict(scenes=["sunset"], scene_frames=[20]),
        ),
        (
            "twin/same_name.avi",
            MUST_SUCCEED,
            "same file name as must_succeed/same_name.avi (a distinct video id)",
            dict(scenes=["stripes"], scene_frames=[20]),
        ),
    ]
    jobs = [dict(path=note(rel, outcome, what), seed=f"bad/{rel}", **kw) for rel, outcome, what, kw in clips]
    # The derived files start from clips made in a scratch folder inside root (same file
    # system, so the final rename is atomic), removed at the end.
    scratch = root / ".scratch"
    derived = {"truncated": scratch / "truncated.avi", "mp4": scratch / "really.mp4"}
    mp4_codec = "libx264" if has_encoder("libx264") else "mpeg4"
    if not (fail / "truncated.avi").exists():
        jobs.append(
            dict(path=derived["truncated"], scenes=["testcard", "life"], scene_frames=[20, 20], seed="bad/truncated")
        )
    if not (ok / "really_mp4.avi").exists():
        jobs.append(dict(path=derived["mp4"], scenes=["box"], scene_frames=[20], seed="bad/mp4", codec=mp4_codec))
    make_clips(jobs)

    target = note(
        "must_fail/truncated.avi", MUST_FAIL, "an AVI of 40 frames cut to 20% of its bytes (its header still says 40)"
    )
    if not target.exists():
        data = derived["truncated"].read_bytes()
        atomic_write_bytes(target, data[: len(data) // 5])
    target = note(
        "must_succeed/really_mp4.avi",
        MUST_SUCCEED,
        f"an MP4 ({'H.264' if mp4_codec == 'libx264' else 'MPEG-4'}) file named .avi",
    )
    if not target.exists():
        os.replace(derived["mp4"], target)
    shutil.rmtree(scratch, ignore_errors=True)

    target = note("must_fail/empty.avi", MUST_FAIL, "empty file (0 bytes)")
    if not target.exists():
        atomic_write_bytes(target, b"")
    target = note("must_fail/not_a_video.avi", MUST_FAIL, "a text file renamed .avi")
    if not target.exists():
        atomic_write_bytes(target, b"This is a plain text file that someone renamed to .avi.\n" * 20)
    target = note("must_fail/audio_only.avi", MUST_FAIL, "audio only (1 s sine, PCM in AVI): no video stream")
    if not target.exists():
        make_audio_only(target)
    target = note(
        "must_succeed/vfr.mkv",
        MUST_SUCCEED,
        "variable frame rate (Matroska; 10 frames 0.1 s apart, then 10 frames 0.04 s apart)",
    )
    if not target.exists():
        make_vfr_clip(target)
    target = note(
        "must_fail/hang.avi",
        MUST_FAIL,
        "a FIFO with no writer: a decoder that opened it would block forever (refused: not a regular file)",
    )
    if not os.path.lexists(target):
        os.mkfifo(target)
    return dict(sorted(corpus.items()))


def make_missing_listed_tree(root: Path, workers: int | None = None) -> str:
    """A small UCF101-layout tree (2 classes x 3 groups x 1 clip) whose lists name a clip that is not there.

    The missing clip is in group 2, so trainlist01.txt, testlist02.txt and trainlist03.txt
    name it. Returns its relative path, as listed: 'Beta/v_Beta_g02_c01.avi'.
    """
    missing = ucf101_name("Beta", 2, 1)
    make_ucf101_tree(
        root,
        {"Alpha": ("bars", "plasma"), "Beta": ("life", "sunset")},
        groups=3,
        clips_per_group=1,
        seed="missing",
        missing=[missing],
        workers=workers,
    )
    return missing


def make_unreadable_tree(root: Path) -> Path:
    """A folder tree root/readable/ok.avi + root/unreadable/locked.avi, the latter chmod 000.

    Returns the path of locked.avi. root bypasses file permissions (CAP_DAC_OVERRIDE), and
    CI runs as root, so there the file reads fine: to exercise the failure, run stage one as
    an unprivileged user, e.g. subprocess.run(args, user=65534, group=65534) as root. For
    that, every directory from / down to root must be traversable by that user (pytest's
    own tmp dirs are mode 0700: use a tempfile.mkdtemp() chmodded 0755), and the store it
    writes to must be writable by it. This function makes root and its folders 0755.
    """
    root = Path(root)
    ok, locked = root / "readable" / "ok.avi", root / "unreadable" / "locked.avi"
    make_clips(
        [
            dict(path=ok, scenes=["bars", "life"], seed="unreadable/ok"),
            dict(path=locked, scenes=["plasma", "box"], seed="unreadable/locked"),
        ]
    )
    for d in (root, ok.parent, locked.parent):
        d.chmod(0o755)
    ok.chmod(0o644)
    locked.chmod(0o000)
    return locked
