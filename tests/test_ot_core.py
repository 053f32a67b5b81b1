"""Tests of espnet_ot.ot against POT (oracle) and the mathematical properties of DESIGN §2-§4."""

import numpy as np
import ot  # POT, the test oracle: a required test dependency (the [test] extra)
import pytest
import torch

from espnet_ot.ot import (
    FeatureStructure,
    MixedStructure,
    TemporalStructure,
    cosine_cost,
    coupling_diagnostics,
    feature_structure,
    fused_gromov_wasserstein,
    ot_alignment,
    sinkhorn,
    temporal_distance,
    temporal_structure,
    tot_cost,
    transport_cost,
)


def make_batch(la, lt, D=16, dtype=torch.float64, seed=0, La=None, Lt=None):
    """Random features padded to (B, La, D) / (B, Lt, D) with prefix masks for true lengths la / lt."""
    g = torch.Generator().manual_seed(seed)
    La, Lt = La or max(la), Lt or max(lt)
    x = torch.randn(len(la), La, D, generator=g, dtype=dtype)
    y = torch.randn(len(lt), Lt, D, generator=g, dtype=dtype)
    mx = torch.arange(La)[None] < torch.tensor(la)[:, None]
    my = torch.arange(Lt)[None] < torch.tensor(lt)[:, None]
    return x, y, mx, my


LA, LT = [37, 20, 1, 12, 29], [6, 3, 1, 9, 2]


def assert_marginals(P, mx, my, atol):
    la, lt = mx.sum(-1), my.sum(-1)
    rows, cols = P.sum(2), P.sum(1)
    assert torch.allclose(rows, mx.to(P.dtype) / la[:, None], atol=atol)
    assert torch.allclose(cols, my.to(P.dtype) / lt[:, None], atol=atol)
    pad = ~(mx.unsqueeze(2) & my.unsqueeze(1))
    assert P[pad].abs().max() == 0 if pad.any() else True


# TOT at small eps converges slowly for any Sinkhorn (POT included): the cases are those where both converge
@pytest.mark.parametrize("eps, beta", [(1.0, 0.0), (0.1, 0.0), (0.03, 0.0), (1.0, 0.5), (0.1, 0.5)])
def test_sinkhorn_matches_pot_sinkhorn_log(eps, beta):
    x, y, mx, my = make_batch(LA, LT)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, beta)
    P = sinkhorn(C, mx, my, eps, max_iter=20000, tol=1e-12)
    for k, (la, lt) in enumerate(zip(LA, LT)):
        ref = ot.bregman.sinkhorn_log(
            np.full(la, 1 / la), np.full(lt, 1 / lt), C[k, :la, :lt].numpy(), eps, numItermax=100000, stopThr=1e-14
        )
        assert np.abs(P[k, :la, :lt].numpy() - ref).max() < 1e-5
    assert_marginals(P, mx, my, atol=1e-10)


