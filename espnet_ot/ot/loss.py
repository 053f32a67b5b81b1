"""OT losses for knowledge transfer: transport costs with envelope or unrolled gradients, and coupling diagnostics."""

from dataclasses import dataclass
from typing import Dict

import torch

from espnet_ot.ot.cost import cosine_cost, tot_cost
from espnet_ot.ot.gromov import fused_gromov_wasserstein, gw_constant, gw_tensor_product
from espnet_ot.ot.sinkhorn import sinkhorn
from espnet_ot.ot.structure import FeatureStructure, MixedStructure, Structure, TemporalStructure

METHODS = ("ot", "tot", "gmot")
EDGES = ("temporal", "feature", "mix")
GRADS = ("envelope", "unrolled")


def transport_cost(cost: torch.Tensor, coupling: torch.Tensor) -> torch.Tensor:
    r"""Per-utterance transport cost :math:`\langle \gamma, C \rangle`, shape (B,) (TOT-CAKT Eq. 5/15).

    With a detached coupling (envelope theorem, Danskin) the gradient w.r.t. the cost is exactly
    :math:`\gamma`: for the optimal entropic coupling it equals the gradient of the entropic OT value.
    """
    return (coupling.to(cost.dtype) * cost).sum((1, 2))


def fgw_cost(
    cost: torch.Tensor, struct_x: Structure, struct_y: Structure, coupling: torch.Tensor,
    a: torch.Tensor, b: torch.Tensor, alpha: float,
) -> torch.Tensor:
    r"""Per-utterance fused Gromov-Wasserstein objective (DESIGN §3), shape (B,):

    :math:`(1-\alpha)\langle \tilde C, \gamma\rangle + \alpha \langle \mathcal{L}(S_A, S_L) \otimes \gamma, \gamma\rangle`,
    differentiable in the cost and in the structures (feature edges pass gradients to the features).
    """
    node = transport_cost(cost, coupling)
    if alpha == 0:
        return node
    const = gw_constant(struct_x, struct_y, a, b)
    edge = (gw_tensor_product(struct_x, struct_y, coupling.to(cost.dtype), const) * coupling.to(cost.dtype)).sum((1, 2))
    return (1.0 - alpha) * node + alpha * edge


@dataclass
class OTAlignment:
    """Result of :func:`ot_alignment`: per-utterance loss (B,), coupling (B, La, Lt) and the node cost used."""

    loss: torch.Tensor
    coupling: torch.Tensor
    cost: torch.Tensor


def _structures(kind: str, feats: torch.Tensor, mask: torch.Tensor, mix: float) -> Structure:
    if kind == "temporal":
        return TemporalStructure(mask)
    if kind == "feature":
        return FeatureStructure(feats, mask)
    return MixedStructure([TemporalStructure(mask), FeatureStructure(feats, mask)], [mix, 1.0 - mix])


