"""espnet_ot.ot against references written independently of it: costs, temporal prior and edge matrices from
their definitions (scipy, loops), POT oracles fed with those references, solver convergence on returned marginals."""

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import cdist

from espnet_ot.ot import (
    FeatureStructure,
    MixedStructure,
    TemporalStructure,
    cosine_cost,
    feature_structure,
    ot_alignment,
    sinkhorn,
    temporal_distance,
    temporal_structure,
    tot_cost,
)

LA, LT = [9, 6, 1, 7], [4, 2, 1, 5]  # true lengths of a padded batch (one 1 x 1 problem)


def make_batch(la, lt, D=6, seed=0, La=None, Lt=None):
    """float64 features padded to (B, La, D) / (B, Lt, D) with garbage in the padding, and prefix masks."""
    g = torch.Generator().manual_seed(seed)
    La, Lt = La or max(la) + 2, Lt or max(lt) + 1
    x = torch.randn(len(la), La, D, generator=g, dtype=torch.float64)
    y = torch.randn(len(lt), Lt, D, generator=g, dtype=torch.float64)
    mx = torch.arange(La)[None] < torch.tensor(la)[:, None]
    my = torch.arange(Lt)[None] < torch.tensor(lt)[:, None]
    x = torch.where(mx.unsqueeze(2), x, 50.0 * torch.ones_like(x))
    y = torch.where(my.unsqueeze(2), y, -50.0 * torch.ones_like(y))
    return x, y, mx, my


# ------------------------------------------------------------------ references written from the definitions
def ref_cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """C_ij = 1 - cos(h_i, z_j) (TOT-CAKT Eq. 7), by scipy."""
    return cdist(x, y, "cosine")


def ref_temporal_d(la: int, lt: int) -> np.ndarray:
    """d_ij = |i/l_a - j/l_t| / sqrt(1/l_a^2 + 1/l_t^2), i = 1..l_a, j = 1..l_t (TOT-CAKT Eq. 13), by loops."""
    d = np.zeros((la, lt))
    for i in range(1, la + 1):
        for j in range(1, lt + 1):
            d[i - 1, j - 1] = abs(i / la - j / lt) / np.sqrt(1.0 / la**2 + 1.0 / lt**2)
    return d


def ref_temporal_edges(length: int) -> np.ndarray:
    """S(i, k) = |i - k| / l, by loops."""
    return np.array([[abs(i - k) / length for k in range(length)] for i in range(length)], dtype=float)


def ref_feature_edges(x: np.ndarray) -> np.ndarray:
    """S(i, k) = 1 - cos(x_i, x_k) within one sequence, by scipy."""
    return cdist(x, x, "cosine")


def ref_edges(kind: str, x: np.ndarray, mix: float) -> np.ndarray:
    if kind == "temporal":
        return ref_temporal_edges(len(x))
    if kind == "feature":
        return ref_feature_edges(x)
    return mix * ref_temporal_edges(len(x)) + (1.0 - mix) * ref_feature_edges(x)


def ref_node_cost(x: np.ndarray, y: np.ndarray, beta: float) -> np.ndarray:
    return ref_cosine(x, y) + beta * ref_temporal_d(len(x), len(y)) ** 2


def ref_fgw_objective(M, Sx, Sy, gamma, alpha):
    """(1 - alpha) <M, gamma> + alpha sum_{i,k,j,l} (Sx[i,k] - Sy[j,l])^2 gamma_ij gamma_kl, by a 4-index sum."""
    L = (Sx[:, :, None, None] - Sy[None, None, :, :]) ** 2  # (i, k, j, l)
    edge = np.einsum("ikjl,ij,kl->", L, gamma, gamma)
    return (1.0 - alpha) * float((M * gamma).sum()) + alpha * float(edge)


def uniform(n):
    return np.full(n, 1.0 / n)


