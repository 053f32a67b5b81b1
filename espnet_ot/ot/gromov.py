"""Batched entropic fused Gromov-Wasserstein (GM-OT) by projected mirror descent with Sinkhorn steps."""

import functools
import math
import warnings
from typing import Dict, Optional, Tuple, Union

import torch

from espnet_ot.ot._newton import COMPACT_AT, write_back
from espnet_ot.ot._sinkhorn_driver import EPS_SCALING, SolverOptions, solve
from espnet_ot.ot._sinkhorn_kernels import Side
from espnet_ot.ot._utils import (
    as_number,
    check_masks,
    check_tensor,
    fp32_region,
    resolving_dtype,
    solver_dtype,
    uniform_weights,
)
from espnet_ot.ot.sinkhorn import sinkhorn, sinkhorn_unbalanced
from espnet_ot.ot.structure import Structure, as_structure


def gw_tensor_product(Sx: Structure, Sy: Structure, gamma: torch.Tensor, const: torch.Tensor) -> torch.Tensor:
    r"""The square-loss tensor :math:`\mathcal{L}(S_A, S_L) \otimes \gamma = c_{A,L} - 2\, S_A \gamma S_L^T`.

    Peyré, Cuturi & Solomon, "Gromov-Wasserstein averaging of kernel and distance matrices", ICML 2016,
    Prop. 1 with :math:`f_1(a) = a^2, f_2(b) = b^2, h_1(a) = a, h_2(b) = 2b`, where
    :math:`c_{A,L} = (S_A^{\circ 2} a) 1^T + 1 (S_L^{\circ 2} b)^T` is ``const``. Cost
    O(La^2 Lt + La Lt^2) for dense structures, O(La Lt) for temporal ones; no 4-D tensor is formed.
    """
    return const - 2.0 * Sx.matmul(Sy.rmatmul(gamma))  # gamma S_L^T = gamma S_L (S_L symmetric)


