"""espnet_ot.ot.gromov: entropic fused Gromov-Wasserstein against POT (docs/method.md §4)."""

import numpy as np
import ot  # POT, the test oracle: a required test dependency (the [test] extra)
import pytest
import torch

from espnet_ot.ot import (
    FeatureStructure,
    TemporalStructure,
    cosine_cost,
    feature_structure,
    fused_gromov_wasserstein,
    gromov,
    sinkhorn,
    temporal_structure,
    tot_cost,
)
from helpers import assert_marginals, random_batch

LA, LT = [37, 20, 1, 12, 29], [6, 3, 1, 9, 2]  # true lengths of a padded batch (one 1 x 1 problem)


@pytest.mark.parametrize("edges", ["temporal", "feature"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_fgw_matches_pot_entropic_fgw(edges, alpha, device):
    x, y, mx, my = (t.to(device) for t in random_batch(LA, LT, seed=1))
    C = cosine_cost(x, y, mx, my)
    if edges == "temporal":
        Sx, Sy = TemporalStructure(mx), TemporalStructure(my)
        Dx, Dy = temporal_structure(mx, torch.float64), temporal_structure(my, torch.float64)
    else:
        Sx, Sy = FeatureStructure(x, mx), FeatureStructure(y, my)
        Dx, Dy = feature_structure(x, mx), feature_structure(y, my)
    P = fused_gromov_wasserstein(C, Sx, Sy, mx, my, alpha, 0.1, max_iter=2000, tol=1e-11, sinkhorn_tol=1e-12)
    # the same problem given as dense matrices gives the same answer as the fast operators
    P_dense = fused_gromov_wasserstein(C, Dx, Dy, mx, my, alpha, 0.1, max_iter=2000, tol=1e-11, sinkhorn_tol=1e-12)
    assert torch.allclose(P, P_dense, atol=1e-9)
    C, P, Dx, Dy, mx, my = (t.cpu() for t in (C, P, Dx, Dy, mx, my))
    for k, (la, lt) in enumerate(zip(LA, LT)):
        ref = ot.gromov.entropic_fused_gromov_wasserstein(
            C[k, :la, :lt].numpy(),
            Dx[k, :la, :la].numpy(),
            Dy[k, :lt, :lt].numpy(),
            np.full(la, 1 / la),
            np.full(lt, 1 / lt),
            loss_fun="square_loss",
            epsilon=0.1,
            alpha=alpha,
            max_iter=2000,
            tol=1e-11,
            numItermax=100000,
            stopThr=1e-13,
        )
        assert np.abs(P[k, :la, :lt].numpy() - ref).max() < 1e-5
    assert_marginals(P, mx, my, atol=1e-9)


def test_fgw_alpha_zero_is_exactly_sinkhorn():
    x, y, mx, my = random_batch(LA, LT, dtype=torch.float32)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    P_fgw = fused_gromov_wasserstein(C, TemporalStructure(mx), TemporalStructure(my), mx, my, 0.0, 0.2)
    P_ot = sinkhorn(C, mx, my, 0.2, tol=1e-7)
    assert torch.equal(P_fgw, P_ot)


@pytest.mark.parametrize("relax", [None, 1.0])
def test_fgw_result_of_an_utterance_does_not_depend_on_its_batch(relax, monkeypatch):
    # utterances leave the iterated batch as they converge (sub-batches of the unconverged ones): each one's
    # coupling and outer iterations are those it gets alone, also beside an empty utterance (scanned costs)
    la, lt = [37, 20, 12, 29, 0, 25, 9], [6, 3, 9, 2, 4, 7, 5]
    x, y, mx, my = random_batch(la, lt, seed=3)
    C = cosine_cost(x, y, mx, my)
    taken = []
    take = gromov._Work.take
    monkeypatch.setattr(gromov._Work, "take", lambda self, idx: taken.append(len(idx)) or take(self, idx))

    def solve(k):
        return fused_gromov_wasserstein(
            C[k],
            TemporalStructure(mx[k]),
            TemporalStructure(my[k]),
            mx[k],
            my[k],
            0.7,
            0.05,
            tol=1e-9,
            sinkhorn_tol=1e-10,
            relax=relax,
            return_log=True,
        )

    P, log = solve(slice(None))
    assert taken and min(taken) < len(la)  # the batch did shrink
    for k in range(len(la)):
        P_k, log_k = solve(slice(k, k + 1))
        assert torch.allclose(P[k], P_k[0], rtol=0, atol=1e-12)
        assert log["n_iter"][k] == log_k["n_iter"][0]  # (inner counts may differ: the first solve's eps ladder
        # is the batch's, so an utterance may reach the same optimum by Newton or Sinkhorn steps)
    assert P[4].abs().max() == 0 and log["n_iter"][4] == 0
    monkeypatch.setattr(gromov, "COMPACT_AT", 0.0)  # never shrink: the same answer
    assert torch.allclose(solve(slice(None))[0], P, rtol=0, atol=1e-12)


def test_gw_tensor_product_is_the_square_loss_tensor_applied_to_the_coupling():
    # L(S_A, S_L) (x) gamma, (i, j) = sum_{k, l} (S_A(i, k) - S_L(j, l))^2 gamma_kl, against the 4-D tensor
    x, y, mx, my = random_batch([7, 5], [4, 3], seed=5)
    Sx, Sy = FeatureStructure(x, mx), TemporalStructure(my)
    gamma = fused_gromov_wasserstein(cosine_cost(x, y, mx, my), Sx, Sy, mx, my, 0.5, 0.1)
    a, b = gamma.sum(2), gamma.sum(1)
    Dx, Dy = Sx.dense(), Sy.dense(torch.float64)
    L = (Dx[:, :, None, :, None] - Dy[:, None, :, None, :]).pow(2)  # (B, i, j, k, l)
    ref = torch.einsum("bijkl,bkl->bij", L, gamma)
    got = gromov.gw_tensor_product(Sx, Sy, gamma, gromov.gw_constant(Sx, Sy, a, b))
    pair = mx.unsqueeze(2) & my.unsqueeze(1)
    assert torch.allclose(got[pair], ref[pair], atol=1e-12)
