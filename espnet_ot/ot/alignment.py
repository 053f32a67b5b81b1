"""OT losses for knowledge transfer: transport costs with envelope or unrolled gradients, and coupling diagnostics."""

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from espnet_ot.ot._utils import as_number, check_finite, check_masks, check_tensor, cosine_of, fp32_region, ranks
from espnet_ot.ot.cost import tot_cost
from espnet_ot.ot.gromov import fused_gromov_wasserstein, gw_constant, gw_tensor_product
from espnet_ot.ot.sinkhorn import EPS_SCALING, sinkhorn, sinkhorn_unbalanced
from espnet_ot.ot.structure import FeatureStructure, MixedStructure, Structure, TemporalStructure

METHODS = ("ot", "tot", "gmot")
EDGES = ("temporal", "feature", "mix")
GRADS = ("envelope", "unrolled")


def transport_cost(cost: torch.Tensor, coupling: torch.Tensor) -> torch.Tensor:
    r"""Per-utterance transport cost :math:`\langle \gamma, C \rangle` (TOT-CAKT Eq. 5 and 15).

    With a detached coupling (envelope theorem, Danskin) the gradient w.r.t. the cost is exactly
    :math:`\gamma`: for the optimal entropic coupling it equals the gradient of the entropic OT value.

    Parameters
    ----------
    cost : torch.Tensor
        (B, La, Lt) cost.
    coupling : torch.Tensor
        (B, La, Lt) coupling.

    Returns
    -------
    torch.Tensor
        (B,) transport costs, in the cost's dtype.

    References
    ----------
    J. M. Danskin, "The theory of max-min, with applications", SIAM J. Appl. Math. 14(4), 1966.

    Examples
    --------
    >>> transport_cost(torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.25))
    tensor([1.])
    """
    with fp32_region(cost):
        return (coupling.to(cost.dtype) * cost).sum((1, 2))


