"""Temporal heads: padding never counts, the CPU LSTM matches nn.LSTM, checkpoints round-trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from stages.train import fusion as fusion_mod
from stages.train import models
from stages.train.models import HEADS, build_model, lstm_layer

D, T, C = 24, 7, 5


def batch(b=6, t=T, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=g) * 3 + 10  # raw features: large common offset
    lengths = torch.tensor([t, 1, 3, t - 1, 2, 5][:b])
    return x, lengths


def small(model: str, **kw) -> models.TemporalClassifier:
    torch.manual_seed(0)
    x, lengths = batch()
    valid = models.valid_mask(lengths, T)
    mean, std = x[valid].mean(0), x[valid].std(0)
    return build_model(
        model, D, T, C, **({"hidden": 16, "layers": 2, "dropout": 0.3, "proj": 0, "mean": mean, "std": std} | kw)
    ).eval()


@pytest.mark.parametrize("model", HEADS)
def test_padded_frames_never_count(model):
    """Garbage in padded frames changes nothing, and each sequence scores as it does alone, unpadded."""
    net = small(model)
    x, lengths = batch()
    garbage = x.clone()
    garbage[~models.valid_mask(lengths, T)] = 1e4
    with torch.no_grad():
        clean, dirty = net(x, lengths), net(garbage, lengths)
        torch.testing.assert_close(clean, dirty, rtol=1e-5, atol=1e-5)
        for b, n in enumerate(lengths.tolist()):
            alone = net(x[b : b + 1, :n], lengths[b : b + 1])
            torch.testing.assert_close(alone, clean[b : b + 1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("model", HEADS)
def test_padding_a_batch_further_changes_no_output(model, bidirectional):
    """A ragged set's batch is padded to its own longest video, whatever that is: steps past every
    length change no head's logits, zeros (as the sources pad) or garbage, raw or standardised input."""
    extra = 9
    net = small(model, bidirectional=bidirectional)
    net.head = build_model(
        model, D, T + extra, C, hidden=16, layers=2, dropout=0.3, proj=0, bidirectional=bidirectional
    ).head.eval()  # a position embedding wide enough for the longer batch
    x, lengths = batch()
    x = x * models.valid_mask(lengths, T)[..., None]
    with torch.no_grad():
        tight, tight_std = net(x, lengths), net.classify(net.norm(x, lengths), lengths)
        for fill in (0.0, 1e4):
            wide = torch.cat([x, torch.full((len(x), extra, D), fill)], dim=1)
            torch.testing.assert_close(net(wide, lengths), tight, rtol=1e-5, atol=1e-5)
            # the head itself honours the lengths, not only the zeros standardisation leaves
            wide_std = torch.cat([net.norm(x, lengths), torch.full((len(x), extra, D), fill)], dim=1)
            torch.testing.assert_close(net.classify(wide_std, lengths), tight_std, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_last_state_is_the_last_valid_frame(kind, bidirectional):
    torch.manual_seed(0)
    rnn = models.Recurrent(kind, D, 8, 1, bidirectional, 0.0).eval()
    x, lengths = batch()
    ref = rnn.layers[0]
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, h_n = ref(packed)
    h_n = h_n[0] if kind == "lstm" else h_n
    expected = torch.cat(list(h_n), dim=1)  # forward (, backward) final states, per sequence
    with torch.no_grad():
        outputs, last = rnn(x, lengths, outputs=True)
    torch.testing.assert_close(last, expected, rtol=1e-5, atol=1e-6)
    assert outputs[~models.valid_mask(lengths, T)].abs().max() == 0


def test_cpu_lstm_layer_matches_nn_lstm_outputs_and_gradients():
    torch.manual_seed(0)
    ref = nn.LSTM(D, 12, 2)
    x = torch.randn(T, 5, D, requires_grad=True)
    out_ref, _ = ref(x)
    p = dict(ref.named_parameters())
    h = lstm_layer(x, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])
    out = lstm_layer(h, p["weight_ih_l1"], p["weight_hh_l1"], p["bias_ih_l1"], p["bias_hh_l1"])
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    inputs = [x, *p.values()]
    for a, b in zip(torch.autograd.grad((out * g).sum(), inputs), torch.autograd.grad((out_ref * g).sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_cpu_lstm_in_bf16_stays_close_to_fp32():
    torch.manual_seed(0)
    ref = nn.LSTM(64, 32, 1)
    x = torch.randn(T, 8, 64)
    p = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0]
    with torch.autocast("cpu", torch.bfloat16):
        h = lstm_layer(x, *p)
    assert h.dtype == torch.bfloat16
    torch.testing.assert_close(h.float(), ref(x)[0], rtol=0, atol=0.03)


def test_reused_workspace_buffers_never_alias_a_live_graph():
    """Two graphs alive at once (two forwards, then both backwards) get the right gradients."""
    torch.manual_seed(0)
    ref = nn.LSTM(D, 12, 1)
    p = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0]
    x1, x2 = torch.randn(T, 4, D), torch.randn(T, 4, D)
    loss = lstm_layer(x1, *p).square().sum() + lstm_layer(x2, *p).sum()
    grads = torch.autograd.grad(loss, p)
    expected = torch.autograd.grad(ref(x1)[0].square().sum() + ref(x2)[0].sum(), p)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for _ in range(3):  # buffers come back to the pool and are reused: still right
        a = torch.autograd.grad(lstm_layer(x1, *p).sum(), p)[1]
        torch.testing.assert_close(a, torch.autograd.grad(ref(x1)[0].sum(), p)[1], rtol=1e-4, atol=1e-6)


