"""AMP safety: inside torch.autocast the OT cost, solver and projection still compute in float32."""

import pytest
import torch

from espnet_ot.ot import ot_alignment
from helpers import random_batch


def batch(seed=0):
    return random_batch([40, 31, 22], [6, 4, 5], dtype=torch.float32, seed=seed)


@pytest.mark.parametrize("method, eps", [("ot", 0.05), ("tot", 0.5), ("tot", 0.01), ("gmot", 0.05)])
def test_coupling_under_bf16_autocast_equals_float32(method, eps, device):
    x, y, mx, my = (t.to(device) for t in batch())
    ref = ot_alignment(x, y, mx, my, method=method, eps=eps, beta=0.5)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        amp = ot_alignment(x, y, mx, my, method=method, eps=eps, beta=0.5)
    assert amp.coupling.dtype == torch.float32 and amp.loss.dtype == torch.float32
    assert (amp.coupling - ref.coupling).abs().max() <= 1e-6
    assert (amp.marginal_err <= 1e-4).all()  # the convergence it reports is real
    b = my.float() / my.sum(-1, keepdim=True)
    assert ((amp.coupling.sum(1) - b).abs().sum(-1) <= 1e-4).all()


def test_model_training_step_under_autocast_gives_finite_ot_stats():
    pytest.importorskip("espnet2", reason="needs ESPnet")
    from helpers import build_tiny_ot_model, char_token_list

    torch.set_num_threads(1)
    model = build_tiny_ot_model(char_token_list(), "tot", alignment_conf={"eps": 0.05, "beta": 0.5})
    model.train()
    g = torch.Generator().manual_seed(0)
    batch_ = dict(
        speech=torch.randn(2, 64, 20, generator=g),
        speech_lengths=torch.tensor([64, 56]),
        text=torch.tensor([[3, 4, 5], [6, 7, -1]]),
        text_lengths=torch.tensor([3, 2]),
        plm_feats=torch.randn(2, 5, 32, generator=g),
        plm_feats_lengths=torch.tensor([5, 4]),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats, _ = model(**batch_)
    loss.backward()
    for key in ("loss_ot", "loss_align", "band_mass", "coupling_entropy", "ot_marginal_err", "ot_iters"):
        assert stats[key] is not None and torch.isfinite(stats[key]), key
    assert float(stats["ot_marginal_err"]) <= 1e-4 and float(stats["ot_iters"]) >= 1
    assert stats["loss_ot"].dtype == torch.float32
