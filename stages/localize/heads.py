"""Localization heads over a video's rows: per-step classes, and segments decoded from them.

Every head takes x (B, T, D) standardised rows (padded steps zero), lengths (B,) and present
(B, M) (which modalities each video has: several modalities are read side by side along D,
an absent one replaced by its learned embedding and dropped at random in training, as stage
two's early fusion does: stages.train.fusion). Time is measured in steps: step k of a video
stands for [k, k+1) (data.py turns seconds into steps and back), and a ground-truth segment is
(start, end, class) in steps.

    actionformer  ActionFormer's manner (Zhang et al., 2022): dilated residual convolutions
                  (the context that tells classes apart which look alike in every single step),
                  then a temporal feature pyramid (strided convolutions, strides 1, 2, 4, ...);
                  at each pyramid point, class scores (sigmoid focal loss) and the distances to
                  the segment's start and end (1-D GIoU loss), each level regressing segments of
                  its own size range; decoded by Gaussian soft-NMS per class
    tagger        the per-step baseline: one MLP per step, no context; a class's segments are
                  its runs of steps scored above TAG_THRESHOLD= (score: the run's mean)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from stages.train.fusion import MissingInput, ModalityDropout
from stages.train.models import ChannelNorm, Standardize, valid_mask

# Targets: a pyramid point is positive for a segment when within this many of its strides of the
# segment's centre (ActionFormer's centre sampling), and the segment's larger distance from it
# (in steps) falls in its level's range: [0, 4) at stride 1, [4, 8) at 2, [8, 16) at 4, ...
CENTRE_RADIUS = 1.5
FIRST_RANGE = 4.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
PRIOR = 0.01  # initial class probability: the classifier bias starts at logit(PRIOR), as in RetinaNet
# Decoding: candidates scored above this, at most this many per video, go into soft-NMS.
MIN_SCORE = 1e-3
PRE_NMS = 2000
NMS_SIGMA = 0.5  # Gaussian soft-NMS: a score decays by exp(-tIoU^2 / sigma) per better overlapping segment
CONTEXT_DILATIONS = (1, 2, 4)

# One ground-truth or predicted segment in steps: (start, end, class[, score]).
StepSegments = list[tuple[float, float, int]]


class ResidualConv(nn.Module):
    """Pre-norm residual block: ChannelNorm -> Conv1d (kernel 3, `dilation`) -> ReLU -> dropout; padding re-zeroed."""

    def __init__(self, width: int, dilation: int, dropout: float):
        super().__init__()
        self.block = nn.Sequential(
            ChannelNorm(width),
            nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h (B, W, T), mask (B, 1, T) float -> (B, W, T)."""
        return (h + self.block(h)) * mask


class InputSide(nn.Module):
    """Standardise (training statistics), then the early-fusion input of several modalities."""

    def __init__(self, dims: list[int], modality_dropout: float, mean: torch.Tensor | None, std: torch.Tensor | None):
        super().__init__()
        self.standardize = Standardize(sum(dims), mean, std)
        self.missing = MissingInput(dims) if len(dims) > 1 else None
        self.modality_dropout = ModalityDropout(modality_dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D) raw rows -> (B, T, D) float32 standardised, padded steps zero."""
        x = self.standardize(x, lengths)
        if self.missing is None:
            return x
        if present is None:
            present = torch.ones((x.shape[0], len(self.missing.dims)), dtype=torch.bool, device=x.device)
        return self.missing(x, lengths, self.modality_dropout(present))


class Tagger(nn.Module):
    """The per-step baseline: MLP per step -> class logits (B, T, C); no step sees another."""

    def __init__(
        self,
        dims: list[int],
        num_classes: int,
        hidden: int,
        dropout: float,
        modality_dropout: float = 0.0,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ):
        super().__init__()
        self.inp = InputSide(dims, modality_dropout, mean, std)
        self.mlp = nn.Sequential(
            nn.Linear(sum(dims), hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor | None = None) -> dict:
        return {"logits": self.mlp(self.inp(x, lengths, present)), "mask": valid_mask(lengths, x.shape[1])}

    def loss(self, out: dict, truth: list[StepSegments]) -> torch.Tensor:
        """Per-step binary cross-entropy against each class's membership (a step is in a segment when its centre is)."""
        logits, mask = out["logits"], out["mask"]
        target = torch.zeros_like(logits)
        centres = torch.arange(logits.shape[1], device=logits.device) + 0.5
        for b, segments in enumerate(truth):
            for start, end, c in segments:
                target[b, (centres >= start) & (centres <= end), c] = 1.0
        per_step = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        return (per_step * mask).sum() / mask.sum().clamp(min=1)

    def decode(
        self, out: dict, b: int, length: int, threshold: float, keep: int
    ) -> list[tuple[float, float, int, float]]:
        """Video b's segments in steps: each class's runs of steps above `threshold`, scored by their mean."""
        scores = torch.sigmoid(out["logits"][b, :length]).float().cpu().numpy()  # (T, C)
        found = []
        for c in range(scores.shape[1]):
            above = np.concatenate([[False], scores[:, c] > threshold, [False]])
            edges = np.flatnonzero(np.diff(above.astype(np.int8)))
            for s, e in zip(edges[::2], edges[1::2]):
                found.append((float(s), float(e), c, float(scores[s:e, c].mean())))
        return sorted(found, key=lambda f: -f[3])[:keep]


