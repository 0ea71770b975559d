"""Temporal heads over per-frame features, and the standardisation in front of them.

Every head takes `x (B, T, D)` standardised features with padded frames zeroed and
`lengths (B,)` valid frames before padding, and returns logits `(B, C)`. Padded frames
never count: recurrent heads read the state at the last valid frame (causal layers never
see the padding after it; bidirectional layers run on packed sequences), pooling heads
average or attend over valid frames only, and the transformer masks padded keys.

    mean         temporal mean over valid frames -> linear: the baseline
    lstm, gru    recurrent stack -> state at the last valid frame -> linear
    attention    recurrent stack -> learned attention pooling over its outputs -> linear
    fusion       concat(mean CNN feature, LSTM last state) -> linear (the seed design)
    tcn          residual dilated temporal convolutions -> masked mean -> linear
    transformer  pre-norm encoder with a key padding mask -> summary token -> linear

The lstm, gru and attention heads are an encoder (clip -> one vector: RecurrentEncoder,
AttentionEncoder) plus dropout and a linear layer; late and gated fusion of several
modalities (fusion.py) run one such encoder per modality.

Why standardise: ResNet-50 features share a large component common to all frames
(cosine similarity ~0.9997 between unrelated videos with random weights); per-dimension
standardisation with training statistics removes it, so what differs between frames
reaches the head at unit scale instead of drowning.

The LSTM on CPU runs through `lstm_layer`, a hand-written layer with the same parameters
(and state-dict keys) as `nn.LSTM`: one GEMM for the input projection of all T steps,
bf16 GEMMs with fp32 cell state, and BPTT whose weight gradients are single large GEMMs.
It is about twice as fast as `nn.LSTM` on CPU; on CUDA `nn.LSTM` (cuDNN) is used.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn as nn

from pipeline.store.stats import standardize

from .config import TrainConfig

HEADS = TrainConfig.HEADS
# Dropout inside convolution / attention blocks is capped here: rates that suit a
# classifier's input (0.5) keep these blocks from learning at all.
INNER_DROPOUT = 0.1
# Initial scale of the transformer's position embedding (std of N(0, 1) * scale).
POSITION_SCALE = 0.5


# ---------------------------------------------------------------- masks and pooling
def valid_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T) bool, True on the first lengths[b] frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames. x (B, T, F) with padded frames zero; lengths (B,). Returns (B, F)."""
    mask = valid_mask(lengths, x.shape[1]).to(x.dtype)
    return torch.einsum("btf,bt->bf", x, mask) / lengths.clamp(min=1)[:, None].to(x.dtype)


def last_valid(outputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """outputs (B, T, F) -> (B, F): the output at frame lengths[b] - 1 of each sequence."""
    idx = (lengths - 1).clamp(min=0).to(outputs.device)
    return outputs[torch.arange(outputs.shape[0], device=outputs.device), idx]


class Standardize(nn.Module):
    """(x - mean) / std per dimension with training-set statistics, padded frames zeroed.

    mean, std (D,) float32 buffers, saved in the checkpoint with the head.
    """

    mean: torch.Tensor  # register_buffer'd: declared for the type checker, which sees only nn.Module's __getattr__
    std: torch.Tensor

    def __init__(self, dim: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(dim) if std is None else std.float().clone())

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) raw features (float16 from the store) -> (B, T, D) float32.

        The same function the reader standardises training data with, so a prediction
        sees exactly what training saw."""
        return standardize(x, lengths, self.mean, self.std, torch.float32)


# ---------------------------------------------------------------- the CPU LSTM layer
class BufferPool:
    """Reusable buffers for lstm_layer, keyed by (shape, dtype, device).

    A fresh 64 MB tensor costs more in page faults (the kernel zeroes every page) than
    the arithmetic done on it (docs/bench.md, "Figures behind the code").
    A buffer goes back to the pool only when nothing can read it any more: the saved
    activations when their autograd graph is freed (see SavedBuffers), the rest on return.
    """

    def __init__(self) -> None:
        self.free: dict[tuple, list[torch.Tensor]] = {}
        self.lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        with self.lock:
            pool = self.free.get((tuple(shape), dtype, device))
            if pool:
                return pool.pop()
        return torch.empty(shape, dtype=dtype, device=device)

    def give(self, *tensors: torch.Tensor) -> None:
        with self.lock:
            for t in tensors:
                self.free.setdefault((tuple(t.shape), t.dtype, t.device), []).append(t)

    def clear(self) -> None:
        """Drop every pooled buffer (after a run: a UCF101-sized LSTM pools hundreds of MB)."""
        with self.lock:
            self.free.clear()


LSTM_BUFFERS = BufferPool()


class SavedBuffers:
    """Buffers saved for a backward pass; returned to the pool when the graph dies."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __del__(self) -> None:
        if LSTM_BUFFERS is not None:  # None once the interpreter is shutting down
            LSTM_BUFFERS.give(*self.tensors)