def fgw_cost(
    cost: torch.Tensor,
    struct_x: Structure,
    struct_y: Structure,
    coupling: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    r"""Per-utterance fused Gromov-Wasserstein objective with square loss.

    :math:`(1-\alpha)\langle \tilde C, \gamma\rangle + \alpha \langle \mathcal{L}(S_A, S_L) \otimes \gamma, \gamma\rangle`,
    differentiable in the cost and in the structures (feature edges pass gradients to the features).

    Parameters
    ----------
    cost : torch.Tensor
        (B, La, Lt) node cost :math:`\tilde C`.
    struct_x, struct_y : Structure
        Edge matrices :math:`S_A`, :math:`S_L`.
    coupling : torch.Tensor
        (B, La, Lt) coupling.
    a, b : torch.Tensor
        (B, La), (B, Lt) marginals of the coupling (the constant term of the square loss).
    alpha : float
        Trade-off in [0, 1].

    Returns
    -------
    torch.Tensor
        (B,) objective values.

    References
    ----------
    T. Vayer, L. Chapel, R. Flamary, R. Tavenard, N. Courty, "Optimal transport for structured data with
    application on graphs", ICML 2019, Eq. (3).
    G. Peyré, M. Cuturi, J. Solomon, "Gromov-Wasserstein averaging of kernel and distance matrices",
    ICML 2016, Prop. 1.

    Examples
    --------
    >>> from espnet_ot.ot import TemporalStructure
    >>> m = torch.ones(1, 3, dtype=torch.bool)
    >>> g = torch.eye(3).unsqueeze(0) / 3
    >>> S = TemporalStructure(m)
    >>> float(fgw_cost(torch.zeros(1, 3, 3), S, S, g, m.float() / 3, m.float() / 3, 0.5)) < 1e-7
    True
    """
    node = transport_cost(cost, coupling)
    if alpha == 0:
        return node
    with fp32_region(cost):
        const = gw_constant(struct_x, struct_y, a, b)
        edge = (gw_tensor_product(struct_x, struct_y, coupling.to(cost.dtype), const) * coupling.to(cost.dtype)).sum(
            (1, 2)
        )
        return (1.0 - alpha) * node + alpha * edge


@dataclass
class OTAlignment:
    r"""Result of :func:`ot_alignment`, all per utterance.

    Attributes
    ----------
    loss : torch.Tensor
        (B,) transport objective (differentiable).
    coupling : torch.Tensor
        (B, La, Lt) coupling :math:`\gamma`.
    cost : torch.Tensor
        (B, La, Lt) node cost used.
    marginal_err : torch.Tensor, optional
        (B,) final L1 marginal error of the (last inner) Sinkhorn solve.
    n_iter : torch.Tensor, optional
        (B,) Sinkhorn iterations used (summed over the outer iterations for ``gmot``).
    """

    loss: torch.Tensor
    coupling: torch.Tensor
    cost: torch.Tensor
    marginal_err: Optional[torch.Tensor] = None
    n_iter: Optional[torch.Tensor] = None


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
    max_iter: int = 5000,
    tol: float = 1e-4,
    relax: Optional[float] = None,
    eps_scaling: float = EPS_SCALING,
    gw_max_iter: int = 20,
    gw_tol: float = 1e-5,
) -> OTAlignment:
    r"""Couple acoustic nodes :math:`H_A` with linguistic nodes :math:`Z_L` and return the OT loss.

    * ``"ot"`` (OT-BERT): :math:`\min_\gamma \langle\gamma, C\rangle - \varepsilon H(\gamma)` with the cosine
      cost C (TOT-CAKT Eq. 7-8).
    * ``"tot"`` (TOT-CAKT): the same with :math:`\tilde C = C + \beta d^2` (TOT-CAKT Eq. 15, 19).
    * ``"gmot"`` (GM-OT): entropic fused Gromov-Wasserstein (:func:`fused_gromov_wasserstein`) with node cost
      :math:`\tilde C` (``beta = 0`` for none) and edges ``temporal`` / ``feature`` / ``mix`` (``edge_mix``
      weight on temporal).

    ``loss`` is the transport objective at the coupling without the entropy term:
    :math:`\langle\gamma,\tilde C\rangle` (``ot``/``tot``) or the FGW objective (``gmot``). With
    ``grad="envelope"`` (default) the solver runs without autograd and the coupling is a constant
    (Danskin's / envelope theorem), so memory does not grow with the iteration count; ``grad="unrolled"``
    differentiates through every solver iteration.

    Every Sinkhorn solve stops when its per-utterance L1 marginal error is below ``tol`` (eps-scaling makes
    this reachable at small ``eps``); ``max_iter`` is only a safety cap, and reaching it warns once.
    ``relax = tau`` makes the acoustic marginal soft (KL penalty :math:`\tau`, :func:`sinkhorn_unbalanced`,
    ``reg_type="kl"``) while every token keeps its mass: frames (silence, blanks) may stay unmatched.
    Cost, solver and loss compute in float32 (float64 for float64 inputs) even inside ``torch.autocast``; the
    solver switches to float64 at an ``eps`` too small for float32 to reach ``tol`` (below ~5e-8 / ``tol``).

    Parameters
    ----------
    h, z : torch.Tensor
        (B, La, D), (B, Lt, D) features of the same width.
    h_mask, z_mask : torch.Tensor
        Bool masks (B, La), (B, Lt), True on real positions.
    method : {"ot", "tot", "gmot"}
        Alignment method.
    eps : float
        Entropic regularisation :math:`\varepsilon` (TOT-CAKT's :math:`\tilde\alpha`).
    beta : float
        Temporal-prior weight (``tot``, ``gmot``).
    alpha : float
        FGW trade-off in [0, 1] (``gmot``).
    edges : {"temporal", "feature", "mix"}
        Edge matrices of ``gmot``; ``edge_mix`` is the temporal weight of ``mix``.
    grad : {"envelope", "unrolled"}
        Gradient mode.
    max_iter, tol : int, float
        Sinkhorn safety cap and per-utterance L1 marginal tolerance (the inner ones for ``gmot``).
    relax : float, optional
        KL penalty :math:`\tau > 0` on the acoustic marginal (None or inf: hard marginal).
    eps_scaling : float
        Ratio between eps-scaling stages (0 disables), see :func:`sinkhorn`.
    gw_max_iter, gw_tol : int, float
        Outer iterations / tolerance of ``gmot``.

    Returns
    -------
    OTAlignment
        ``loss`` (B,), ``coupling`` (B, La, Lt), ``cost`` (B, La, Lt), ``marginal_err`` (B,), ``n_iter`` (B,).

    References
    ----------
    X. Lu, P. Shen, Y. Tsao, H. Kawai, "Cross-modal alignment with optimal transport for CTC-based ASR"
    (OT-BERT), IEEE ASRU 2023.
    X. Lu, P. Shen, Y. Tsao, H. Kawai, "Temporal order preserved optimal transport-based cross-modal knowledge
    transfer learning for ASR" (TOT-CAKT), arXiv:2409.02239, 2024.
    X. Lu, P. Shen, Y. Tsao, H. Kawai, "Cross-modal knowledge transfer learning as graph matching based on
    optimal transport for ASR" (GM-OT), arXiv:2505.13079, 2025.
    T. Vayer, L. Chapel, R. Flamary, R. Tavenard, N. Courty, "Optimal transport for structured data with
    application on graphs", ICML 2019.
    L. Chizat, G. Peyré, B. Schmitzer, F.-X. Vialard, "Scaling algorithms for unbalanced optimal transport
    problems", Math. Comp. 87(314), 2018.

    Examples
    --------
    >>> import torch
    >>> h, z = torch.randn(2, 30, 16), torch.randn(2, 5, 16)
    >>> hm, zm = torch.ones(2, 30, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    >>> r = ot_alignment(h, z, hm, zm, method="tot", eps=0.05, beta=0.5)
    >>> r.loss.shape, bool((r.marginal_err <= 1e-4).all())
    (torch.Size([2]), True)
    """
    check_tensor("h", h, 3)
    check_tensor("z", z, 3)
    if h.shape[0] != z.shape[0] or h.shape[2] != z.shape[2]:
        raise ValueError(
            f"h (B, La, D) and z (B, Lt, D) need the same B and D, got {tuple(h.shape)} and {tuple(z.shape)}"
        )
    check_masks("h_mask", h_mask, "z_mask", z_mask, (h.shape[0], h.shape[1], z.shape[1]))
    check_finite("h", h.detach(), h_mask.unsqueeze(2), ("z", z.detach(), z_mask.unsqueeze(2)))
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if grad not in GRADS:
        raise ValueError(f"grad must be one of {GRADS}, got {grad!r}")
    if method == "gmot" and edges not in EDGES:
        raise ValueError(f"edges must be one of {EDGES}, got {edges!r}")
    tau = math.inf if relax is None else as_number("relax", relax, low=0.0, low_open=True, allow_inf=True)
    solver_kw = dict(max_iter=max_iter, tol=tol, eps_scaling=eps_scaling)
    with fp32_region(h):
        C = cosine_of(h, z, h_mask, z_mask)  # h, z checked above
        if method != "ot":
            C = tot_cost(C, h_mask, z_mask, beta)
        solve_ctx = torch.no_grad() if grad == "envelope" else torch.enable_grad()
        if method in ("ot", "tot"):
            with solve_ctx:
                C_solve = C.detach() if grad == "envelope" else C
                if math.isinf(tau):
                    gamma, log = sinkhorn(C_solve, h_mask, z_mask, eps, return_log=True, **solver_kw)
                else:
                    gamma, log = sinkhorn_unbalanced(
                        C_solve, h_mask, z_mask, eps, reg_m=(tau, math.inf), return_log=True, **solver_kw
                    )
            return OTAlignment(transport_cost(C, gamma), gamma, C, log["err"], log["n_iter"])

        edge_mix = as_number("edge_mix", edge_mix, low=0.0, high=1.0)
        Sx, Sy = _structures(edges, h, h_mask, edge_mix), _structures(edges, z, z_mask, edge_mix)
        with solve_ctx:
            if grad == "envelope":
                C_solve = C.detach()
                Sx_solve = _structures(edges, h.detach(), h_mask, edge_mix)
                Sy_solve = _structures(edges, z.detach(), z_mask, edge_mix)
            else:
                C_solve, Sx_solve, Sy_solve = C, Sx, Sy
            gamma, log = fused_gromov_wasserstein(
                C_solve,
                Sx_solve,
                Sy_solve,
                h_mask,
                z_mask,
                alpha,
                eps,
                max_iter=gw_max_iter,
                tol=gw_tol,
                sinkhorn_max_iter=max_iter,
                sinkhorn_tol=tol,
                relax=relax,
                eps_scaling=eps_scaling,
                return_log=True,
            )
        if math.isinf(tau):
            a = h_mask.to(C.dtype) / h_mask.sum(-1, keepdim=True).clamp_min(1)
        else:
            a = gamma.sum(2).detach().to(C.dtype)  # the relaxed acoustic marginal of the coupling
        b = z_mask.to(C.dtype) / z_mask.sum(-1, keepdim=True).clamp_min(1)
        loss = fgw_cost(C, Sx, Sy, gamma, a, b, as_number("alpha", alpha, low=0.0, high=1.0))
        return OTAlignment(loss, gamma, C, log["sinkhorn_err"], log["sinkhorn_iter"])


