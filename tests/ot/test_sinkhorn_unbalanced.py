"""Semi-relaxed / unbalanced entropic OT against POT's ot.unbalanced.sinkhorn_unbalanced, and `relax` in ot_alignment."""

import math

import numpy as np
import pytest
import torch

ot = pytest.importorskip("ot", reason="POT is the test oracle: pip install pot (the [test] extra)")

from espnet_ot.ot import cosine_cost, ot_alignment, sinkhorn, sinkhorn_unbalanced, tot_cost  # noqa: E402
from helpers import random_batch  # noqa: E402

LA, LT = [23, 12, 17], [5, 3, 7]


def batch(la=LA, lt=LT, D=8, dtype=torch.float64, seed=0):
    return random_batch(la, lt, D=D, dtype=dtype, seed=seed)


@pytest.mark.parametrize("reg_type", ["kl", "entropy"])
@pytest.mark.parametrize("reg_m", [(1.0, 0.5), (0.3, math.inf), (math.inf, 2.0)])
@pytest.mark.parametrize("eps", [0.2, 0.05])
def test_matches_pot_sinkhorn_unbalanced(reg_m, reg_type, eps):
    x, y, mx, my = batch(seed=1)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.2)
    P, log = sinkhorn_unbalanced(C, mx, my, eps, reg_m=reg_m, reg_type=reg_type, tol=1e-12, return_log=True)
    assert (log["err"] < 1e-12).all()
    for k, (n, m) in enumerate(zip(LA, LT)):
        a, b = np.full(n, 1 / n), np.full(m, 1 / m)
        with pytest.warns(UserWarning) if reg_type == "entropy" else _nothing():
            ref = ot.unbalanced.sinkhorn_unbalanced(
                a,
                b,
                C[k, :n, :m].numpy(),
                eps,
                reg_m,
                method="sinkhorn",
                reg_type=reg_type,
                numItermax=200000,
                stopThr=1e-15,
            )
        assert np.abs(P[k, :n, :m].numpy() - ref).max() < 1e-5
        if math.isinf(reg_m[1]):  # hard token side: every token gets its mass
            assert np.abs(P[k, :n, :m].numpy().sum(0) - b).sum() < 1e-10
    assert P[~(mx.unsqueeze(2) & my.unsqueeze(1))].abs().max() == 0


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("reg_type", ["kl", "entropy"])
def test_a_single_penalty_relaxes_both_marginals(reg_type):
    """reg_m = tau is (tau, tau): the same coupling as the pair and as POT's with the number, neither marginal
    held (the columns sum to something else than 1/l_t)."""
    x, y, mx, my = batch(seed=4)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.2)
    kw = dict(reg_type=reg_type, tol=1e-12, max_iter=100000)
    P = sinkhorn_unbalanced(C, mx, my, 0.1, reg_m=0.4, **kw)
    assert torch.equal(P, sinkhorn_unbalanced(C, mx, my, 0.1, reg_m=(0.4, 0.4), **kw))
    for k, (n, m) in enumerate(zip(LA, LT)):
        a, b = np.full(n, 1 / n), np.full(m, 1 / m)
        with pytest.warns(UserWarning) if reg_type == "entropy" else _nothing():
            ref = ot.unbalanced.sinkhorn_unbalanced(
                a,
                b,
                C[k, :n, :m].numpy(),
                0.1,
                0.4,
                method="sinkhorn",
                reg_type=reg_type,
                numItermax=200000,
                stopThr=1e-15,
            )
        assert np.abs(P[k, :n, :m].numpy() - ref).max() < 1e-5
        assert np.abs(P[k, :n, :m].numpy().sum(0) - b).sum() > 1e-2
        assert np.abs(P[k, :n, :m].numpy().sum(1) - a).sum() > 1e-2