class Scale(nn.Module):
    """A learned scalar per pyramid level on the regression output (FCOS, ActionFormer)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class ActionFormerLite(nn.Module):
    """Context convolutions -> feature pyramid -> shared class and distance heads (module docstring).

    forward: x (B, T, D) raw rows, lengths (B,), present (B, M) -> {"logits": [(B, T_l, C)],
    "distances": [(B, T_l, 2)] in strides, "masks": [(B, T_l)]}, T_l = ceil(T / 2^l).
    """

    def __init__(
        self,
        dims: list[int],
        num_classes: int,
        hidden: int,
        levels: int,
        dropout: float,
        modality_dropout: float = 0.0,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ):
        super().__init__()
        self.levels = levels
        self.inp = InputSide(dims, modality_dropout, mean, std)
        self.embed = nn.Conv1d(sum(dims), hidden, 3, padding=1)
        self.context = nn.ModuleList(ResidualConv(hidden, d, dropout) for d in CONTEXT_DILATIONS)
        self.down = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, stride=2, padding=1) for _ in range(levels - 1))
        self.level_blocks = nn.ModuleList(ResidualConv(hidden, 1, dropout) for _ in range(levels))
        self.cls_tower = nn.ModuleList(ResidualConv(hidden, 1, dropout) for _ in range(2))
        self.reg_tower = nn.ModuleList(ResidualConv(hidden, 1, dropout) for _ in range(2))
        self.cls_out = nn.Conv1d(hidden, num_classes, 3, padding=1)
        self.reg_out = nn.Conv1d(hidden, 2, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(levels))
        with torch.no_grad():  # the classifier starts at PRIOR for every class
            self.cls_out.bias.fill_(-math.log((1 - PRIOR) / PRIOR))  # type: ignore[union-attr]  # Conv1d has a bias by default

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor | None = None) -> dict:
        x = self.inp(x, lengths, present)
        mask = valid_mask(lengths, x.shape[1])
        m = mask[:, None, :].to(x.dtype)
        h = F.relu(self.embed(x.transpose(1, 2))) * m
        for block in self.context:
            h = block(h, m)
        logits, distances, masks = [], [], []
        for level in range(self.levels):
            if level:
                h = F.relu(self.down[level - 1](h))
                mask = mask[:, ::2]
                m = mask[:, None, :].to(h.dtype)
                h = h * m
            h = self.level_blocks[level](h, m)
            c, r = h, h
            for cb, rb in zip(self.cls_tower, self.reg_tower):
                c, r = cb(c, m), rb(r, m)
            logits.append(self.cls_out(c).transpose(1, 2))
            distances.append(F.relu(self.scales[level](self.reg_out(r))).transpose(1, 2))
            masks.append(mask)
        return {"logits": logits, "distances": distances, "masks": masks}

    # ------------------------------------------------------------ targets and loss
    def targets(self, out: dict, truth: list[StepSegments]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level: class targets (B, T_l, C) float and distance targets (B, T_l, 2) in strides (-1: negative)."""
        result = []
        for level, logits in enumerate(out["logits"]):
            stride = 2**level
            lo = 0.0 if level == 0 else FIRST_RANGE * 2 ** (level - 1)
            hi = math.inf if level == self.levels - 1 else FIRST_RANGE * 2**level
            cls_t = torch.zeros_like(logits)
            reg_t = torch.full((*logits.shape[:2], 2), -1.0, device=logits.device)
            centres = (torch.arange(logits.shape[1], device=logits.device) + 0.5) * stride
            for b, segments in enumerate(truth):
                best = torch.full((logits.shape[1],), math.inf, device=logits.device)
                for start, end, c in segments:
                    left, right = centres - start, end - centres
                    far = torch.maximum(left, right)
                    near_centre = (centres - (start + end) / 2).abs() <= CENTRE_RADIUS * stride
                    pos = (left >= 0) & (right >= 0) & near_centre & (far >= lo) & (far < hi) & (end - start < best)
                    best = torch.where(pos, torch.full_like(best, end - start), best)
                    cls_t[b, pos] = 0.0
                    cls_t[b, pos, c] = 1.0
                    reg_t[b, pos] = torch.stack([left[pos], right[pos]], 1) / stride
            result.append((cls_t, reg_t))
        return result

    def loss(self, out: dict, truth: list[StepSegments]) -> torch.Tensor:
        """Sigmoid focal loss over valid points + 1-D GIoU loss over positives, each per positive point."""
        cls_loss = torch.zeros((), device=out["logits"][0].device)
        reg_loss = torch.zeros((), device=cls_loss.device)
        positives = torch.zeros((), device=cls_loss.device)
        for (cls_t, reg_t), logits, dist, mask in zip(
            self.targets(out, truth), out["logits"], out["distances"], out["masks"]
        ):
            valid = mask[..., None].to(logits.dtype)
            focal = sigmoid_focal_loss(logits.float(), cls_t) * valid
            cls_loss = cls_loss + focal.sum()
            pos = (reg_t[..., 0] >= 0) & mask
            positives = positives + pos.sum()
            if pos.any():
                reg_loss = reg_loss + (1 - giou_1d(dist[pos].float(), reg_t[pos])).sum()
        norm = positives.clamp(min=1)
        return (cls_loss + reg_loss) / norm

    # ------------------------------------------------------------ decoding
    def decode(
        self, out: dict, b: int, length: int, threshold: float, keep: int
    ) -> list[tuple[float, float, int, float]]:
        """Video b's segments in steps, best first: every point's classes above MIN_SCORE, the PRE_NMS best
        of them, Gaussian soft-NMS per class, the `keep` best. (`threshold` is the tagger's; unused here.)"""
        cands = []
        for level, (logits, dist) in enumerate(zip(out["logits"], out["distances"])):
            stride = 2**level
            n = math.ceil(length / stride)
            scores = torch.sigmoid(logits[b, :n].float())  # (n, C)
            centres = (torch.arange(n, device=scores.device) + 0.5) * stride
            starts = (centres - dist[b, :n, 0].float() * stride).clamp(min=0)
            ends = (centres + dist[b, :n, 1].float() * stride).clamp(max=length)
            point, cls = torch.nonzero(scores > MIN_SCORE, as_tuple=True)
            cands.append(torch.stack([starts[point], ends[point], cls.float(), scores[point, cls]], 1))
        table = torch.cat(cands).cpu().numpy().astype(np.float64)
        table = table[table[:, 1] > table[:, 0]]
        table = table[np.argsort(-table[:, 3], kind="stable")[:PRE_NMS]]
        kept = [row for c in np.unique(table[:, 2]) for row in soft_nms(table[table[:, 2] == c], keep)]
        kept.sort(key=lambda r: -r[3])
        return [(float(s), float(e), int(c), float(p)) for s, e, c, p in kept[:keep]]


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise focal loss (Lin et al., 2017), alpha FOCAL_ALPHA, gamma FOCAL_GAMMA; logits, target (..., C)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = FOCAL_ALPHA * target + (1 - FOCAL_ALPHA) * (1 - target)
    return alpha_t * ce * (1 - p_t) ** FOCAL_GAMMA


