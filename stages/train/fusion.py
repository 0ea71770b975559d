"""Several modalities in one classifier: early, late and gated fusion, missing streams, modality dropout.

The features of a joined view sit side by side along D (rgb, then audio: pipeline.api), with
`present (B, M) bool` saying which streams each video has. A video without a sound track is
stored with silence features; those must not be read as a silent video, so wherever a
modality is absent its features never reach the model: a learned missing-modality embedding
stands in for them.

    early   MissingInput (absent modality's frames -> its learned (D_m,) embedding) -> one head
            over the per-step concatenation; every head can read it
    late    one temporal encoder per modality (the head's kind: lstm, gru, attention); an absent
            modality's representation -> its learned (R_m,) embedding; concatenation -> dropout
            -> linear (so the logits are a sum of per-modality linear read-outs)
    gated   late, with context gating over the concatenation before the classifier:
            y = z * sigmoid(W z + b) (Miech et al., 2017, the YouTube-8M winning entry), so
            each feature of one modality is switched by all features of both

Modality dropout (training only, like dropout): each video loses one of its modalities with
probability p for the step, never its last one, so the model learns to classify from either
stream alone and the missing-modality embeddings are trained even where every stored video
has both streams. Everything is elementwise on the device: no host-device sync per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .models import AttentionEncoder, RecurrentEncoder, TemporalClassifier, build_encoder, build_head, valid_mask

# Heads with a temporal encoder that late and gated fusion run once per modality.
ENCODER_HEADS = ("lstm", "gru", "attention")


def effective_fusion(model: str, fusion: str) -> str:
    """The fusion head `model` gets under FUSION=`fusion`: heads without a per-modality encoder read the early input."""
    return fusion if model in ENCODER_HEADS else "early"


def drop_modalities(present: torch.Tensor, p: float) -> torch.Tensor:
    """present (B, M) bool -> (B, M) bool: with probability p a video loses one modality, drawn
    uniformly among the M (a draw on one it lacks changes nothing); never its last one."""
    B, M = present.shape
    hit = torch.rand(B, device=present.device) < p
    which = torch.randint(M, (B,), device=present.device)
    drop = hit[:, None] & (torch.arange(M, device=present.device)[None, :] == which[:, None])
    drop &= present.sum(1, keepdim=True) > 1
    return present & ~drop


class ModalityDropout(nn.Module):
    """drop_modalities in training mode; the identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, present: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0 or present.shape[1] < 2:
            return present
        return drop_modalities(present, self.p)


class MissingInput(nn.Module):
    """Early fusion's input side: an absent modality's frames become its learned embedding.

    dims (M,): D of each modality, side by side along D. Each embedding (D_m,) starts at zero,
    the training mean of standardised features (no evidence either way), and is learned.
    """

    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = list(dims)
        self.embeddings = nn.ParameterList(nn.Parameter(torch.zeros(d)) for d in self.dims)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) standardised; lengths (B,); present (B, M) bool -> (B, T, D), padded frames still zero."""
        valid = valid_mask(lengths, x.shape[1])[..., None].to(x.dtype)  # (B, T, 1)
        parts = [
            torch.where(present[:, m, None, None], part, emb.to(x.dtype) * valid)
            for m, (part, emb) in enumerate(zip(x.split(self.dims, dim=-1), self.embeddings))
        ]
        return torch.cat(parts, dim=-1)


class EarlyFusionHead(nn.Module):
    """MissingInput -> any head over the per-step concatenation of the modalities."""

    def __init__(self, head: nn.Module, dims: list[int]):
        super().__init__()
        self.missing = MissingInput(dims)
        self.head = head

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.head(self.missing(x, lengths, present), lengths)


class ContextGating(nn.Module):
    """y = z * sigmoid(W z + b) over a fused representation z (B, F)."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.sigmoid(self.fc(z))


class LateFusionHead(nn.Module):
    """One encoder per modality -> absent ones' representations replaced by learned embeddings
    -> concatenation (B, sum R_m) -> context gating when `gated` -> dropout -> linear.

    encoders: one per modality, in the order of `dims`, each with `out_dim` R_m. Each
    missing-modality embedding (R_m,) starts at zero and is learned.
    """

    def __init__(
        self,
        encoders: Sequence[RecurrentEncoder | AttentionEncoder],
        dims: list[int],
        num_classes: int,
        gated: bool,
        dropout: float,
    ):
        super().__init__()
        self.dims = list(dims)
        self.encoders = nn.ModuleList(encoders)
        self.missing = nn.ParameterList(nn.Parameter(torch.zeros(e.out_dim)) for e in encoders)
        width = sum(e.out_dim for e in encoders)
        self.gate = ContextGating(width) if gated else None
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) standardised, the modalities side by side; lengths (B,); present (B, M) -> logits (B, C)."""
        reps = []
        for m, (encoder, part) in enumerate(zip(self.encoders, x.split(self.dims, dim=-1))):
            r = encoder(part, lengths)
            reps.append(torch.where(present[:, m, None], r, self.missing[m].to(r.dtype)))
        z = torch.cat(reps, dim=1)
        if self.gate is not None:
            z = self.gate(z)
        return self.fc(self.drop(z))


class FusedClassifier(TemporalClassifier):
    """Standardize + modality dropout (training only) + an early or late fusion head.

    `forward(features, lengths, present)` takes raw features, `classify` standardised ones, as
    TemporalClassifier; present (B, M) bool, None: every modality present.
    """

    def __init__(
        self,
        head: nn.Module,
        dims: list[int],
        modality_dropout: float,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ):
        super().__init__(head, sum(dims), mean, std)
        self.dims = list(dims)
        self.modality_dropout = ModalityDropout(modality_dropout)

    def classify(self, x: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) standardised, padded frames zero; lengths (B,); present (B, M) -> logits (B, C) float32."""
        if present is None:
            present = torch.ones((x.shape[0], len(self.dims)), dtype=torch.bool, device=x.device)
        return self.head(x, lengths, self.modality_dropout(present)).float()


def build_fused(
    model: str,
    dims: list[int],
    frames: int,
    num_classes: int,
    fusion: str,
    modality_dropout: float,
    *,
    hidden: int = 512,
    layers: int = 2,
    bidirectional: bool = False,
    dropout: float = 0.5,
    proj: int = 0,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> FusedClassifier:
    """A FusedClassifier of head `model` over modalities `dims` (D_m each); fusion early, late or gated
    (late and gated: lstm, gru, attention only); mean, std (sum D_m,) training statistics."""
    if fusion == "early":
        head: nn.Module = EarlyFusionHead(
            build_head(
                model,
                sum(dims),
                frames,
                num_classes,
                hidden=hidden,
                layers=layers,
                bidirectional=bidirectional,
                dropout=dropout,
                proj=proj,
            ),
            dims,
        )
    elif model in ENCODER_HEADS and fusion in ("late", "gated"):
        encoders = [build_encoder(model, d, hidden, layers, bidirectional, dropout, proj) for d in dims]
        head = LateFusionHead(encoders, dims, num_classes, fusion == "gated", dropout)
    else:
        raise ValueError(
            f"--fusion (FUSION=): {fusion!r} fusion needs one of {', '.join(ENCODER_HEADS)}, not {model!r}"
        )
    return FusedClassifier(head, dims, modality_dropout, mean, std)