# ------------------------------------------------------------------ costs and structures
def test_cosine_cost_matches_scipy_on_a_padded_batch():
    x, y, mx, my = make_batch(LA, LT)
    C = cosine_cost(x, y, mx, my)
    assert C.shape == (len(LA), x.shape[1], y.shape[1]) and C.dtype == torch.float64
    for k, (la, lt) in enumerate(zip(LA, LT)):
        np.testing.assert_allclose(
            C[k, :la, :lt].numpy(), ref_cosine(x[k, :la].numpy(), y[k, :lt].numpy()), rtol=0, atol=1e-12
        )
        assert C[k, la:].abs().max() == 0 and C[k, :, lt:].abs().max() == 0


def test_temporal_distance_and_tot_cost_match_eq13_on_a_padded_batch():
    x, y, mx, my = make_batch(LA, LT)
    d = temporal_distance(mx, my, torch.float64)
    C = cosine_cost(x, y, mx, my)
    beta = 0.7
    Ct = tot_cost(C, mx, my, beta)
    for k, (la, lt) in enumerate(zip(LA, LT)):
        np.testing.assert_allclose(d[k, :la, :lt].numpy(), ref_temporal_d(la, lt), rtol=0, atol=1e-12)
        expect = ref_node_cost(x[k, :la].numpy(), y[k, :lt].numpy(), beta)
        np.testing.assert_allclose(Ct[k, :la, :lt].numpy(), expect, rtol=0, atol=1e-12)
        assert d[k, la:].abs().max() == 0 and d[k, :, lt:].abs().max() == 0
    assert torch.equal(tot_cost(C, mx, my, 0.0), C)  # beta = 0: plain OT cost


def test_structures_match_their_definitions_on_a_padded_batch():
    x, _, mx, _ = make_batch(LA, LT, seed=1)
    g = torch.Generator().manual_seed(2)
    X = torch.randn(len(LA), x.shape[1], 3, generator=g, dtype=torch.float64) * mx.unsqueeze(2)
    p = torch.rand(len(LA), x.shape[1], generator=g, dtype=torch.float64) * mx
    mix = 0.3
    ops = {
        "temporal": TemporalStructure(mx),
        "feature": FeatureStructure(x, mx),
        "mix": MixedStructure([TemporalStructure(mx), FeatureStructure(x, mx)], [mix, 1.0 - mix]),
    }
    dense = {"temporal": temporal_structure(mx, torch.float64), "feature": feature_structure(x, mx)}
    for kind, S in ops.items():
        for k, la in enumerate(LA):
            ref = ref_edges(kind, x[k, :la].numpy(), mix)
            if kind in dense:
                np.testing.assert_allclose(dense[kind][k, :la, :la].numpy(), ref, rtol=0, atol=1e-12)
                assert dense[kind][k, la:].abs().max() == 0 and dense[kind][k, :, la:].abs().max() == 0
            np.testing.assert_allclose(S.matmul(X)[k, :la].numpy(), ref @ X[k, :la].numpy(), rtol=0, atol=1e-11)
            np.testing.assert_allclose(S.sq_matvec(p)[k, :la].numpy(), (ref**2) @ p[k, :la].numpy(), rtol=0, atol=1e-11)


# ------------------------------------------------------------------ OT / TOT vs POT on the reference costs
@pytest.mark.parametrize(
    "method, eps, beta", [("ot", 0.05, 0.0), ("tot", 0.3, 0.5), ("tot", 0.1, 0.5), ("tot", 0.05, 0.25)]
)
def test_ot_alignment_matches_pot_on_reference_costs(method, eps, beta):
    x, y, mx, my = make_batch(LA, LT, seed=3)
    r = ot_alignment(x, y, mx, my, method=method, eps=eps, beta=beta, max_iter=100000, tol=1e-12)
    for k, (la, lt) in enumerate(zip(LA, LT)):
        M = ref_node_cost(x[k, :la].numpy(), y[k, :lt].numpy(), beta if method == "tot" else 0.0)
        ref = ot.bregman.sinkhorn_log(uniform(la), uniform(lt), M, eps, numItermax=200000, stopThr=1e-14)
        np.testing.assert_allclose(r.coupling[k, :la, :lt].numpy(), ref, rtol=0, atol=1e-8)
        assert r.loss[k].item() == pytest.approx(float((M * ref).sum()), abs=1e-8)
        assert r.coupling[k, la:].abs().max() == 0 and r.coupling[k, :, lt:].abs().max() == 0


