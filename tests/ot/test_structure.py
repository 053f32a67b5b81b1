"""espnet_ot.ot.structure: the fast edge-matrix operators against the dense matrices (docs/method.md §4)."""

import pytest
import torch

from espnet_ot.ot import (
    DenseStructure,
    FeatureStructure,
    MixedStructure,
    TemporalStructure,
    structure,
    temporal_structure,
)
from helpers import random_batch

LA, LT = [37, 20, 1, 12, 29], [6, 3, 1, 9, 2]  # true lengths of a padded batch (one 1 x 1 problem)


@pytest.mark.parametrize("temporal_dense_max", [256, 0])  # TemporalStructure: dense bmm / prefix sums
def test_structure_operators_match_dense_matrices(temporal_dense_max, monkeypatch):
    monkeypatch.setattr(structure, "TEMPORAL_DENSE_MAX", temporal_dense_max)
    x, _, mx, _ = random_batch(LA, LT, seed=8)
    X = torch.rand(len(LA), max(LA), 4, dtype=torch.float64)  # anything on padding: S is 0 there
    p = torch.rand(len(LA), max(LA), dtype=torch.float64) * mx
    mixed = MixedStructure([TemporalStructure(mx), FeatureStructure(x, mx)], [0.3, 0.7])
    dense = DenseStructure(FeatureStructure(x, mx).dense(), mx)
    idx = torch.tensor([3, 0, 2])
    for S in (TemporalStructure(mx), FeatureStructure(x, mx), mixed, dense):
        D = S.dense(torch.float64) if isinstance(S, TemporalStructure) else S.dense()
        assert torch.allclose(S.matmul(X), torch.bmm(D, X), atol=1e-12)
        assert torch.allclose(S.rmatmul(X.transpose(1, 2)), torch.bmm(X.transpose(1, 2), D), atol=1e-12)
        assert torch.allclose(S.sq_matvec(p), torch.bmm(D.pow(2), p.unsqueeze(2)).squeeze(2), atol=1e-12)
        # the structure of a sub-batch (GM-OT iterates on the unconverged utterances alone)
        sub = S.subset(idx)
        assert torch.allclose(sub.matmul(X[idx]), torch.bmm(D[idx], X[idx]), atol=1e-12)
        assert torch.allclose(
            sub.sq_matvec(p[idx]), torch.bmm(D[idx].pow(2), p[idx].unsqueeze(2)).squeeze(2), atol=1e-12
        )
    T = temporal_structure(mx, torch.float64)
    assert T[0, 0, 36] == pytest.approx(36 / 37) and T[1, 25, 0] == 0
    assert torch.allclose(TemporalStructure(mx).matmul(X), torch.bmm(T, X), atol=1e-12)