def ot_alignment(
    h: torch.Tensor,
    z: torch.Tensor,
    h_mask: torch.Tensor,
    z_mask: torch.Tensor,
    method: str = "tot",
    eps: float = 0.5,
    beta: float = 0.5,
    alpha: float = 0.5,
    edges: str = "temporal",
    edge_mix: float = 0.5,
    grad: str = "envelope",
    max_iter: int = 100,
    tol: float = 1e-4,
    gw_max_iter: int = 20,
    gw_tol: float = 1e-5,
) -> OTAlignment:
    r"""Couple acoustic nodes :math:`H_A` with linguistic nodes :math:`Z_L` and return the OT loss.

    * ``"ot"`` (OT-BERT): :math:`\min_\gamma \langle\gamma, C\rangle - \varepsilon H(\gamma)`, C = cosine cost (Eq. 7-8).
    * ``"tot"`` (TOT-CAKT): same with :math:`\tilde C = C + \beta d^2` (Eq. 15, 19).
    * ``"gmot"`` (GM-OT): entropic fused Gromov-Wasserstein with node cost :math:`\tilde C` (``beta = 0``
      for none) and edges ``temporal`` / ``feature`` / ``mix`` (``edge_mix`` weight on temporal), DESIGN §3.

    ``loss`` is the transport objective at the coupling without the entropy term: :math:`\langle\gamma,\tilde C\rangle`
    (``ot``/``tot``) or the FGW objective (``gmot``). With ``grad="envelope"`` (default) the solver runs
    without autograd and the coupling is a constant (Danskin/envelope theorem), so memory does not grow
    with the iteration count; ``grad="unrolled"`` differentiates through every solver iteration.

    Args:
        h, z: (B, La, D), (B, Lt, D) features of the same width.
        h_mask, z_mask: bool masks, True on real positions.
        max_iter, tol: Sinkhorn iterations / tolerance (inner ones for ``gmot``).
        gw_max_iter, gw_tol: outer mirror-descent iterations / tolerance for ``gmot``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if grad not in GRADS:
        raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
    if method == "gmot" and edges not in EDGES:
        raise ValueError(f"edges must be one of {EDGES}, got {edges!r}")
    C = cosine_cost(h, z, h_mask, z_mask)
    if method != "ot":
        C = tot_cost(C, h_mask, z_mask, beta)
    solve_ctx = torch.no_grad() if grad == "envelope" else torch.enable_grad()
    if method in ("ot", "tot"):
        with solve_ctx:
            C_solve = C.detach() if grad == "envelope" else C
            gamma = sinkhorn(C_solve, h_mask, z_mask, eps, max_iter=max_iter, tol=tol)
        return OTAlignment(transport_cost(C, gamma), gamma, C)

    Sx, Sy = _structures(edges, h, h_mask, edge_mix), _structures(edges, z, z_mask, edge_mix)
    with solve_ctx:
        if grad == "envelope":
            C_solve = C.detach()
            Sx_solve = _structures(edges, h.detach(), h_mask, edge_mix)
            Sy_solve = _structures(edges, z.detach(), z_mask, edge_mix)
        else:
            C_solve, Sx_solve, Sy_solve = C, Sx, Sy
        gamma = fused_gromov_wasserstein(
            C_solve, Sx_solve, Sy_solve, h_mask, z_mask, alpha, eps,
            max_iter=gw_max_iter, tol=gw_tol, sinkhorn_max_iter=max_iter, sinkhorn_tol=tol,
        )
    a = h_mask.to(C.dtype) / h_mask.sum(-1, keepdim=True).clamp_min(1)
    b = z_mask.to(C.dtype) / z_mask.sum(-1, keepdim=True).clamp_min(1)
    return OTAlignment(fgw_cost(C, Sx, Sy, gamma, a, b, alpha), gamma, C)


def coupling_diagnostics(
    coupling: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor, band: float = 0.1
) -> Dict[str, torch.Tensor]:
    r"""Per-utterance coupling diagnostics, each (B,):

    * ``band_mass``: mass of :math:`\gamma` within the diagonal band :math:`|i/l_a - j/l_t| \le` ``band``
      (1 for a monotonic, evenly paced alignment; about 2*band for an uninformative one);
    * ``entropy``: :math:`H(\gamma) = -\sum \gamma \log \gamma` (``log(l_a l_t)`` for the uniform coupling).
    """
    with torch.no_grad():
        g = coupling.float()
        # positions in float64 with a tiny margin: pairs exactly on the band's edge (e.g. 9/15 - 4/8 = 0.1) count
        # as inside whatever the rounding
        la = x_mask.sum(-1).double().clamp_min(1)[:, None, None]
        lt = y_mask.sum(-1).double().clamp_min(1)[:, None, None]
        i = torch.arange(1, x_mask.shape[1] + 1, device=g.device, dtype=torch.float64)[None, :, None]
        j = torch.arange(1, y_mask.shape[1] + 1, device=g.device, dtype=torch.float64)[None, None, :]
        inside = ((i / la - j / lt).abs() <= band + 1e-9).to(g.dtype)
        band_mass = (g * inside).sum((1, 2))
        entropy = -(torch.xlogy(g, g)).sum((1, 2))
    return {"band_mass": band_mass, "entropy": entropy}