def test_fast_path_and_nn_lstm_path_share_parameters():
    """The CPU path and the generic (cuDNN) path are the same function of the same state dict."""
    net = small("lstm", proj=10, dropout=0.0)
    x, lengths = batch()
    with torch.no_grad():
        fast = net(x, lengths)
        net.head.rnn.kind = "generic-lstm"  # any kind but "lstm" takes the nn.LSTM per-layer path
        try:
            generic = net(x, lengths)
        finally:
            net.head.rnn.kind = "lstm"
    torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-6)


def test_standardize_zeroes_padding_and_centres():
    x, lengths = batch()
    valid = models.valid_mask(lengths, T)
    norm = models.Standardize(D, x[valid].mean(0), x[valid].std(0))
    z = norm(x, lengths)
    assert z[~valid].abs().max() == 0
    torch.testing.assert_close(z[valid].mean(0), torch.zeros(D), atol=1e-4, rtol=0)


def test_mean_head_is_blind_to_order():
    net = small("mean")
    x, lengths = batch()
    flipped = x.clone()
    for b, n in enumerate(lengths.tolist()):
        flipped[b, :n] = x[b, :n].flip(0)
    with torch.no_grad():
        torch.testing.assert_close(net(x, lengths), net(flipped, lengths), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", HEADS)
def test_state_dict_round_trips_with_weights_only(model, tmp_path):
    net = small(model, bidirectional=model in ("gru", "attention"))
    torch.save(net.state_dict(), tmp_path / "checkpoint.pt")
    again = small(model, bidirectional=model in ("gru", "attention"), mean=None, std=None)
    again.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    x, lengths = batch()
    with torch.no_grad():
        torch.testing.assert_close(again(x, lengths), net(x, lengths))
    assert models.count_parameters(net) > 0


def test_unknown_head_names_the_option():
    with pytest.raises(ValueError, match="MODEL=.*'lstmm'"):
        build_model("lstmm", D, T, C)


# ---------------------------------------------------------------- several modalities (fusion.py)
DIMS = [16, 8]  # D = 24: rgb then audio


def fused(model: str, fusion: str, **kw) -> fusion_mod.FusedClassifier:
    torch.manual_seed(0)
    x, lengths = batch()
    valid = models.valid_mask(lengths, T)
    sizes = {"hidden": 16, "layers": 2, "dropout": 0.3, "proj": 0} | kw
    return fusion_mod.build_fused(
        model, DIMS, T, C, fusion, 0.5, mean=x[valid].mean(0), std=x[valid].std(0), **sizes
    ).eval()


FUSED_CASES = [(m, f) for m in fusion_mod.ENCODER_HEADS for f in ("early", "late", "gated")] + [
    (m, "early") for m in HEADS if m not in fusion_mod.ENCODER_HEADS
]


@pytest.mark.parametrize("model, kind", FUSED_CASES)
def test_fused_heads_ignore_padding_and_read_presence(model, kind):
    net = fused(model, kind)
    x, lengths = batch()
    garbage = x.clone()
    garbage[~models.valid_mask(lengths, T)] = 1e4
    present = torch.tensor([[True, True], [True, False], [False, True], [True, True], [True, False], [True, True]])
    with torch.no_grad():
        clean = net(x, lengths, present)
        torch.testing.assert_close(net(garbage, lengths, present), clean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net(x, lengths), net(x, lengths, torch.ones(6, 2, dtype=torch.bool)))
        assert not torch.allclose(clean[1], net(x, lengths)[1])  # an absent stream is not read as a present one


@pytest.mark.parametrize("kind", ["early", "late", "gated"])
def test_fused_state_dict_round_trips_with_weights_only(kind, tmp_path):
    net = fused("attention", kind, bidirectional=True)
    torch.save(net.state_dict(), tmp_path / "checkpoint.pt")
    again = fused("attention", kind, bidirectional=True)
    x, lengths = batch()
    with torch.no_grad():
        for t in [*again.parameters(), *(b for b in again.buffers() if b.is_floating_point())]:
            t.add_(torch.randn_like(t))  # another model until the load, statistics buffers included
        assert not torch.allclose(again(x, lengths), net(x, lengths))
        again.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
        torch.testing.assert_close(again(x, lengths), net(x, lengths))


def test_late_fusion_needs_a_head_with_an_encoder():
    with pytest.raises(ValueError, match="FUSION=.*'gated'.*'tcn'"):
        fusion_mod.build_fused("tcn", DIMS, T, C, "gated", 0.1)
    assert (
        fusion_mod.effective_fusion("tcn", "gated") == "early" and fusion_mod.effective_fusion("gru", "late") == "late"
    )