# ------------------------------------------------------------------ GM-OT vs POT on the reference structures
@pytest.mark.parametrize(
    "edges, alpha, eps, beta, mix",
    [
        ("temporal", 0.5, 0.1, 0.5, 0.5),
        ("feature", 0.5, 0.1, 0.5, 0.5),
        ("feature", 0.8, 0.1, 0.3, 0.5),
        ("mix", 0.6, 0.1, 0.5, 0.3),
    ],
)
def test_gmot_value_and_coupling_match_pot_entropic_fgw(edges, alpha, eps, beta, mix):
    x, y, mx, my = make_batch(LA, LT, seed=4)
    r = ot_alignment(
        x,
        y,
        mx,
        my,
        method="gmot",
        eps=eps,
        beta=beta,
        alpha=alpha,
        edges=edges,
        edge_mix=mix,
        max_iter=100000,
        tol=1e-10,
        gw_max_iter=2000,
        gw_tol=1e-10,
    )
    for k, (la, lt) in enumerate(zip(LA, LT)):
        xs, ys = x[k, :la].numpy(), y[k, :lt].numpy()
        M = ref_node_cost(xs, ys, beta)
        Sx, Sy = ref_edges(edges, xs, mix), ref_edges(edges, ys, mix)
        p, q = uniform(la), uniform(lt)
        ref = ot.gromov.entropic_fused_gromov_wasserstein(
            M,
            Sx,
            Sy,
            p,
            q,
            loss_fun="square_loss",
            epsilon=eps,
            alpha=alpha,
            max_iter=2000,
            tol=1e-11,
            numItermax=200000,
            stopThr=1e-12,
        )
        np.testing.assert_allclose(r.coupling[k, :la, :lt].numpy(), ref, rtol=0, atol=1e-8)
        # the loss is the FGW objective at the coupling: POT's gwloss for the edge term and a 4-index sum
        constC, hC1, hC2 = ot.gromov.init_matrix(Sx, Sy, p, q, "square_loss")
        pot_value = (1.0 - alpha) * float((M * ref).sum()) + alpha * float(ot.gromov.gwloss(constC, hC1, hC2, ref))
        assert pot_value == pytest.approx(ref_fgw_objective(M, Sx, Sy, ref, alpha), abs=1e-12)
        assert r.loss[k].item() == pytest.approx(pot_value, abs=1e-8)
    # the edge term matters here: the same problem without it is a different coupling
    r0 = ot_alignment(x, y, mx, my, method="tot", eps=eps, beta=beta, max_iter=100000, tol=1e-12)
    assert (r.coupling - r0.coupling).abs().max() > 1e-3


@pytest.mark.parametrize("gw_max_iter", [1, 3])
def test_gmot_first_mirror_descent_steps_match_pot_on_a_padded_batch(gw_max_iter):
    """A few steps from gamma = a b^T (uniform on the true lengths, not on the padded ones) match POT's."""
    x, y, mx, my = make_batch(LA, LT, seed=8)
    r = ot_alignment(
        x,
        y,
        mx,
        my,
        method="gmot",
        eps=0.1,
        beta=0.5,
        alpha=0.7,
        edges="feature",
        max_iter=100000,
        tol=1e-12,
        gw_max_iter=gw_max_iter,
        gw_tol=0.0,
    )
    for k, (la, lt) in enumerate(zip(LA, LT)):
        xs, ys = x[k, :la].numpy(), y[k, :lt].numpy()
        ref = ot.gromov.entropic_fused_gromov_wasserstein(
            ref_node_cost(xs, ys, 0.5),
            ref_edges("feature", xs, 0.5),
            ref_edges("feature", ys, 0.5),
            uniform(la),
            uniform(lt),
            loss_fun="square_loss",
            epsilon=0.1,
            alpha=0.7,
            max_iter=gw_max_iter,
            tol=0.0,
            numItermax=200000,
            stopThr=1e-14,
        )
        np.testing.assert_allclose(r.coupling[k, :la, :lt].numpy(), ref, rtol=0, atol=1e-8)


