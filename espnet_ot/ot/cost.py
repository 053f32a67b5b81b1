"""Ground costs between acoustic and linguistic sequences: cosine cost (Eq. 7) and temporal prior (Eq. 13, 19)."""

import torch

from espnet_ot.ot._utils import check_masks, solver_dtype


def cosine_cost(
    x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor
) -> torch.Tensor:
    r"""Pairwise cosine cost :math:`C_{ij} = 1 - \cos(h_i, z_j)` (TOT-CAKT Eq. 7).

    Args:
        x: acoustic features :math:`H_A`, (B, La, D).
        y: linguistic features :math:`Z_L`, (B, Lt, D).
        x_mask, y_mask: (B, La) / (B, Lt) bool, True on real positions.

    Returns:
        (B, La, Lt) cost in float32 (float64 for float64 inputs); 0 wherever either side is padding.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(
            f"cosine_cost needs x (B, La, D) and y (B, Lt, D) with the same B and D, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    check_masks("x_mask", x_mask, "y_mask", y_mask, (x.shape[0], x.shape[1], y.shape[1]))
    dtype = solver_dtype(x, y)
    xn = torch.nn.functional.normalize(x.to(dtype), dim=-1, eps=1e-8)
    yn = torch.nn.functional.normalize(y.to(dtype), dim=-1, eps=1e-8)
    cost = 1.0 - torch.bmm(xn, yn.transpose(1, 2))
    pair = x_mask.unsqueeze(2) & y_mask.unsqueeze(1)
    return cost * pair.to(dtype)


def temporal_distance(
    x_mask: torch.Tensor, y_mask: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    r"""Cross-temporal distance of TOT-CAKT Eq. (13), from each utterance's true lengths.

    .. math::
        d_{ij} = \frac{|i/l_a - j/l_t|}{\sqrt{1/l_a^2 + 1/l_t^2}}, \quad i = 1..l_a,\ j = 1..l_t

    i.e. the distance of the grid point (i/l_a, j/l_t) to the diagonal of the unit square, measured
    in units of one grid step. Masks must be prefix masks (real positions first, as ESPnet pads).

    Returns:
        (B, La, Lt) in ``dtype``; 0 wherever either side is padding.
    """
    if x_mask.dim() != 2 or y_mask.dim() != 2 or x_mask.shape[0] != y_mask.shape[0]:
        raise ValueError(
            f"temporal_distance needs masks (B, La) and (B, Lt), got {tuple(x_mask.shape)} and {tuple(y_mask.shape)}"
        )
    la = x_mask.sum(-1).to(dtype).clamp_min(1.0)[:, None, None]
    lt = y_mask.sum(-1).to(dtype).clamp_min(1.0)[:, None, None]
    i = torch.arange(1, x_mask.shape[1] + 1, device=x_mask.device, dtype=dtype)[None, :, None]
    j = torch.arange(1, y_mask.shape[1] + 1, device=y_mask.device, dtype=dtype)[None, None, :]
    d = (i / la - j / lt).abs() / torch.sqrt(1.0 / la**2 + 1.0 / lt**2)
    pair = x_mask.unsqueeze(2) & y_mask.unsqueeze(1)
    return d * pair.to(dtype)


def tot_cost(
    cost: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor, beta: float
) -> torch.Tensor:
    r"""Temporal-order-preserving cost :math:`\tilde C = C + \beta\, d^2` (TOT-CAKT Eq. 19).

    ``beta = 0`` returns ``cost`` unchanged (plain OT, OT-BERT).
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0 (temporal prior weight), got {beta}")
    if beta == 0:
        return cost
    d = temporal_distance(x_mask, y_mask, solver_dtype(cost))
    return cost.to(d.dtype) + beta * d.pow(2)