@pytest.mark.parametrize("reg_type", ["kl", "entropy"])
@pytest.mark.parametrize("reg_m", [(0.3, math.inf), (1.0, 0.5), 0.7])
def test_a_cost_that_requires_grad_gets_the_same_coupling_and_its_derivative(reg_m, reg_type):
    """grad="unrolled" (a cost that requires grad): out-of-place iterations give the solver's coupling, and the
    derivative of <P, W> along a direction D of the cost is the finite difference of the solver's couplings."""
    x, y, mx, my = batch([7, 5], [3, 2], D=4, seed=5)
    C = cosine_cost(x, y, mx, my)
    kw = dict(reg_m=reg_m, reg_type=reg_type, tol=1e-13, max_iter=100000)
    P = sinkhorn_unbalanced(C, mx, my, 0.2, **kw)
    C_grad = C.clone().requires_grad_(True)
    P_grad = sinkhorn_unbalanced(C_grad, mx, my, 0.2, **kw)
    assert P_grad.requires_grad
    torch.testing.assert_close(P_grad.detach(), P, rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(6)
    W, D = torch.randn(C.shape, generator=g, dtype=C.dtype), torch.randn(C.shape, generator=g, dtype=C.dtype)
    (P_grad * W).sum().backward()
    analytic = float((C_grad.grad * D).sum())
    step = 1e-6
    plus = (sinkhorn_unbalanced(C + step * D, mx, my, 0.2, **kw) * W).sum()
    minus = (sinkhorn_unbalanced(C - step * D, mx, my, 0.2, **kw) * W).sum()
    numeric = float(plus - minus) / (2 * step)
    assert abs(numeric) > 1e-2
    assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_infinite_penalties_are_balanced_sinkhorn():
    x, y, mx, my = batch(seed=2)
    C = cosine_cost(x, y, mx, my)
    P_u = sinkhorn_unbalanced(C, mx, my, 0.05, reg_m=(math.inf, math.inf), tol=1e-11)
    P_b = sinkhorn(C, mx, my, 0.05, tol=1e-11)
    assert torch.allclose(P_u, P_b, atol=1e-10)


@pytest.mark.parametrize("method", ["ot", "tot", "gmot"])
def test_relax_frees_the_frames_and_keeps_the_tokens(method):
    x, y, mx, my = batch([60, 40], [6, 4], D=16, dtype=torch.float32, seed=3)
    hard = ot_alignment(x, y, mx, my, method=method, eps=0.05)
    soft = ot_alignment(x, y, mx, my, method=method, eps=0.05, relax=0.05)
    b = my.float() / my.sum(-1, keepdim=True)
    a = mx.float() / mx.sum(-1, keepdim=True)
    assert ((soft.coupling.sum(1) - b).abs().sum(-1) <= 1e-4).all()  # tokens hard
    assert ((soft.coupling.sum(2) - a).abs().sum(-1) > 1e-2).all()  # frames relaxed
    assert torch.isfinite(soft.loss).all() and (soft.marginal_err <= 1e-4).all()
    assert not torch.allclose(hard.coupling, soft.coupling, atol=1e-3)
    same = ot_alignment(x, y, mx, my, method=method, eps=0.05, relax=math.inf)
    assert torch.equal(same.coupling, hard.coupling)


def test_relax_reaches_the_model_through_alignment_conf():
    pytest.importorskip("espnet2", reason="needs ESPnet")
    from helpers import build_tiny_ot_model, char_token_list

    tokens = char_token_list()
    model = build_tiny_ot_model(tokens, "tot", alignment_conf={"eps": 0.1, "relax": 0.5})
    model.train()
    g = torch.Generator().manual_seed(0)
    B = 2
    batch_ = dict(
        speech=torch.randn(B, 64, 20, generator=g),
        speech_lengths=torch.tensor([64, 56]),
        text=torch.tensor([[3, 4, 5], [6, 7, -1]]),
        text_lengths=torch.tensor([3, 2]),
        plm_feats=torch.randn(B, 5, 32, generator=g),
        plm_feats_lengths=torch.tensor([5, 4]),
    )
    loss, stats, _ = model(**batch_)
    assert torch.isfinite(loss) and float(stats["ot_marginal_err"]) <= 1e-4
    with pytest.raises(ValueError, match="relax"):
        build_tiny_ot_model(tokens, "tot", alignment_conf={"relax": -1.0})(**batch_)