def gw_constant(Sx: Structure, Sy: Structure, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r""":math:`c_{A,L} = (S_A^{\circ 2} a) 1^T + 1 (S_L^{\circ 2} b)^T`, shape (B, La, Lt)."""
    return Sx.sq_matvec(a).unsqueeze(2) + Sy.sq_matvec(b).unsqueeze(1)


def fused_gromov_wasserstein(
    cost: torch.Tensor,
    struct_x,
    struct_y,
    x_mask: torch.Tensor,
    y_mask: torch.Tensor,
    alpha: float,
    eps: float,
    max_iter: int = 100,
    tol: float = 1e-6,
    sinkhorn_max_iter: int = 5000,
    sinkhorn_tol: float = 1e-7,
    check_every: int = 10,
    return_log: bool = False,
    relax: Optional[float] = None,
    eps_scaling: float = EPS_SCALING,
) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
    r"""Entropic fused Gromov-Wasserstein coupling with square loss, batched over padded sequences.

    For each utterance,

    .. math::
        \gamma^\star = \mathop{\arg\min}_{\gamma \in \Pi(a, b)} (1-\alpha) \langle \tilde C, \gamma \rangle
        + \alpha \sum_{i,k,j,l} (S_A(i,k) - S_L(j,l))^2 \gamma_{ij} \gamma_{kl} - \varepsilon H(\gamma)

    (Vayer et al. 2019, Eq. 3 with an entropic term) solved by projected mirror descent (Peyré, Cuturi &
    Solomon 2016, Alg. 1): repeat :math:`G = (1-\alpha)\tilde C + 2\alpha\, \mathcal{L}(S_A, S_L) \otimes \gamma`,
    :math:`\gamma \leftarrow \mathrm{Sinkhorn}(G, \varepsilon)` until
    :math:`\|\gamma_{new} - \gamma\|_F <` ``tol`` per utterance, starting from :math:`\gamma = a b^T`. The first
    Sinkhorn solve uses eps-scaling, later ones are warm-started from the previous potentials. The tensor
    product uses the identity of :func:`gw_tensor_product` (never a 4-D tensor) and the structures' fast
    operators (:class:`~espnet_ot.ot.structure.TemporalStructure` is O(L)). With ``alpha = 0`` G does not
    depend on :math:`\gamma`, so one step is exact and the answer is exactly :func:`~espnet_ot.ot.sinkhorn`'s.
    Converged utterances are frozen (batch-independent results); once at most half of the iterated ones are
    left, those are iterated as a smaller batch (the others are final). With ``relax = tau`` every inner solve is
    :func:`~espnet_ot.ot.sinkhorn_unbalanced` with ``reg_m = (tau, inf)`` and the square-loss constant uses the
    coupling's actual acoustic marginal. Computation is in float32 (float64 for float64 inputs) also under
    ``torch.autocast``; at an ``eps`` too small for float32 to reach ``sinkhorn_tol`` (below ~5e-8 /
    ``sinkhorn_tol``) in float64, the coupling returned in the inputs' dtype.

    Parameters
    ----------
    cost : torch.Tensor
        (B, La, Lt) node cost :math:`\tilde C` (e.g. cosine cost, optionally with temporal prior).
    struct_x, struct_y : torch.Tensor or Structure
        Edge matrices of each side: (B, L, L) tensors or :class:`~espnet_ot.ot.structure.Structure` operators.
    x_mask, y_mask : torch.Tensor
        (B, La) / (B, Lt) bool, True on real positions.
    alpha : float
        Trade-off in [0, 1] between node (0) and edge (1) costs.
    eps : float
        Entropic regularisation of every Sinkhorn step.
    max_iter, tol : int, float
        Outer mirror-descent iterations and tolerance on the Frobenius change of :math:`\gamma`.
    sinkhorn_max_iter, sinkhorn_tol, check_every : int, float, int
        Inner Sinkhorn cap, L1 marginal tolerance and check interval (see :func:`~espnet_ot.ot.sinkhorn`).
    return_log : bool
        Also return a dict with ``n_iter`` (B,) outer iterations, ``err`` (B,) last outer step,
        ``sinkhorn_err`` (B,) last inner marginal error and ``sinkhorn_iter`` (B,) total inner iterations.
    relax : float, optional
        KL penalty on the acoustic marginal (None or inf: hard).
    eps_scaling : float
        eps-scaling ratio of the first inner solve (0 disables).

    Returns
    -------
    coupling : torch.Tensor
        (B, La, Lt), zero on padding; with ``return_log``, ``(coupling, log)``.

    References
    ----------
    X. Lu, P. Shen, Y. Tsao, H. Kawai, "Cross-modal knowledge transfer learning as graph matching based on
    optimal transport for ASR" (GM-OT), arXiv:2505.13079, 2025.
    G. Peyré, M. Cuturi, J. Solomon, "Gromov-Wasserstein averaging of kernel and distance matrices",
    ICML 2016.
    T. Vayer, L. Chapel, R. Flamary, R. Tavenard, N. Courty, "Optimal transport for structured data with
    application on graphs", ICML 2019.

    Examples
    --------
    >>> import torch
    >>> from espnet_ot.ot import TemporalStructure, fused_gromov_wasserstein
    >>> mx, my = torch.ones(1, 12, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)
    >>> gamma = fused_gromov_wasserstein(torch.rand(1, 12, 4), TemporalStructure(mx), TemporalStructure(my),
    ...                                  mx, my, alpha=0.5, eps=0.05)
    >>> round(float(gamma.sum()), 4)
    1.0
    """
    check_tensor("cost", cost, 3)
    check_masks("x_mask", x_mask, "y_mask", y_mask, tuple(cost.shape))
    alpha = as_number("alpha", alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (0 = node costs only, 1 = edges only), got {alpha}")
    max_iter = as_number("max_iter", max_iter, low=1, integer=True)
    tol = as_number("tol", tol, low=0.0)
    eps = as_number("eps", eps, low=0.0, low_open=True)
    sinkhorn_max_iter = as_number("sinkhorn_max_iter", sinkhorn_max_iter, low=1, integer=True)
    sinkhorn_tol = as_number("sinkhorn_tol", sinkhorn_tol, low=0.0)
    check_every = as_number("check_every", check_every, low=1, integer=True)
    eps_scaling = as_number("eps_scaling", eps_scaling, low=0.0, high=1.0)
    tau = math.inf if relax is None else as_number("relax", relax, low=0.0, low_open=True, allow_inf=True)
    out_dtype = solver_dtype(cost)
    dtype = resolving_dtype(out_dtype, eps, sinkhorn_tol)  # float64 at an eps too small for float32 to reach tol
    with fp32_region(cost):
        pair = x_mask.unsqueeze(2) & y_mask.unsqueeze(1)
        # padding may hold anything: 0 there keeps G finite (NaN/Inf at real pairs shows in the first, cold solve)
        M = torch.where(pair, cost.to(dtype), torch.zeros((), dtype=dtype, device=cost.device))
        Sx = as_structure(struct_x, x_mask, "struct_x", "x_mask")
        Sy = as_structure(struct_y, y_mask, "struct_y", "y_mask")
        a, b = uniform_weights(x_mask, dtype), uniform_weights(y_mask, dtype)
        B = M.shape[0]
        active = x_mask.any(-1) & y_mask.any(-1)
        trusted = None  # warm inner solves skip the cost scan when no utterance is empty (G is finite: M is)
        work = _Work(M, (Sx, Sy), (x_mask, y_mask), (a, b), alpha, tau)
        unrolled = functools.partial(
            sinkhorn if math.isinf(tau) else sinkhorn_unbalanced,
            eps=eps,
            max_iter=sinkhorn_max_iter,
            tol=sinkhorn_tol,
            check_every=check_every,
            return_log=True,
            warn=False,
            **({} if math.isinf(tau) else {"reg_m": (tau, math.inf)}),
        )
        inner = SolverOptions(  # the inner solves' options (stage_iter, newton_steps: the defaults)
            eps=eps,
            taus=(tau, math.inf),
            max_iter=sinkhorn_max_iter,
            tol=sinkhorn_tol,
            check_every=check_every,
            eps_scaling=eps_scaling,
        )
        # the whole batch's results; the loop works on `rows`, the utterances still iterating (all at first, a
        # smaller batch once at most COMPACT_AT of them are left), and writes their state back when it shrinks
        zeros = functools.partial(torch.zeros, B, device=M.device)
        state = {
            "gamma": a.unsqueeze(2) * b.unsqueeze(1),
            "f": torch.zeros_like(a),
            "g": torch.zeros_like(b),
            "err": zeros(dtype=dtype),
            "n_iter": zeros(dtype=torch.long),
            "s_err": zeros(dtype=dtype),
            "s_iter": zeros(dtype=torch.long),
        }
        rows, w = None, dict(state)
        warm = False
        capped = False
        unrolled_grad = False
        for _ in range(max_iter):
            n_active = int(active.sum())  # the loop's one host synchronisation
            if n_active == 0:
                break
            if trusted is None:
                trusted = n_active == B
            if warm and n_active <= COMPACT_AT * active.numel() and not unrolled_grad:
                keep = active.nonzero(as_tuple=True)[0]  # converged utterances are final: set them aside
                rows = write_back(state, w, rows)
                rows = keep if rows is None else rows[keep]
                work, w, active = work.take(keep), {k: v[keep] for k, v in w.items()}, active[keep]
            gamma = w["gamma"]
            G = work.gradient(gamma)
            # every utterance is solved, the converged ones (frozen below) from their own potentials, so they
            # converge at once and no utterance's result depends on its batch
            init = (w["f"], w["g"]) if warm else None
            unrolled_grad = G.requires_grad and torch.is_grad_enabled()
            if unrolled_grad:  # grad="unrolled": differentiable iterations
                gamma_new, log = unrolled(G, work.mx, work.my, init=init, eps_scaling=eps_scaling)
                capped = capped or bool((log["err"] >= sinkhorn_tol).any())
            else:  # the solver proper, arguments checked above
                gamma_new, log = solve(G, work.mx, work.my, inner, init, trusted=warm and trusted, sides=work.sides)
                capped = capped or log["capped"]
            step = torch.linalg.vector_norm(gamma_new - gamma, dim=(1, 2))
            w["gamma"] = torch.where(active.view(-1, 1, 1), gamma_new, gamma)
            w["f"] = torch.where(active.view(-1, 1), log["f"], w["f"])
            w["g"] = torch.where(active.view(-1, 1), log["g"], w["g"])
            w["s_err"] = torch.where(active, log["err"], w["s_err"])
            w["s_iter"] = w["s_iter"] + log["n_iter"] * active.long()
            w["err"] = torch.where(active, step, w["err"])
            w["n_iter"] = w["n_iter"] + active.long()
            warm = True
            if alpha == 0:  # G = cost does not depend on gamma: the first step is the exact answer
                break
            active = active & ~(step < tol)
        write_back(state, w, rows)
        if dtype != out_dtype:  # solved in float64 at a small eps: returned in the inputs' dtype
            state.update({k: state[k].to(out_dtype) for k in ("gamma", "s_err", "err")})
        gamma, s_err = state["gamma"], state["s_err"]
    if capped:
        warnings.warn(
            f"fused_gromov_wasserstein: an inner Sinkhorn reached sinkhorn_max_iter={sinkhorn_max_iter} before "
            f"sinkhorn_tol={sinkhorn_tol:g} (worst L1 marginal error {float(s_err.max()):.3g}); raise it or eps",
            RuntimeWarning,
            stacklevel=2,
        )
    if return_log:
        return gamma, {
            "n_iter": state["n_iter"],
            "err": state["err"],
            "sinkhorn_err": s_err,
            "sinkhorn_iter": state["s_iter"],
        }
    return gamma


class _Work:
    """The data of the utterances GM-OT's mirror descent iterates on; ``take`` restricts it to a sub-batch."""

    def __init__(self, M, structs, masks, weights, alpha, tau):
        (self.Sx, self.Sy), (self.mx, self.my), (a, self.b) = structs, masks, weights
        self.M, self.alpha, self.tau = M, alpha, tau
        self.sides = (Side(self.mx, tau, "kl", M.dtype), Side(self.my, math.inf, "kl", M.dtype))
        # G = (1 - alpha) C + 2 alpha (c_AL - 2 S_A gamma S_L): the part without gamma is `base` (the square-loss
        # constant c_AL uses the coupling's own acoustic marginal when that is relaxed, so it changes with gamma)
        self.base = None
        if alpha > 0 and math.isinf(tau):
            self.base = torch.add((1.0 - alpha) * M, gw_constant(self.Sx, self.Sy, a, self.b), alpha=2.0 * alpha)

    def gradient(self, gamma: torch.Tensor) -> torch.Tensor:
        """The mirror-descent step's cost G at the coupling ``gamma``."""
        if self.alpha == 0:
            return self.M
        base = self.base
        if base is None:
            const = gw_constant(self.Sx, self.Sy, gamma.sum(2), self.b)
            base = torch.add((1.0 - self.alpha) * self.M, const, alpha=2.0 * self.alpha)
        return torch.add(base, self.Sx.matmul(self.Sy.rmatmul(gamma)), alpha=-4.0 * self.alpha)

    def take(self, idx: torch.Tensor) -> "_Work":
        """The data of the utterances ``idx`` alone."""
        sub = object.__new__(_Work)
        sub.M, sub.Sx, sub.Sy = self.M[idx], self.Sx.subset(idx), self.Sy.subset(idx)
        sub.mx, sub.my, sub.b = self.mx[idx], self.my[idx], self.b[idx]
        sub.alpha, sub.tau = self.alpha, self.tau
        sub.base = None if self.base is None else self.base[idx]
        sub.sides = tuple(s.subset(idx) for s in self.sides)
        return sub