def coupling_diagnostics(
    coupling: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor, band: float = 0.1
) -> Dict[str, torch.Tensor]:
    r"""Per-utterance coupling diagnostics.

    Parameters
    ----------
    coupling : torch.Tensor
        (B, La, Lt) coupling.
    x_mask, y_mask : torch.Tensor
        (B, La) / (B, Lt) bool masks (positions are ranks among the real ones).
    band : float
        Relative half-width of the diagonal band.

    Returns
    -------
    dict
        ``band_mass`` (B,): mass of :math:`\gamma` within :math:`|i/l_a - j/l_t| \le` ``band`` (1 for a
        monotonic, evenly paced alignment; about 2*band for an uninformative one); ``entropy`` (B,):
        :math:`H(\gamma) = -\sum \gamma \log \gamma` (``log(l_a l_t)`` for the uniform coupling); ``entropy_rel``
        (B,): :math:`H(\gamma) / \log(l_a l_t)`, 1 for the uniform coupling, ``log(max(l_a, l_t)) / log(l_a l_t)``
        (about 0.5) for a one-to-one matching.

    Examples
    --------
    >>> m = torch.ones(1, 4, dtype=torch.bool)
    >>> round(float(coupling_diagnostics(torch.eye(4).unsqueeze(0) / 4, m, m)["band_mass"]), 4)
    1.0
    """
    with torch.no_grad(), fp32_region(coupling):
        g = coupling.float()
        # positions in float64 with a tiny margin: pairs exactly on the band's edge (e.g. 9/15 - 4/8 = 0.1) count
        # as inside whatever the rounding
        la = x_mask.sum(-1).double().clamp_min(1)[:, None, None]
        lt = y_mask.sum(-1).double().clamp_min(1)[:, None, None]
        i = ranks(x_mask, torch.float64).unsqueeze(2)
        j = ranks(y_mask, torch.float64).unsqueeze(1)
        inside = ((i / la - j / lt).abs() <= band + 1e-9).to(g.dtype)
        band_mass = (g * inside).sum((1, 2))
        entropy = -(torch.xlogy(g, g)).sum((1, 2))
        uniform = torch.log(la * lt).flatten().clamp_min(1e-12).to(entropy.dtype)
    return {"band_mass": band_mass, "entropy": entropy, "entropy_rel": entropy / uniform}