# ------------------------------------------------------------------ relaxed GM-OT (relax = tau: frames soft, tokens hard)
RELAXED = dict(method="gmot", eps=0.1, beta=0.5, alpha=0.6, relax=0.3, edge_mix=0.4)


@pytest.mark.parametrize("edges", ["temporal", "mix"])
def test_relaxed_gmot_is_a_fixed_point_of_its_step_and_its_loss_is_the_fgw_objective(edges):
    """The relaxed coupling gamma* is the semi-relaxed entropic OT (POT, reg_m = (tau, inf)) of its own mirror-descent
    cost G = (1 - alpha) C~ + 2 alpha ((S_A^2 a*) 1^T + 1 (S_L^2 b)^T - 2 S_A gamma* S_L) with a* = gamma* 1, the
    coupling's own (non-uniform) frame marginal; and the loss is the FGW objective at gamma*, by a 4-index sum."""
    x, y, mx, my = make_batch(LA, LT, seed=9)
    conf = dict(RELAXED, edges=edges)
    r = ot_alignment(x, y, mx, my, **conf, max_iter=100000, tol=1e-12, gw_max_iter=3000, gw_tol=1e-12)
    alpha, tau = conf["alpha"], conf["relax"]
    for k, (la, lt) in enumerate(zip(LA, LT)):
        xs, ys = x[k, :la].numpy(), y[k, :lt].numpy()
        gamma = r.coupling[k, :la, :lt].numpy()
        M = ref_node_cost(xs, ys, conf["beta"])
        Sx, Sy = ref_edges(edges, xs, conf["edge_mix"]), ref_edges(edges, ys, conf["edge_mix"])
        a_star, b = gamma.sum(1), uniform(lt)
        np.testing.assert_allclose(gamma.sum(0), b, rtol=0, atol=1e-10)  # tokens keep their mass
        if la > 1:
            assert np.abs(a_star - uniform(la)).sum() > 1e-2  # the frames' is not uniform
        G = (1.0 - alpha) * M + 2.0 * alpha * ((Sx**2 @ a_star)[:, None] + (Sy**2 @ b)[None, :] - 2.0 * Sx @ gamma @ Sy)
        step = ot.unbalanced.sinkhorn_unbalanced(
            uniform(la),
            b,
            G,
            conf["eps"],
            (tau, np.inf),
            reg_type="kl",
            method="sinkhorn",
            numItermax=200000,
            stopThr=1e-15,
        )
        np.testing.assert_allclose(gamma, step, rtol=0, atol=1e-8)
        assert r.loss[k].item() == pytest.approx(ref_fgw_objective(M, Sx, Sy, gamma, alpha), abs=1e-10)


def test_relaxed_gmot_unrolled_solves_the_same_problem_as_envelope():
    """grad="unrolled" with relax = tau: the same coupling and loss as the envelope solve, and finite gradients."""
    x, y, mx, my = make_batch([9, 6], [4, 3], seed=10)
    conf = dict(RELAXED, edges="feature", max_iter=100000, tol=1e-9, gw_max_iter=500, gw_tol=1e-8)
    env = ot_alignment(x, y, mx, my, **conf)
    h, z = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    unr = ot_alignment(h, z, mx, my, grad="unrolled", **conf)
    assert unr.coupling.requires_grad  # the solve itself was differentiated
    torch.testing.assert_close(unr.coupling.detach(), env.coupling, rtol=0, atol=1e-7)
    torch.testing.assert_close(unr.loss.detach(), env.loss, rtol=0, atol=1e-7)
    unr.loss.sum().backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(z.grad).all() and h.grad.abs().sum() > 0


