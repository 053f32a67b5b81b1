"""espnet_ot.ot.alignment (ot_alignment): envelope and unrolled gradients, GM-OT gradients, extreme eps (docs/method.md §3)."""

import numpy as np
import pytest
import torch

from espnet_ot.ot import (
    cosine_cost,
    ot_alignment,
    sinkhorn,
    tot_cost,
)
from helpers import random_batch

LA, LT = [37, 20, 1, 12, 29], [6, 3, 1, 9, 2]  # true lengths of a padded batch (one 1 x 1 problem)


def _entropic_value(h, z, mx, my, eps, beta):
    C = tot_cost(cosine_cost(h, z, mx, my), mx, my, beta)
    P = sinkhorn(C, mx, my, eps, max_iter=20000, tol=1e-13)
    return (P * C).sum() + eps * torch.xlogy(P, P).sum()


@pytest.mark.parametrize("method", ["ot", "tot"])
def test_envelope_gradient_wrt_features_matches_finite_differences(method):
    # Envelope theorem: d/dh min_gamma <gamma, C(h)> - eps H(gamma) = <gamma*, dC/dh>.
    h, z, mx, my = random_batch([9, 6], [4, 3], D=5, seed=5)
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
            num[idx] = (_entropic_value(hp, z, mx, my, eps, beta) - _entropic_value(hm, z, mx, my, eps, beta)) / (
                2 * step
            )
    assert torch.allclose(h.grad, num, atol=1e-7), (h.grad - num).abs().max()
    assert h.grad[1, 6:].abs().max() == 0  # padding gets no gradient


def test_unrolled_gradient_matches_finite_differences_of_the_transport_cost():
    h, z, mx, my = random_batch([7, 5], [3, 2], D=4, seed=6)
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
    h, z, mx, my = random_batch(LA, LT, dtype=torch.float32, seed=7)
    h, z = h.requires_grad_(True), z.requires_grad_(True)
    r = ot_alignment(h, z, mx, my, method="gmot", eps=0.1, alpha=0.5, edges=edges)
    r.loss.sum().backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    if edges != "temporal":
        assert z.grad.abs().sum() > 0


# eps down to 1e-3 with l_t >= 2 (a banded kernel): the solver's eps-scaling reaches the marginals.
@pytest.mark.parametrize("eps, lt", [(eps, lt) for eps in (1e-3, 1e-2, 1.0) for lt in (1, 2, 3)])
def test_edge_cases_are_finite(eps, lt):
    x, y, mx, my = random_batch([2000, 1500, 7], [lt, 1, lt], D=32, dtype=torch.float32, seed=9)
    a = mx.float() / mx.sum(-1, keepdim=True)
    b = my.float() / my.sum(-1, keepdim=True)
    for method in ("ot", "tot", "gmot"):
        r = ot_alignment(x, y, mx, my, method=method, eps=eps, beta=0.5)
        assert torch.isfinite(r.coupling).all() and torch.isfinite(r.loss).all(), (method, eps, lt)
        # both marginals of the returned coupling (its total mass is 1 by construction: that proves nothing)
        row_err = (r.coupling.sum(2) - a).abs().sum(-1)
        col_err = (r.coupling.sum(1) - b).abs().sum(-1)
        assert row_err.max() < 1e-3 and col_err.max() < 1e-3, (method, eps, lt, row_err, col_err)
