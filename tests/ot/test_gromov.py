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
            C[k, :la, :lt].numpy(), Dx[k, :la, :la].numpy(), Dy[k, :lt, :lt].numpy(),
            np.full(la, 1 / la), np.full(lt, 1 / lt), loss_fun="square_loss", epsilon=0.1, alpha=alpha,
            max_iter=2000, tol=1e-11, numItermax=100000, stopThr=1e-13,
        )
        assert np.abs(P[k, :la, :lt].numpy() - ref).max() < 1e-5
    assert_marginals(P, mx, my, atol=1e-9)


def test_fgw_alpha_zero_is_exactly_sinkhorn():
    x, y, mx, my = random_batch(LA, LT, dtype=torch.float32)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    P_fgw = fused_gromov_wasserstein(C, TemporalStructure(mx), TemporalStructure(my), mx, my, 0.0, 0.2)
    P_ot = sinkhorn(C, mx, my, 0.2, tol=1e-7)
    assert torch.equal(P_fgw, P_ot)