class LSTMLayerFunction(torch.autograd.Function):
    """One unidirectional LSTM layer over left-aligned sequences, with hand-written BPTT.

    forward(x (T, B, D), w_ih (4H, D), b (4H,) = b_ih + b_hh, w_hh (4H, H)) -> h (T, B, H).
    GEMMs run in x's dtype (bf16 under CPU autocast) with float32 accumulation;
    activations and the cell state stay float32; parameters are float32. Gate order
    i, f, g, o, as in nn.LSTM. Padding needs no care: the state at frame t depends only
    on frames <= t, and the caller reads frame lengths-1.

    Why by hand: autograd over a per-step cell issues ~40 small element-wise kernels and a
    small weight-gradient GEMM per step, and computes dx even for the (constant) features.
    Here the input projection of all T steps is one GEMM, the forward stores per step the
    local derivatives BPTT needs (q: gate-derivative products, k: dc/dh), so the backward
    is 5 element-wise kernels and one GEMM per step, dW_ih and dW_hh are one GEMM each,
    and dx is computed only when x requires a gradient.
    """

    @staticmethod
    def forward(
        ctx: Any,  # autograd's context: the attributes forward sets are read back in backward
        x: torch.Tensor,
        w_ih: torch.Tensor,
        b: torch.Tensor,
        w_hh: torch.Tensor,
    ) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            T, B, D = x.shape
            G, H, dev, cd = w_ih.shape[0], w_hh.shape[1], x.device, x.dtype
            train = any(ctx.needs_input_grad)
            w_ih_c, w_hh_c = w_ih.to(cd), w_hh.to(cd)
            # tanh(z) = 2 sigmoid(2z) - 1: with the g rows doubled, one sigmoid covers all four
            # gates. torch's tanh is a slow path on CPU (docs/bench.md, "Figures behind the code"), and multiplying by 2 is exact.
            scale = torch.ones(G, 1, dtype=cd, device=dev)
            scale[2 * H : 3 * H] = 2
            w_hh_t = (w_hh_c * scale).t()
            gx = LSTM_BUFFERS.take((T, B, G), cd, dev)
            torch.mm(x.reshape(T * B, D), (w_ih_c * scale).t(), out=gx.view(T * B, G)).add_(
                b.to(cd) * scale[:, 0]
            )  # addmm's bias copy is slower
            hs = x.new_empty((T, B, H))
            if train:
                forget = LSTM_BUFFERS.take((T, B, H), torch.float32, dev)  # f_t: dc_{t-1} = dc_t f_t
                q = LSTM_BUFFERS.take((T, B, G), torch.float32, dev)  # [g i', c_prev f', i g', tanh(c) o']
                k = LSTM_BUFFERS.take((T, B, H), torch.float32, dev)  # o (1 - tanh(c)^2): dc_t += dh_t k_t
            pre = LSTM_BUFFERS.take((B, G), cd, dev)
            a = LSTM_BUFFERS.take((B, G), torch.float32, dev)
            c, c_prev, tc = (torch.zeros((B, H), dtype=torch.float32, device=dev) for _ in range(3))
            for t in range(T):
                src = gx[0] if t == 0 else torch.addmm(gx[t], hs[t - 1], w_hh_t, out=pre)  # h_{-1} = 0
                torch.sigmoid(src, out=a)
                i, f, g, o = a.split(H, dim=1)
                g.mul_(2).sub_(1)  # = tanh of the g pre-activation (its rows were doubled)
                torch.mul(f, c_prev, out=c).addcmul_(i, g)
                torch.sigmoid(torch.mul(c, 2, out=tc), out=tc).mul_(2).sub_(1)  # tanh(c)
                torch.mul(o, tc, out=hs[t])
                if train:
                    forget[t].copy_(f)
                    qt = torch.addcmul(a, a, a, value=-1, out=q[t])  # s (1 - s): sigmoid derivative
                    qi, qf, qg, qo = qt.split(H, dim=1)
                    torch.addcmul(torch.ones_like(g), g, g, value=-1, out=qg)  # 1 - g^2: tanh derivative
                    qi.mul_(g)
                    qf.mul_(c_prev)
                    qg.mul_(i)
                    qo.mul_(tc)
                    torch.addcmul(o, o, torch.mul(tc, tc, out=c_prev), value=-1, out=k[t])  # c_prev is spent: scratch
                c, c_prev = c_prev, c  # the spent buffer becomes the next step's c
            LSTM_BUFFERS.give(gx, pre, a)
        if train:
            ctx.save_for_backward(x, hs, w_ih_c, w_hh_c)
            ctx.saved_buffers = SavedBuffers(forget, q, k)
        return hs

    @staticmethod
    def backward(
        ctx: Any, grad_h: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        x, hs, w_ih_c, w_hh_c = ctx.saved_tensors
        forget, q, k = ctx.saved_buffers.tensors
        T, B, G = q.shape
        H, cd = G // 4, hs.dtype
        d_pre = LSTM_BUFFERS.take((T, B, G), cd, q.device)  # dL/d(gates before activation)
        dh = torch.zeros((B, H), dtype=torch.float32, device=q.device)
        dc = torch.zeros_like(dh)
        for t in range(T - 1, -1, -1):
            if t == T - 1:
                dh.copy_(grad_h[t])
            else:
                torch.add(grad_h[t], torch.mm(d_pre[t + 1], w_hh_c), out=dh)
            dc.addcmul_(dh, k[t])
            # d_pre[i, f, g] = dc q[i, f, g];  d_pre[o] = dh q[o]
            torch.mul(q[t, :, : 3 * H].view(B, 3, H), dc[:, None, :], out=d_pre[t, :, : 3 * H].view(B, 3, H))
            torch.mul(q[t, :, 3 * H :], dh, out=d_pre[t, :, 3 * H :])
            dc.mul_(forget[t])
        flat = d_pre.view(T * B, G)
        # dW_hh = sum_t d_pre[t]^T h[t-1] (h[-1] = 0) and dW_ih = sum_t d_pre[t]^T x[t]: one GEMM each
        d_w_hh = torch.mm(d_pre[1:].reshape(-1, G).t(), hs[:-1].reshape(-1, H)).float()
        d_w_ih = torch.mm(flat.t(), x.reshape(T * B, -1)).float() if ctx.needs_input_grad[1] else None
        d_b = (
            flat.sum(0).float() if ctx.needs_input_grad[2] else None
        )  # accumulates in float32 anyway; dtype= would copy
        d_x = torch.mm(flat, w_ih_c).view(T, B, -1) if ctx.needs_input_grad[0] else None
        LSTM_BUFFERS.give(d_pre)  # nothing returned aliases it
        return d_x, d_w_ih, d_b, d_w_hh


def lstm_layer(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """x (T, B, D) time-major -> h (T, B, H); parameters laid out as in nn.LSTM.

    Under CPU autocast the GEMMs run in its dtype (bf16), otherwise in x's dtype.
    """
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    return LSTMLayerFunction.apply(x, w_ih, b_ih + b_hh, w_hh)


# ---------------------------------------------------------------- recurrent stack
def locked_dropout(x: torch.Tensor, p: float, training: bool, time_dim: int) -> torch.Tensor:
    """Dropout with one mask per sequence and channel, shared over time (variational dropout).

    The recommended dropout between recurrent layers (Gal & Ghahramani, 2016), and on CPU
    far cheaper than per-element masks, T times fewer random draws (docs/bench.md, "Figures behind the code").
    x (T, B, F) with time_dim 0, or (B, T, F) with time_dim 1.
    """
    if not training or p <= 0:
        return x
    shape = list(x.shape)
    shape[time_dim] = 1
    keep = torch.rand(shape, device=x.device) >= p
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


class Recurrent(nn.Module):
    """LSTM or GRU layers, variational dropout between them, optional learned input projection.

    proj > 0 maps the D-dim features to `proj` dims with one shared linear layer first
    (a low-rank input matrix: for D = 2048 it removes most of the first layer's cost,
    and it regularises on small sets).
    forward: x (B, T, D), lengths (B,) -> outputs (B, T, H * dirs) zero at padding (None
    unless asked for), last (B, H * dirs): the state at each sequence's last valid frame
    (for a backward direction: its state after reading the whole valid sequence).
    """

    def __init__(
        self, kind: str, input_dim: int, hidden: int, layers: int, bidirectional: bool, dropout: float, proj: int = 0
    ):
        super().__init__()
        if kind not in ("lstm", "gru"):
            raise ValueError(f"recurrent kind must be lstm or gru, got {kind!r}")
        self.kind, self.dropout, self.bidirectional = kind, dropout, bidirectional
        self.proj = nn.Linear(input_dim, proj) if proj else None
        self.out_dim = hidden * (2 if bidirectional else 1)
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        # One module per layer, so dropout between layers is ours on every device.
        self.layers = nn.ModuleList(
            rnn(
                (proj or input_dim) if k == 0 else self.out_dim,
                hidden,
                1,
                batch_first=True,
                bidirectional=bidirectional,
            )
            for k in range(layers)
        )

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, outputs: bool = False
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        if self.proj is not None:
            x = self.proj(x)
        if self.kind == "lstm" and not self.bidirectional and x.device.type == "cpu":
            h = self.run_cpu_lstm(x.transpose(0, 1))  # time-major through all layers: no transposes between them
            last = h[(lengths - 1).clamp(min=0), torch.arange(h.shape[1])]
            h = h.transpose(0, 1)
        else:
            h = x
            for k, layer in enumerate(self.layers):
                h = self.run_layer(layer, locked_dropout(h, self.dropout, self.training, 1) if k else h, lengths)
            half = self.out_dim // 2
            last = (
                last_valid(h, lengths)
                if not self.bidirectional
                else torch.cat([last_valid(h[..., :half], lengths), h[:, 0, half:]], 1)
            )
        if not outputs:
            return None, last
        return h * valid_mask(lengths, h.shape[1])[..., None].to(h.dtype), last

    def run_layer(self, layer: nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One nn.LSTM/nn.GRU layer: x (B, T, F) -> (B, T, H * dirs)."""
        if not self.bidirectional:
            return layer(x)[0]  # causal: frames after lengths-1 cannot reach it
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(layer(packed)[0], batch_first=True, total_length=x.shape[1])
        return out

    def run_cpu_lstm(self, h: torch.Tensor) -> torch.Tensor:
        """h (T, B, F) time-major -> (T, B, H) through lstm_layer, variational dropout between layers."""
        for k, layer in enumerate(self.layers):
            assert isinstance(layer, nn.LSTM), "run_cpu_lstm runs LSTM layers only"
            if k:
                h = locked_dropout(h, self.dropout, self.training, 0)
            # nn.LSTM registers its weights by name at run time: the stubs see only Module.__getattr__
            h = lstm_layer(
                h,
                layer.weight_ih_l0,  # type: ignore[arg-type]
                layer.weight_hh_l0,  # type: ignore[arg-type]
                layer.bias_ih_l0,  # type: ignore[arg-type]
                layer.bias_hh_l0,  # type: ignore[arg-type]
            )
        return h


# ---------------------------------------------------------------- encoders: a clip -> one vector
class RecurrentEncoder(nn.Module):
    """LSTM/GRU: x (B, T, D), lengths (B,) -> the state at the last valid frame (B, out_dim)."""

    def __init__(
        self, kind: str, input_dim: int, hidden: int, layers: int, bidirectional: bool, dropout: float, proj: int
    ):
        super().__init__()
        self.rnn = Recurrent(kind, input_dim, hidden, layers, bidirectional, dropout, proj)
        self.out_dim = self.rnn.out_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.rnn(x, lengths)[1]


class AttentionEncoder(nn.Module):
    """LSTM outputs -> learned attention pooling over valid frames, beside the last state (B, out_dim).

    score_t = v^T tanh(W o_t + b); weights = softmax over valid t; pooled = sum_t w_t o_t;
    out = [pooled, o_last]. The LSTM is causal, so o_t has seen frames <= t only: pooling
    alone weighs partial views of the clip, and on the temporal-order set (classes that
    differ only in scene order) it reached 0.77 top-1 where the LSTM reached 1.0. With the
    last state beside it, 1.0 (CPU, 20 epochs, seed 0).
    """

    def __init__(self, input_dim: int, hidden: int, layers: int, bidirectional: bool, dropout: float, proj: int):
        super().__init__()
        self.rnn = Recurrent("lstm", input_dim, hidden, layers, bidirectional, dropout, proj)
        self.score = nn.Sequential(nn.Linear(self.rnn.out_dim, hidden // 2), nn.Tanh(), nn.Linear(hidden // 2, 1))
        self.out_dim = 2 * self.rnn.out_dim

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        outputs, last = self.rnn(x, lengths, outputs=True)
        scores = self.score(outputs).squeeze(-1).float()  # (B, T)
        scores = scores.masked_fill(~valid_mask(lengths, x.shape[1]), float("-inf"))
        weights = scores.softmax(dim=1).to(outputs.dtype)
        pooled = torch.einsum("bt,btf->bf", weights, outputs)
        return torch.cat([pooled, last.to(pooled.dtype)], 1)


def build_encoder(
    kind: str, input_dim: int, hidden: int, layers: int, bidirectional: bool, dropout: float, proj: int
) -> RecurrentEncoder | AttentionEncoder:
    """The temporal encoder of head `kind` (lstm, gru, attention)."""
    if kind == "attention":
        return AttentionEncoder(input_dim, hidden, layers, bidirectional, dropout, proj)
    return RecurrentEncoder(kind, input_dim, hidden, layers, bidirectional, dropout, proj)


# ---------------------------------------------------------------- heads
class MeanHead(nn.Module):
    """Temporal mean over valid frames -> dropout -> linear. Blind to order by construction."""

    def __init__(self, input_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(input_dim, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(masked_mean(x, lengths)))


class RecurrentHead(RecurrentEncoder):
    """LSTM/GRU -> state at the last valid frame -> dropout -> linear."""

    def __init__(
        self,
        kind: str,
        input_dim: int,
        num_classes: int,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        proj: int,
    ):
        super().__init__(kind, input_dim, hidden, layers, bidirectional, dropout, proj)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.out_dim, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(super().forward(x, lengths)))


class AttentionHead(AttentionEncoder):
    """AttentionEncoder -> dropout -> linear: logits = fc([pooled, o_last])."""

    def __init__(
        self, input_dim: int, num_classes: int, hidden: int, layers: int, bidirectional: bool, dropout: float, proj: int
    ):
        super().__init__(input_dim, hidden, layers, bidirectional, dropout, proj)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.out_dim, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(super().forward(x, lengths)))


class FusionHead(nn.Module):
    """concat(mean standardised CNN feature (B, D), LSTM last state (B, H)) -> dropout -> linear."""

    def __init__(
        self, input_dim: int, num_classes: int, hidden: int, layers: int, bidirectional: bool, dropout: float, proj: int
    ):
        super().__init__()
        self.rnn = Recurrent("lstm", input_dim, hidden, layers, bidirectional, dropout, proj)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(input_dim + self.rnn.out_dim, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _, last = self.rnn(x, lengths)
        mean = masked_mean(x, lengths).to(last.dtype)
        return self.fc(self.drop(torch.cat([mean, last], dim=1)))


class ChannelNorm(nn.Module):
    """LayerNorm over channels at each time step of (B, C, T): no statistic mixes frames,
    so padded frames cannot leak into valid ones (BatchNorm's batch statistics would)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h.transpose(1, 2)).transpose(1, 2)


class TCNHead(nn.Module):
    """Pointwise input projection, `layers` pre-norm residual blocks of dilated temporal
    convolutions (kernel 3, dilation 1, 2, 4, ...), masked mean over valid frames, linear.

    Padded positions are re-zeroed after every block, so a sequence sees exactly the zero
    padding a convolution over it alone would see. Inside the blocks dropout is capped at
    INNER_DROPOUT; the full `dropout` is applied before the classifier.
    """

    def __init__(self, input_dim: int, num_classes: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.inp = nn.Conv1d(input_dim, hidden, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                ChannelNorm(hidden),
                nn.Conv1d(hidden, hidden, 3, padding=2**k, dilation=2**k),
                nn.GELU(),
                nn.Dropout(min(dropout, INNER_DROPOUT)),
            )
            for k in range(layers)
        )
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = valid_mask(lengths, x.shape[1])[:, None, :].to(x.dtype)  # (B, 1, T)
        h = self.inp(x.transpose(1, 2)) * mask
        for block in self.blocks:
            h = (h + block(h)) * mask
        return self.fc(self.drop(masked_mean(h.transpose(1, 2), lengths)))


class TransformerHead(nn.Module):
    """Linear projection + learned position embedding, a learned summary token in front,
    pre-norm encoder with a key padding mask -> the summary token's output -> linear.
    d_model = hidden, heads = hidden // 64.

    The summary token (as BERT's [CLS]) reads the frames through attention, where the
    position embeddings make order visible; a masked mean of the frame outputs learned
    order far more slowly on small sets. The position embedding starts at the scale of the
    projected features (not the usual 0.02) for the same reason. Dropout inside the
    encoder is capped at INNER_DROPOUT; the full `dropout` is applied before the classifier.
    """

    def __init__(self, input_dim: int, num_classes: int, frames: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.inp = nn.Linear(input_dim, hidden)
        self.pos = nn.Parameter(torch.randn(1, frames, hidden) * POSITION_SCALE)
        self.summary = nn.Parameter(torch.randn(1, 1, hidden) * POSITION_SCALE)
        layer = nn.TransformerEncoderLayer(
            hidden,
            max(1, hidden // 64),
            2 * hidden,
            min(dropout, INNER_DROPOUT),
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        B, T = x.shape[:2]
        if T > self.pos.shape[1]:
            raise ValueError(f"transformer head built for T <= {self.pos.shape[1]} frames, got {T}")
        h = self.inp(x) + self.pos[:, :T]
        h = torch.cat([self.summary.expand(B, 1, -1).to(h.dtype), h], dim=1)
        padding = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=x.device), ~valid_mask(lengths, T)], dim=1)
        h = self.encoder(h, src_key_padding_mask=padding)
        return self.fc(self.drop(self.norm(h[:, 0])))


# ---------------------------------------------------------------- the classifier
class TemporalClassifier(nn.Module):
    """Standardize + head. `forward` takes raw features, `classify` standardised ones.

    Training feeds `classify` with data standardised once up front (reader sources), so
    no per-batch conversion; prediction feeds raw store features to `forward`. One
    modality: `present` (B, 1) is accepted and ignored, since the head reads the stream as
    stored (fusion.FusedClassifier reads it for several).
    """

    def __init__(
        self, head: nn.Module, input_dim: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
    ):
        super().__init__()
        self.norm = Standardize(input_dim, mean, std)
        self.head = head

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor | None = None
    ) -> torch.Tensor:
        """features (B, T, D) float16/32 raw; lengths (B,); present (B, M) bool or None -> logits (B, C)."""
        return self.classify(self.norm(features, lengths), lengths, present)

    def classify(self, x: torch.Tensor, lengths: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) standardised, padded frames zero; lengths (B,) -> logits (B, C) float32."""
        return self.head(x, lengths).float()


def build_head(
    model: str,
    input_dim: int,
    frames: int,
    num_classes: int,
    *,
    hidden: int = 512,
    layers: int = 2,
    bidirectional: bool = False,
    dropout: float = 0.5,
    proj: int = 0,
) -> nn.Module:
    """Head `model` (one of HEADS): x (B, T, input_dim) standardised, lengths (B,) -> logits (B, C)."""
    if model not in HEADS:
        raise ValueError(f"--model (MODEL=): unknown head {model!r}; choose one of {', '.join(HEADS)}")
    if model == "mean":
        return MeanHead(input_dim, num_classes, dropout)
    if model in ("lstm", "gru"):
        return RecurrentHead(model, input_dim, num_classes, hidden, layers, bidirectional, dropout, proj)
    if model == "attention":
        return AttentionHead(input_dim, num_classes, hidden, layers, bidirectional, dropout, proj)
    if model == "fusion":
        return FusionHead(input_dim, num_classes, hidden, layers, bidirectional, dropout, proj)
    if model == "tcn":
        return TCNHead(input_dim, num_classes, hidden, layers, dropout)
    return TransformerHead(input_dim, num_classes, frames, hidden, layers, dropout)


def build_model(
    model: str,
    input_dim: int,
    frames: int,
    num_classes: int,
    *,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    **sizes: Any,
) -> TemporalClassifier:
    """A TemporalClassifier with head `model` (one of HEADS); mean, std (D,) training statistics;
    sizes: build_head's hidden, layers, bidirectional, dropout, proj."""
    return TemporalClassifier(build_head(model, input_dim, frames, num_classes, **sizes), input_dim, mean, std)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (the standardisation buffers are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
