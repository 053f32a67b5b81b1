"""Convergence of the OT solvers at the paper's small eps: tolerance stopping, POT agreement, max_iter warning, stats."""

import warnings

import numpy as np
import pytest
import torch

ot = pytest.importorskip("ot", reason="POT is the test oracle: pip install pot (the [test] extra)")
from scipy.spatial.distance import cdist  # noqa: E402

from espnet_ot.ot import cosine_cost, ot_alignment, sinkhorn, tot_cost  # noqa: E402


def batch(la, lt, D=16, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(la), max(la), D, generator=g, dtype=dtype)
    y = torch.randn(len(lt), max(lt), D, generator=g, dtype=dtype)
    mx = torch.arange(max(la))[None] < torch.tensor(la)[:, None]
    my = torch.arange(max(lt))[None] < torch.tensor(lt)[:, None]
    return x, y, mx, my


def pot_tot_cost(x, y, beta):
    """TOT cost written out from its definition, independently of espnet_ot: 1 - cos + beta * d^2."""
    la, lt = len(x), len(y)
    C = cdist(x, y, metric="cosine")
    i = np.arange(1, la + 1)[:, None] / la
    j = np.arange(1, lt + 1)[None, :] / lt
    d = np.abs(i - j) / np.sqrt(1 / la**2 + 1 / lt**2)
    return C + beta * d**2


def col_row_err(P, mx, my):
    a = mx.to(P.dtype) / mx.sum(-1, keepdim=True)
    b = my.to(P.dtype) / my.sum(-1, keepdim=True)
    return (P.sum(1) - b).abs().sum(-1), (P.sum(2) - a).abs().sum(-1)


def test_tot_eps_001_matches_pot_converged():
    la, lt = [40, 25, 33], [6, 4, 5]
    x, y, mx, my = batch(la, lt, seed=1)
    eps, beta = 0.01, 0.5
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, beta)
    P, log = sinkhorn(C, mx, my, eps, tol=1e-10, return_log=True)
    assert (log["err"] < 1e-10).all()
    for k, (n, m) in enumerate(zip(la, lt)):
        M = pot_tot_cost(x[k, :n].numpy(), y[k, :m].numpy(), beta)
        assert np.abs(M - C[k, :n, :m].numpy()).max() < 1e-12  # our cost is the definition
        a, b = np.full(n, 1 / n), np.full(m, 1 / m)
        ref = ot.bregman.sinkhorn_log(a, b, M, eps, numItermax=500000, stopThr=1e-12)
        # the oracle itself must have converged for the comparison to mean anything
        assert np.abs(ref.sum(0) - b).sum() < 1e-9 and np.abs(ref.sum(1) - a).sum() < 1e-9
        assert np.abs(P[k, :n, :m].numpy() - ref).max() < 1e-5


@pytest.mark.parametrize("method", ["ot", "tot", "gmot"])
def test_default_ot_alignment_at_eps_001_meets_default_tolerance(method):
    # AISHELL-like lengths in float32: the defaults must converge, not stop on an iteration count
    x, y, mx, my = batch([200, 150, 90], [20, 12, 7], D=32, dtype=torch.float32, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching max_iter would warn
        r = ot_alignment(x, y, mx, my, method=method, eps=0.01, beta=0.5)
    col, row = col_row_err(r.coupling, mx, my)
    assert (r.marginal_err <= 1e-4).all(), r.marginal_err
    assert (col <= 1e-4).all() and (row <= 1e-4).all(), (col, row)
    assert (r.n_iter > 0).all() and r.n_iter.dtype == torch.long


def test_eps_scaling_and_newton_cut_the_iterations():
    x, y, mx, my = batch([120, 90], [15, 10], D=32, dtype=torch.float32, seed=3)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    _, fast = sinkhorn(C, mx, my, 0.1, tol=1e-4, return_log=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, plain = sinkhorn(C, mx, my, 0.1, tol=1e-4, return_log=True, eps_scaling=0, newton_steps=0)
    assert (fast["err"] < 1e-4).all() and (plain["err"] < 1e-4).all()
    assert fast["n_iter"].max() * 5 < plain["n_iter"].max(), (fast["n_iter"], plain["n_iter"])


@pytest.mark.parametrize("method", ["ot", "tot", "gmot"])
def test_max_iter_cap_warns_once_with_the_error(method):
    x, y, mx, my = batch([80, 60], [10, 8], D=16, dtype=torch.float32, seed=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = ot_alignment(x, y, mx, my, method=method, eps=0.01, max_iter=2, eps_scaling=0)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1, msgs
    assert "max_iter=2" in msgs[0] and "marginal error" in msgs[0]
    worst = float(r.marginal_err.max())
    assert f"{worst:.3g}" in msgs[0]
    if method != "gmot":  # FGW's outer loop can land within tol even when an inner solve hit its cap
        assert worst > 1e-4


def test_converged_utterances_do_not_depend_on_their_batch():
    # float64: in float32 the padded and unpadded gemms round differently and eps = 0.02 amplifies that to ~1e-6
    x, y, mx, my = batch([70, 30, 50], [9, 3, 6], D=16, dtype=torch.float64, seed=5)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    P = sinkhorn(C, mx, my, 0.02, tol=1e-5)
    for k, (n, m) in enumerate(zip([70, 30, 50], [9, 3, 6])):
        alone = sinkhorn(C[k:k + 1, :n, :m], mx[k:k + 1, :n], my[k:k + 1, :m], 0.02, tol=1e-5)
        assert torch.allclose(P[k, :n, :m], alone[0], atol=1e-12, rtol=0)
