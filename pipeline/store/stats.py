"""Standardisation statistics of a training split: per-dimension mean and std over the valid
frames, and (x - mean) / std. The store's one module that needs torch: kept apart so that
the command line and the store's commands start without it (docs/bench.md, "Figures behind
the code").

    feature_stats(chunks, device, dims) -> mean, std (D,)    Chan's combination, chunk by chunk
    standardize(features, lengths, mean, std, dtype)        padded frames exactly zero
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..errors import ReaderError


class Moments:
    """Count, mean and sum of squared deviations per dimension (D,) float64 over the valid frames
    added chunk by chunk: each chunk is reduced with its own mean first and the partial results
    are combined with Chan's formula. ResNet features share a large common component, and the
    naive E[x^2] - E[x]^2 would cancel away the small variance that matters."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None  # None until the first valid frame
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """x (n, T, D) any float dtype; lengths (n,) int on x's device: frames past lengths[i] do not count."""
        valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        for start in range(0, x.shape[0], 1024):  # bounded float32 working copy
            frames = x[start : start + 1024][valid[start : start + 1024]].float()
            if len(frames) == 0:
                continue
            n = frames.shape[0]
            mu = frames.mean(0, dtype=torch.float64)
            d2 = ((frames - mu.float()) ** 2).sum(0, dtype=torch.float64)
            if self.mean is None or self.m2 is None:
                self.n, self.mean, self.m2 = n, mu, d2
                continue
            delta = mu - self.mean
            total = self.n + n
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + d2 + delta**2 * (self.n * n / total)
            self.n = total

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, std (D,) float32 on the CPU; std 1 where a dimension is constant."""
        if self.mean is None or self.m2 is None:
            raise ValueError("no valid frames to compute statistics over")
        std = (self.m2 / max(self.n - 1, 1)).sqrt()
        # A constant dimension (e.g. a ReLU that never fires) carries nothing; dividing by
        # ~0 would blow its rounding noise up to O(1).
        std = torch.where(std > 1e-6 * (1 + self.mean.abs()), std, torch.ones_like(std))
        return self.mean.float().cpu(), std.float().cpu()


def feature_stats(
    chunks: Iterable[tuple], device: torch.device | str = "cpu", dims: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over the valid frames of all chunks, computed on `device`.

    chunks: (features (n, T, D) float16, lengths (n,) int), or with a third item present
    (n, M) bool for features that hold M modalities side by side, `dims` (M,) wide. A
    modality's dimensions count only the videos where it is present: an absent sound
    track's stored silence is not a sample of sound. Returns mean, std (D,) float32 on the CPU.
    """
    moments: list[Moments] = []
    for chunk in chunks:
        feats, lengths = chunk[0], chunk[1]
        widths = dims or [feats.shape[-1]]
        moments = moments or [Moments() for _ in widths]
        x = torch.from_numpy(np.ascontiguousarray(feats)).to(device)
        lengths = torch.as_tensor(lengths, device=x.device)
        present = torch.as_tensor(chunk[2], device=x.device) if len(chunk) > 2 else None
        for m, (part, acc) in enumerate(zip(x.split(widths, dim=-1), moments)):
            acc.add(part, lengths if present is None else lengths * present[:, m])
    if not moments or any(acc.mean is None for acc in moments):
        raise ReaderError(
            "no valid frame to compute standardisation statistics from (an empty training part, or a modality "
            "no training video has)"
        )
    mean, std = zip(*(acc.result() for acc in moments))
    return torch.cat(mean), torch.cat(std)


def standardize(
    features: torch.Tensor, lengths: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """(x - mean) / std with padded frames set to exactly zero.

    features (n, T, D) any float dtype; lengths (n,) int; mean, std (D,) float32 on the
    same device. Returns (n, T, D) `dtype`.
    """
    x = (features.float() - mean) / std
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x.mul_(valid[..., None]).to(dtype)
