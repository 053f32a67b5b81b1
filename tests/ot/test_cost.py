"""espnet_ot.ot.cost: the TOT cost (temporal prior, docs/method.md §2) and its effect on the coupling."""

import numpy as np
import pytest
import torch

from espnet_ot.ot import (
    coupling_diagnostics,
    ot_alignment,
    temporal_distance,
)
from helpers import random_batch

LA, LT = [37, 20, 1, 12, 29], [6, 3, 1, 9, 2]  # true lengths of a padded batch (one 1 x 1 problem)


def test_tot_with_zero_beta_is_plain_ot():
    x, y, mx, my = random_batch(LA, LT, dtype=torch.float32)
    a = ot_alignment(x, y, mx, my, method="ot", eps=0.1)
    b = ot_alignment(x, y, mx, my, method="tot", eps=0.1, beta=0.0)
    assert torch.equal(a.coupling, b.coupling) and torch.equal(a.loss, b.loss)
    c = ot_alignment(x, y, mx, my, method="tot", eps=0.1, beta=0.5)
    assert not torch.allclose(a.coupling, c.coupling, atol=1e-4)


def test_large_beta_concentrates_mass_on_the_diagonal_band():
    x, y, mx, my = random_batch([120, 80, 100], [12, 10, 15], dtype=torch.float32, seed=3)
    band = {}
    for beta in (0.0, 5.0):
        r = ot_alignment(x, y, mx, my, method="tot", eps=0.1, beta=beta, max_iter=1000, tol=1e-6)
        band[beta] = coupling_diagnostics(r.coupling, mx, my, band=0.1)["band_mass"]
    assert (band[0.0] < 0.4).all(), band
    assert (band[5.0] > 0.95).all(), band


def test_temporal_distance_is_eq13():
    mx = torch.ones(1, 4, dtype=torch.bool)
    my = torch.ones(1, 2, dtype=torch.bool)
    d = temporal_distance(mx, my)
    expect = abs(1 / 4 - 2 / 2) / np.sqrt(1 / 16 + 1 / 4)
    assert d[0, 0, 1].item() == pytest.approx(expect, rel=1e-6)
    assert d[0, 3, 1].item() == 0
