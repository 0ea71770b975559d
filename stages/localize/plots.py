"""A scored video's timeline: its ground truth against the predicted segments, one row per class."""

from __future__ import annotations

from pathlib import Path

# Predictions drawn: those scored at least this (soft-NMS keeps many faint ones; they would hide the rest).
DRAWN_SCORE = 0.2


def timeline(
    path: Path,
    title: str,
    duration: float,
    classes: list[str],
    truth: list[tuple[float, float, str]],
    predicted: list[dict],
) -> None:
    """PNG: per class, the ground truth (s) as a dark bar and each prediction scored >= DRAWN_SCORE
    as a bar below it, its opacity the score."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.6 + 0.55 * len(classes)))
    for row, name in enumerate(classes):
        y = len(classes) - 1 - row
        for s, e, label in truth:
            if label == name:
                ax.broken_barh([(s, e - s)], (y + 0.05, 0.4), color="black")
        for p in predicted:
            if p["label"] == name and p["score"] >= DRAWN_SCORE:
                s, e = p["segment"]
                ax.broken_barh([(s, e - s)], (y - 0.45, 0.4), color="tab:orange", alpha=min(1.0, float(p["score"])))
    ax.set_yticks(range(len(classes)), list(reversed(classes)), fontsize=8)
    ax.set_xlim(0, duration)
    ax.set_xlabel("time (s): ground truth above each line, predictions (opacity: score) below")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