@pytest.mark.parametrize("edges", ["temporal", "feature"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_fgw_matches_pot_entropic_fgw(edges, alpha):
    x, y, mx, my = make_batch(LA, LT, seed=1)
    C = cosine_cost(x, y, mx, my)
    if edges == "temporal":
        Sx, Sy = TemporalStructure(mx), TemporalStructure(my)
        Dx, Dy = temporal_structure(mx, torch.float64), temporal_structure(my, torch.float64)
    else:
        Sx, Sy = FeatureStructure(x, mx), FeatureStructure(y, my)
        Dx, Dy = feature_structure(x, mx), feature_structure(y, my)
    P = fused_gromov_wasserstein(C, Sx, Sy, mx, my, alpha, 0.1, max_iter=2000, tol=1e-11, sinkhorn_tol=1e-12)
    for k, (la, lt) in enumerate(zip(LA, LT)):
        ref = ot.gromov.entropic_fused_gromov_wasserstein(
            C[k, :la, :lt].numpy(), Dx[k, :la, :la].numpy(), Dy[k, :lt, :lt].numpy(),
            np.full(la, 1 / la), np.full(lt, 1 / lt), loss_fun="square_loss", epsilon=0.1, alpha=alpha,
            max_iter=2000, tol=1e-11, numItermax=100000, stopThr=1e-13,
        )
        assert np.abs(P[k, :la, :lt].numpy() - ref).max() < 1e-5
    assert_marginals(P, mx, my, atol=1e-9)
    # the same problem given as dense matrices gives the same answer as the fast operators
    P_dense = fused_gromov_wasserstein(C, Dx, Dy, mx, my, alpha, 0.1, max_iter=2000, tol=1e-11, sinkhorn_tol=1e-12)
    assert torch.allclose(P, P_dense, atol=1e-9)


def test_fgw_alpha_zero_is_exactly_sinkhorn():
    x, y, mx, my = make_batch(LA, LT, dtype=torch.float32)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    P_fgw = fused_gromov_wasserstein(C, TemporalStructure(mx), TemporalStructure(my), mx, my, 0.0, 0.2)
    P_ot = sinkhorn(C, mx, my, 0.2, tol=1e-7)
    assert torch.equal(P_fgw, P_ot)


def test_tot_with_zero_beta_is_plain_ot():
    x, y, mx, my = make_batch(LA, LT, dtype=torch.float32)
    a = ot_alignment(x, y, mx, my, method="ot", eps=0.1)
    b = ot_alignment(x, y, mx, my, method="tot", eps=0.1, beta=0.0)
    assert torch.equal(a.coupling, b.coupling) and torch.equal(a.loss, b.loss)
    c = ot_alignment(x, y, mx, my, method="tot", eps=0.1, beta=0.5)
    assert not torch.allclose(a.coupling, c.coupling, atol=1e-4)


def test_large_beta_concentrates_mass_on_the_diagonal_band():
    x, y, mx, my = make_batch([120, 80, 100], [12, 10, 15], dtype=torch.float32, seed=3)
    band = {}
    for beta in (0.0, 5.0):
        r = ot_alignment(x, y, mx, my, method="tot", eps=0.1, beta=beta, max_iter=1000, tol=1e-6)
        band[beta] = coupling_diagnostics(r.coupling, mx, my, band=0.1)["band_mass"]
    assert (band[0.0] < 0.4).all(), band
    assert (band[5.0] > 0.95).all(), band


@pytest.mark.parametrize("solver", ["sinkhorn", "fgw"])
def test_padding_and_batch_invariance(solver):
    x, y, mx, my = make_batch(LA, LT, dtype=torch.float32, seed=4)
    eps = 0.1

    def solve(x, y, mx, my):
        C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
        if solver == "sinkhorn":
            return sinkhorn(C, mx, my, eps, tol=1e-6)
        return fused_gromov_wasserstein(C, TemporalStructure(mx), TemporalStructure(my), mx, my, 0.5, eps)

    P = solve(x, y, mx, my)
    for k, (la, lt) in enumerate(zip(LA, LT)):
        # alone, without padding
        alone = solve(x[k:k + 1, :la], y[k:k + 1, :lt], mx[k:k + 1, :la], my[k:k + 1, :lt])
        assert torch.allclose(P[k, :la, :lt], alone[0], atol=1e-7, rtol=1e-5)
        # alone, with extra padding (garbage values in the padded frames must not matter)
        xp = torch.cat([x[k:k + 1, :la], 100 * torch.randn(1, 50, x.shape[2])], 1)
        yp = torch.cat([y[k:k + 1, :lt], 100 * torch.randn(1, 4, y.shape[2])], 1)
        mxp = torch.arange(la + 50)[None] < la
        myp = torch.arange(lt + 4)[None] < lt
        padded = solve(xp, yp, mxp, myp)
        # other shapes round differently: equal within the solve's tolerance (1e-6 L1 marginal error)
        assert torch.allclose(P[k, :la, :lt], padded[0, :la, :lt], atol=1e-6, rtol=1e-5)
        assert padded[0, la:].abs().max() == 0 and padded[0, :, lt:].abs().max() == 0


def test_all_padding_rows_are_excluded():
    x, y, mx, my = make_batch([10, 5], [4, 3], dtype=torch.float32)
    mx[1] = False
    P = sinkhorn(cosine_cost(x, y, mx, my), mx, my, 0.1)
    assert torch.isfinite(P).all() and P[1].abs().max() == 0
    assert torch.allclose(P[0].sum(), torch.tensor(1.0), atol=1e-5)
    r = ot_alignment(x, y, mx, my, method="gmot", eps=0.1)
    assert torch.isfinite(r.loss).all() and r.loss[1] == 0


def test_envelope_gradient_wrt_cost_is_the_coupling():
    x, y, mx, my = make_batch(LA, LT, dtype=torch.float32)
    C = cosine_cost(x, y, mx, my).requires_grad_(True)
    with torch.no_grad():
        P = sinkhorn(C, mx, my, 0.1)
    transport_cost(C, P).sum().backward()
    assert torch.equal(C.grad, P)
    r = ot_alignment(x, y, mx, my, method="tot", eps=0.1)
    assert not r.coupling.requires_grad  # envelope mode keeps no solver graph: memory is iteration-free


def _entropic_value(h, z, mx, my, eps, beta):
    C = tot_cost(cosine_cost(h, z, mx, my), mx, my, beta)
    P = sinkhorn(C, mx, my, eps, max_iter=20000, tol=1e-13)
    return (P * C).sum() + eps * torch.xlogy(P, P).sum()


@pytest.mark.parametrize("method", ["ot", "tot"])
def test_envelope_gradient_wrt_features_matches_finite_differences(method):
    # Envelope theorem: d/dh min_gamma <gamma, C(h)> - eps H(gamma) = <gamma*, dC/dh>.
    h, z, mx, my = make_batch([9, 6], [4, 3], D=5, seed=5)
    eps, beta = 0.2, (0.5 if method == "tot" else 0.0)
    h = h.requires_grad_(True)
    ot_alignment(h, z, mx, my, method=method, eps=eps, beta=beta, max_iter=20000, tol=1e-13).loss.sum().backward()
    num = torch.zeros_like(h)
    step = 1e-6
    with torch.no_grad():
        for idx in np.ndindex(*h.shape):
            hp, hm = h.detach().clone(), h.detach().clone()
            hp[idx] += step
            hm[idx] -= step
            num[idx] = (_entropic_value(hp, z, mx, my, eps, beta) - _entropic_value(hm, z, mx, my, eps, beta)) / (2 * step)
    assert torch.allclose(h.grad, num, atol=1e-7), (h.grad - num).abs().max()
    assert h.grad[1, 6:].abs().max() == 0  # padding gets no gradient


def test_unrolled_gradient_matches_finite_differences_of_the_transport_cost():
    h, z, mx, my = make_batch([7, 5], [3, 2], D=4, seed=6)
    eps = 0.3
    h = h.requires_grad_(True)
    ot_alignment(h, z, mx, my, method="tot", eps=eps, grad="unrolled", max_iter=3000, tol=1e-13).loss.sum().backward()

    def value(hv):
        return ot_alignment(hv, z, mx, my, method="tot", eps=eps, max_iter=3000, tol=1e-13).loss.sum()

    num = torch.zeros_like(h)
    with torch.no_grad():
        for idx in np.ndindex(*h.shape):
            hp, hm = h.detach().clone(), h.detach().clone()
            hp[idx] += 1e-6
            hm[idx] -= 1e-6
            num[idx] = (value(hp) - value(hm)) / 2e-6
    assert torch.allclose(h.grad, num, atol=1e-6), (h.grad - num).abs().max()


@pytest.mark.parametrize("edges", ["temporal", "feature", "mix"])
def test_gmot_loss_has_finite_gradients(edges):
    h, z, mx, my = make_batch(LA, LT, dtype=torch.float32, seed=7)
    h, z = h.requires_grad_(True), z.requires_grad_(True)
    r = ot_alignment(h, z, mx, my, method="gmot", eps=0.1, alpha=0.5, edges=edges)
    r.loss.sum().backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    if edges != "temporal":
        assert z.grad.abs().sum() > 0


def test_structure_operators_match_dense_matrices():
    x, _, mx, _ = make_batch(LA, LT, seed=8)
    X = torch.rand(len(LA), max(LA), 4, dtype=torch.float64) * mx.unsqueeze(2)
    p = torch.rand(len(LA), max(LA), dtype=torch.float64) * mx
    mixed = MixedStructure([TemporalStructure(mx), FeatureStructure(x, mx)], [0.3, 0.7])
    for S in (TemporalStructure(mx), FeatureStructure(x, mx), mixed):
        D = S.dense(torch.float64) if isinstance(S, TemporalStructure) else S.dense()
        assert torch.allclose(S.matmul(X), torch.bmm(D, X), atol=1e-12)
        assert torch.allclose(S.sq_matvec(p), torch.bmm(D.pow(2), p.unsqueeze(2)).squeeze(2), atol=1e-12)
    T = temporal_structure(mx, torch.float64)
    assert T[0, 0, 36] == pytest.approx(36 / 37) and T[1, 25, 0] == 0


def test_temporal_distance_is_eq13():
    mx = torch.ones(1, 4, dtype=torch.bool)
    my = torch.ones(1, 2, dtype=torch.bool)
    d = temporal_distance(mx, my)
    expect = abs(1 / 4 - 2 / 2) / np.sqrt(1 / 16 + 1 / 4)
    assert d[0, 0, 1].item() == pytest.approx(expect, rel=1e-6)
    assert d[0, 3, 1].item() == 0


# eps down to 1e-3 with l_t >= 2 (a banded kernel): the solver's eps-scaling reaches the marginals.
@pytest.mark.parametrize("eps, lt", [(eps, lt) for eps in (1e-3, 1e-2, 1.0) for lt in (1, 2, 3)])
def test_edge_cases_are_finite(eps, lt):
    x, y, mx, my = make_batch([2000, 1500, 7], [lt, 1, lt], D=32, dtype=torch.float32, seed=9)
    a = mx.float() / mx.sum(-1, keepdim=True)
    b = my.float() / my.sum(-1, keepdim=True)
    for method in ("ot", "tot", "gmot"):
        r = ot_alignment(x, y, mx, my, method=method, eps=eps, beta=0.5)
        assert torch.isfinite(r.coupling).all() and torch.isfinite(r.loss).all(), (method, eps, lt)
        # both marginals of the returned coupling (its total mass is 1 by construction: that proves nothing)
        row_err = (r.coupling.sum(2) - a).abs().sum(-1)
        col_err = (r.coupling.sum(1) - b).abs().sum(-1)
        assert row_err.max() < 1e-3 and col_err.max() < 1e-3, (method, eps, lt, row_err, col_err)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_solved_in_float32(dtype):
    x, y, mx, my = make_batch(LA, LT, dtype=torch.float32, seed=10)
    r16 = ot_alignment(x.to(dtype), y.to(dtype), mx, my, method="tot", eps=0.05)
    # the same (rounded) inputs given in float32: a float32 solve gives the same coupling to rounding, while a
    # solve in fp16/bf16 (eps = 0.05 amplifies their 1e-3..4e-3 relative cost error) is off by ~1e-3
    r32 = ot_alignment(x.to(dtype).float(), y.to(dtype).float(), mx, my, method="tot", eps=0.05)
    assert r16.coupling.dtype == torch.float32 and r16.loss.dtype == torch.float32
    assert torch.isfinite(r16.coupling).all()
    assert (r16.coupling - r32.coupling).abs().max() < 1e-6
    torch.testing.assert_close(r16.loss, r32.loss, rtol=1e-5, atol=1e-6)


def test_bad_inputs_give_clear_errors():
    x, y, mx, my = make_batch([3], [2], dtype=torch.float32)
    C = cosine_cost(x, y, mx, my)
    with pytest.raises(TypeError, match="x_mask must be a bool"):
        sinkhorn(C, mx.float(), my, 0.1)
    with pytest.raises(ValueError, match="eps must be > 0"):
        sinkhorn(C, mx, my, 0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        ot_alignment(x, y, mx, my, method="wasserstein")
    with pytest.raises(ValueError, match="alpha must be in"):
        fused_gromov_wasserstein(C, TemporalStructure(mx), TemporalStructure(my), mx, my, 1.5, 0.1)