# ------------------------------------------------------------------ envelope gradients by finite differences
def _entropic_fgw_value(h, z, mx, my, conf):
    """(1-alpha)<C~, gamma*> + alpha E(gamma*) - eps H(gamma*) from reference costs and edges (gamma* solved)."""
    r = ot_alignment(h, z, mx, my, method="gmot", **conf)
    total = 0.0
    for k in range(h.shape[0]):
        la, lt = int(mx[k].sum()), int(my[k].sum())
        hs, zs = h[k, :la].numpy(), z[k, :lt].numpy()
        gamma = r.coupling[k, :la, :lt].numpy()
        M = ref_node_cost(hs, zs, conf["beta"])
        Sx, Sy = ref_edges(conf["edges"], hs, conf["edge_mix"]), ref_edges(conf["edges"], zs, conf["edge_mix"])
        total += ref_fgw_objective(M, Sx, Sy, gamma, conf["alpha"]) + conf["eps"] * float(
            (gamma * np.log(np.where(gamma > 0, gamma, 1.0))).sum()
        )
    return total


@pytest.mark.parametrize("edges", ["feature", "mix"])
def test_gmot_envelope_gradient_matches_finite_differences(edges):
    """d/d(h, z) of the entropic FGW value = autograd of the loss at the fixed coupling (envelope theorem)."""
    h, z, mx, my = make_batch([6, 4], [4, 3], D=4, seed=5)
    conf = dict(
        eps=0.2,
        beta=0.5,
        alpha=0.5,
        edges=edges,
        edge_mix=0.4,
        max_iter=100000,
        tol=1e-13,
        gw_max_iter=2000,
        gw_tol=1e-13,
    )
    h, z = h.clone().requires_grad_(True), z.clone().requires_grad_(True)
    ot_alignment(h, z, mx, my, method="gmot", **conf).loss.sum().backward()
    g = torch.Generator().manual_seed(6)
    step = 1e-5
    for _ in range(3):
        dh = torch.randn(h.shape, generator=g, dtype=torch.float64) * mx.unsqueeze(2)
        dz = torch.randn(z.shape, generator=g, dtype=torch.float64) * my.unsqueeze(2)
        analytic = float((h.grad * dh).sum() + (z.grad * dz).sum())
        with torch.no_grad():
            vp = _entropic_fgw_value(h + step * dh, z + step * dz, mx, my, conf)
            vm = _entropic_fgw_value(h - step * dh, z - step * dz, mx, my, conf)
        numeric = (vp - vm) / (2 * step)
        assert abs(numeric) > 1e-2
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7)
    assert h.grad[1, 4:].abs().max() == 0 and z.grad[1, 3:].abs().max() == 0  # padding gets no gradient


# ------------------------------------------------------------------ convergence, read from the solver's own log
@pytest.mark.parametrize("eps, beta", [(0.05, 0.0), (0.05, 0.5), (0.5, 0.5)])
def test_sinkhorn_converges_on_both_marginals(eps, beta):
    x, y, mx, my = make_batch([40, 25, 3, 1], [7, 3, 3, 1], D=8, seed=7)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, beta)
    P, log = sinkhorn(C, mx, my, eps, max_iter=50000, tol=1e-9, return_log=True)
    a = mx.double() / mx.sum(-1, keepdim=True)
    b = my.double() / my.sum(-1, keepdim=True)
    row_err = (P.sum(2) - a).abs().sum(-1)
    col_err = (P.sum(1) - b).abs().sum(-1)
    assert (log["err"] <= 1e-9).all(), log["err"]
    assert (row_err < 1e-8).all() and (col_err < 1e-8).all(), (row_err, col_err)
    # the potentials it returns are those of the coupling: gamma = exp((f + g - C) / eps) on real pairs
    pair = mx.unsqueeze(2) & my.unsqueeze(1)
    G = torch.exp((log["f"].unsqueeze(2) + log["g"].unsqueeze(1) - C) / eps)
    torch.testing.assert_close(P[pair], G[pair], rtol=1e-10, atol=1e-14)