def giou_1d(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of segments given as distances (left, right) from one point: pred, target (n, 2) -> (n,)."""
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = pred.sum(1) + target.sum(1) - inter
    hull = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 1], target[:, 1])
    iou = inter / union.clamp(min=1e-6)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def soft_nms(rows: np.ndarray, keep: int) -> list[tuple[float, float, float, float]]:
    """Gaussian soft-NMS of one class's candidates rows (n, 4): start, end, class, score -> the kept rows,
    best first: the best is kept, every other's score decays by exp(-tIoU^2 / NMS_SIGMA), again."""
    rows = rows.copy()
    kept: list[tuple[float, float, float, float]] = []
    while len(rows) and len(kept) < keep:
        k = int(np.argmax(rows[:, 3]))
        best = rows[k]
        if best[3] < MIN_SCORE:
            break
        kept.append((best[0], best[1], best[2], best[3]))
        rows = np.delete(rows, k, axis=0)
        inter = (np.minimum(rows[:, 1], best[1]) - np.maximum(rows[:, 0], best[0])).clip(0)
        iou = inter / ((rows[:, 1] - rows[:, 0]) + (best[1] - best[0]) - inter)
        rows[:, 3] *= np.exp(-(iou**2) / NMS_SIGMA)
    return kept


def build_head(
    spec: dict, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> Tagger | ActionFormerLite:
    """The head a run's spec names (run.model_spec), statistics given or (for a checkpoint to load) placeholders."""
    common = {"mean": mean, "std": std, "modality_dropout": spec["modality_dropout"]}
    if spec["name"] == "tagger":
        return Tagger(spec["input_dims"], spec["num_classes"], spec["hidden"], spec["dropout"], **common)
    return ActionFormerLite(
        spec["input_dims"], spec["num_classes"], spec["hidden"], spec["levels"], spec["dropout"], **common
    )
