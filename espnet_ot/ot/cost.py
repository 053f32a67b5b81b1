"""Ground costs between acoustic and linguistic sequences: cosine cost (Eq. 7) and temporal prior (Eq. 13, 19)."""

import torch

from espnet_ot.ot._utils import (  # noqa: F401 (NORM_EPS, NORM_REL: the floor's constants, documented here)
    NORM_EPS,
    NORM_REL,
    as_number,
    check_finite,
    check_masks,
    check_tensor,
    cosine_of,
    fp32_region,
    ranks,
    solver_dtype,
)


def cosine_cost(x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
    r"""Pairwise cosine cost :math:`C_{ij} = 1 - \cos(h_i, z_j)`.

    The norms are floored at ``NORM_REL`` = 1e-3 times the largest norm of the utterance (and at least at
    ``NORM_EPS`` = 1e-6), so a zero feature vector has cost 1 to everything and a gradient bounded by the
    utterance's feature scale (a silent frame cannot blow up a step); rows above the floor give exact cosines.
    Computed in float32 (float64 for float64 inputs), also inside ``torch.autocast``.

    Parameters
    ----------
    x : torch.Tensor
        Acoustic features :math:`H_A`, (B, La, D); finite on real positions.
    y : torch.Tensor
        Linguistic features :math:`Z_L`, (B, Lt, D); finite on real positions.
    x_mask, y_mask : torch.Tensor
        (B, La) / (B, Lt) bool, True on real positions.

    Returns
    -------
    torch.Tensor
        (B, La, Lt) cost; 0 wherever either side is padding.

    References
    ----------
    X. Lu, P. Shen, Y. Tsao, H. Kawai, "Temporal order preserved optimal transport-based cross-modal knowledge
    transfer learning for ASR" (TOT-CAKT), arXiv:2409.02239, 2024, Eq. (7).
    X. Lu, P. Shen, Y. Tsao, H. Kawai, "Cross-modal alignment with optimal transport for CTC-based ASR"
    (OT-BERT), IEEE ASRU 2023.

    Examples
    --------
    >>> import torch
    >>> x, y = torch.randn(1, 4, 8), torch.randn(1, 2, 8)
    >>> C = cosine_cost(x, y, torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    >>> C.shape, bool(((C >= 0) & (C <= 2)).all())
    (torch.Size([1, 4, 2]), True)
    """
    check_tensor("x", x, 3)
    check_tensor("y", y, 3)
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"cosine_cost needs x (B, La, D) and y (B, Lt, D) with the same B and D, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    check_masks("x_mask", x_mask, "y_mask", y_mask, (x.shape[0], x.shape[1], y.shape[1]))
    check_finite("x", x.detach(), x_mask.unsqueeze(2), ("y", y.detach(), y_mask.unsqueeze(2)))
    return cosine_of(x, y, x_mask, y_mask)


def temporal_distance(x_mask: torch.Tensor, y_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Cross-temporal distance of every (acoustic, linguistic) position pair, from the true lengths.

    .. math::
        d_{ij} = \frac{|i/l_a - j/l_t|}{\sqrt{1/l_a^2 + 1/l_t^2}}, \quad i = 1..l_a,\ j = 1..l_t

    i.e. the distance of the grid point :math:`(i/l_a, j/l_t)` to the diagonal of the unit square, in units
    of one grid step (TOT-CAKT Eq. 13). i and j are ranks among the real positions, so any mask pattern is
    allowed (for ESPnet's prefix masks they are the positions themselves).

    Parameters
    ----------
    x_mask, y_mask : torch.Tensor
        (B, La) / (B, Lt) bool masks, True on real positions.
    dtype : torch.dtype
        Output dtype.

    Returns
    -------
    torch.Tensor
        (B, La, Lt) distances; 0 wherever either side is padding.

    References
    ----------
    X. Lu, P. Shen, Y. Tsao, H. Kawai, "Temporal order preserved optimal transport-based cross-modal knowledge
    transfer learning for ASR" (TOT-CAKT), arXiv:2409.02239, 2024, Eq. (13).

    Examples
    --------
    >>> d = temporal_distance(torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool))
    >>> round(float(d[0, 1, 0]), 6)  # (i, j) = (2, 1): on the diagonal
    0.0
    """
    for name, m in (("x_mask", x_mask), ("y_mask", y_mask)):
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor (True = real position)")
    if x_mask.dim() != 2 or y_mask.dim() != 2 or x_mask.shape[0] != y_mask.shape[0]:
        raise ValueError(
            f"temporal_distance needs masks (B, La) and (B, Lt), got {tuple(x_mask.shape)} and {tuple(y_mask.shape)}"
        )
    la = x_mask.sum(-1).to(dtype).clamp_min(1.0)[:, None, None]
    lt = y_mask.sum(-1).to(dtype).clamp_min(1.0)[:, None, None]
    i = ranks(x_mask, dtype).unsqueeze(2)
    j = ranks(y_mask, dtype).unsqueeze(1)
    d = (i / la - j / lt).abs() / torch.sqrt(1.0 / la**2 + 1.0 / lt**2)
    pair = x_mask.unsqueeze(2) & y_mask.unsqueeze(1)
    return d * pair.to(dtype)


def tot_cost(cost: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Temporal-order-preserving cost :math:`\tilde C = C + \beta\, d^2` (TOT-CAKT Eq. 19).

    Parameters
    ----------
    cost : torch.Tensor
        (B, La, Lt) node cost C.
    x_mask, y_mask : torch.Tensor
        (B, La) / (B, Lt) bool masks.
    beta : float
        Weight :math:`\beta \ge 0` of the temporal prior; 0 returns ``cost`` unchanged (plain OT, OT-BERT).

    Returns
    -------
    torch.Tensor
        (B, La, Lt) cost :math:`\tilde C` (float32, float64 for a float64 cost).

    References
    ----------
    X. Lu, P. Shen, Y. Tsao, H. Kawai, "Temporal order preserved optimal transport-based cross-modal knowledge
    transfer learning for ASR" (TOT-CAKT), arXiv:2409.02239, 2024, Eq. (13) and (19).

    Examples
    --------
    >>> m = torch.ones(1, 3, dtype=torch.bool)
    >>> round(tot_cost(torch.zeros(1, 3, 3), m, m, beta=0.5)[0, 0, 2].item(), 5)  # 0.5 * d^2, d = sqrt(2)
    1.0
    """
    beta = as_number("beta", beta, low=0.0)
    if beta == 0:
        return cost
    with fp32_region(cost):
        d = temporal_distance(x_mask, y_mask, solver_dtype(cost))
        return cost.to(d.dtype) + beta * d.pow(2)
