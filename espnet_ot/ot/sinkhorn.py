"""Batched, masked entropic OT solvers: log-stabilised Sinkhorn with eps-scaling, balanced and (semi-)unbalanced."""

import math
import warnings
from typing import Dict, Optional, Tuple, Union

import torch

from espnet_ot.ot._utils import (
    as_number,
    bmv,
    check_finite,
    check_masks,
    check_tensor,
    fp32_region,
    marginal_noise,
    resolving_dtype,
    solver_dtype,
)

REG_TYPES = ("kl", "entropy")
STAGE_ITER = 10  # Sinkhorn iterations per stage of the eps ladder
# ratio of consecutive eps of the ladder. 0.25 was ~15% faster on the benchmark (TOT eps 0.01, B=32, La=200:
# 19 -> 16 ms) but at beta 2 one utterance's Newton stalled after the larger jump (195 iterations instead of 31)
EPS_SCALING = 0.5
# cap on Newton's rounds (trial points) at the target eps. Strong priors at small eps can need ~100 (beta 2,
# eps 0.01, 1000 frames: 45; a random batch at beta 3: 101), and Sinkhorn, which takes over at the cap, needs
# thousands there; rounds with few utterances left iterate those alone (COMPACT_AT), so they cost little
NEWTON_STEPS = 200
ROW_ROUNDING_ULPS = 4  # allowance for the rows' rounding in the stopping test (see _solve_checked)


def sinkhorn(
    cost: torch.Tensor,
    x_mask: torch.Tensor,
    y_mask: torch.Tensor,
    eps: float,
    max_iter: int = 5000,
    tol: float = 1e-6,
    check_every: int = 10,
    init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    return_log: bool = False,
    eps_scaling: float = EPS_SCALING,
    eps_init: Optional[float] = None,
    stage_iter: int = STAGE_ITER,
    warn: bool = True,
    newton_steps: int = NEWTON_STEPS,
) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
    r"""Entropic optimal transport between uniform distributions on the real positions, batched.

    Solves, for every utterance of the batch independently,

    .. math::
        \gamma^\star = \mathop{\arg\min}_{\gamma \in \Pi(a, b)} \langle \gamma, C \rangle - \varepsilon H(\gamma),
        \qquad a_i = 1/l_a,\ b_j = 1/l_t \text{ on real positions, 0 on padding},

    (Cuturi 2013, Eq. 2; TOT-CAKT Eq. 8 and 15) whose solution is
    :math:`\gamma_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)` for the dual potentials (f, g).

    Algorithm. Two solvers share an :math:`\varepsilon` ladder :math:`\varepsilon_k = 2^k \varepsilon` (ratio
    ``1/eps_scaling``), each stage warm-started from the previous potentials (Schmitzer 2019, Sec. 3.2; Chizat,
    Peyré, Schmitzer & Vialard 2018, Sec. 4.1).

    * Newton's method on the semi-dual in the token potentials g (the frame potentials f eliminated by their
      exact update; Cuturi & Peyré 2018; Brauer, Clason, Lorenz & Wirth 2017), for a hard token marginal with
      at most 512 tokens (``newton_steps > 0``): one (Lt x Lt) Cholesky solve per step and utterance, damped by
      a line search. The ladder starts at :math:`\min(\text{range}/8, 1)`, each stage is solved to a loose
      1e-2, then the target to ``tol``. At small :math:`\varepsilon` with a temporal prior this takes tens of
      steps where Sinkhorn takes thousands of iterations (and may not reach ``tol`` at all).
    * Sinkhorn's alternating projections in the log-stabilised *absorption* form (Schmitzer 2019, Alg. 2): the
      scalings are periodically absorbed into (f, g) and the kernel
      :math:`K_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)` is rebuilt, so it stays well scaled for any
      :math:`\varepsilon`, while the iterations in between are batched mat-vecs; the ladder starts at 1/8 of the
      utterance's cost range, ``stage_iter`` iterations per stage. Sinkhorn alone solves relaxed token
      marginals and long token sequences; with Newton it does the first few iterations at the target
      :math:`\varepsilon` when no ladder was needed (easy problems converge there) and takes over any utterance
      Newton leaves above ``tol``. Should a block under- or overflow, that utterance's block is redone with
      exact log-domain (logsumexp) updates.

    Finally the frame potentials are updated exactly, so the rows are exact to rounding, and the error reported
    is the column error of the coupling returned.

    Stopping rule: per utterance, the L1 error of the column marginal (rows are exact after each update)
    below ``tol``: checked after every Newton step, and in Sinkhorn after 3, 6 and 10 iterations at the target
    :math:`\varepsilon`, then every ``check_every`` (one host synchronisation per check or step). A converged
    utterance is frozen, so its coupling does not depend on its batch neighbours. ``max_iter`` is a safety cap
    on the iterations at the target :math:`\varepsilon` (Newton steps included); reaching it with some error
    above ``tol`` warns once (``warnings.warn``) with the worst error. Computation is in float32 (float64 for
    float64 costs), also inside ``torch.autocast`` regions. Float32 resolves the potentials (of size cost / eps)
    only to ~0.05 ulp / eps of L1 marginal error (costs of order 1): where that could exceed ``tol / 4`` (eps
    below ~5e-8 / ``tol``) the solve runs in float64 and the coupling comes back in the cost's dtype, so the
    coupling returned meets ``tol`` whenever no warning is given.

    Parameters
    ----------
    cost : torch.Tensor
        (B, La, Lt) ground cost :math:`C`; must be finite on real pairs.
    x_mask, y_mask : torch.Tensor
        (B, La) / (B, Lt) bool, True on real positions (any pattern). An utterance with no real position
        on either side gets an all-zero coupling.
    eps : float
        Entropic regularisation :math:`\varepsilon > 0`.
    max_iter : int
        Safety cap on the iterations at the target eps (one iteration = one update of f and of g).
    tol : float
        Per-utterance tolerance on the L1 marginal error.
    check_every : int
        Iterations between convergence checks / absorptions.
    init : tuple of torch.Tensor, optional
        Warm-start potentials (f, g), shapes (B, La), (B, Lt); then eps-scaling is off unless ``eps_init``
        is given.
    return_log : bool
        Also return a dict with ``f``, ``g`` (potentials), ``err`` (B,) (final L1 marginal error) and
        ``n_iter`` (B,) (iterations used, eps-scaling stages included).
    eps_scaling : float
        Ratio between consecutive eps-scaling stages, in (0, 1); 0 or 1 disables eps-scaling.
    eps_init : float, optional
        First eps of the ladder (default: per utterance, 1/8 of the range of its real costs).
    stage_iter : int
        Iterations per eps-scaling stage.
    warn : bool
        Warn when ``max_iter`` is reached before ``tol``.
    newton_steps : int
        Cap on Newton's rounds (trial points) at the target eps (0: Sinkhorn only).

    Returns
    -------
    coupling : torch.Tensor
        (B, La, Lt) coupling :math:`\gamma`, zero on padding; with ``return_log``, ``(coupling, log)``.

    References
    ----------
    M. Cuturi, "Sinkhorn distances: lightspeed computation of optimal transport", NeurIPS 2013.
    M. Cuturi, G. Peyré, "Semidual regularized optimal transport", SIAM Review 60(4), 941-965, 2018.
    C. Brauer, C. Clason, D. Lorenz, B. Wirth, "A Sinkhorn-Newton method for entropic optimal transport",
    arXiv preprint, 2017.
    B. Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
    SIAM J. Sci. Comput. 41(3), A1443-A1481, 2019.
    L. Chizat, G. Peyré, B. Schmitzer, F.-X. Vialard, "Scaling algorithms for unbalanced optimal transport
    problems", Math. Comp. 87(314), 2563-2609, 2018.
    G. Peyré, M. Cuturi, "Computational Optimal Transport", Found. Trends Mach. Learn. 11(5-6), 2019, Sec. 4.4.

    Examples
    --------
    >>> import torch
    >>> from espnet_ot.ot import sinkhorn
    >>> C = torch.rand(2, 5, 3)
    >>> mx, my = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)
    >>> gamma = sinkhorn(C, mx, my, eps=0.05)
    >>> torch.allclose(gamma.sum(1), torch.full((2, 3), 1 / 3), atol=1e-5)
    True
    """
    return _solve(
        "sinkhorn",
        cost,
        x_mask,
        y_mask,
        eps,
        (math.inf, math.inf),
        "kl",
        max_iter,
        tol,
        check_every,
        init,
        return_log,
        eps_scaling,
        eps_init,
        stage_iter,
        warn,
        newton_steps,
    )


def sinkhorn_unbalanced(
    cost: torch.Tensor,
    x_mask: torch.Tensor,
    y_mask: torch.Tensor,
    eps: float,
    reg_m=(1.0, math.inf),
    reg_type: str = "kl",
    max_iter: int = 5000,
    tol: float = 1e-6,
    check_every: int = 10,
    init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    return_log: bool = False,
    eps_scaling: float = EPS_SCALING,
    eps_init: Optional[float] = None,
    stage_iter: int = STAGE_ITER,
    warn: bool = True,
    newton_steps: int = NEWTON_STEPS,
) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
    r"""Entropic unbalanced (or semi-relaxed) optimal transport, batched: marginals penalised by KL.

    Solves, for every utterance independently, with uniform a, b on the real positions,

    .. math::
        \gamma^\star = \mathop{\arg\min}_{\gamma \ge 0} \langle \gamma, C \rangle
        + \varepsilon\, \Omega(\gamma) + \tau_x \mathrm{KL}(\gamma 1 \,|\, a) + \tau_y \mathrm{KL}(\gamma^T 1 \,|\, b),

    with :math:`\Omega(\gamma) = \mathrm{KL}(\gamma \,|\, a b^T)` for ``reg_type="kl"`` (default; POT's
    ``reg_type="kl"``) or :math:`\Omega(\gamma) = \sum \gamma_{ij} \log \gamma_{ij} - \gamma_{ij}` for
    ``reg_type="entropy"`` (POT's ``reg_type="entropy"``); the two differ once a marginal is relaxed.
    :math:`\tau = \infty` makes that marginal a hard constraint: ``reg_m=(tau, inf)`` is the semi-relaxed
    problem where every token gets its mass and frames may stay (partly) unmatched, ``(inf, inf)`` is
    :func:`sinkhorn`. The Sinkhorn updates become
    :math:`u \leftarrow (a / K v)^{\tau_x/(\tau_x+\varepsilon)}` (Chizat, Peyré, Schmitzer & Vialard 2018,
    Prop. 3.1 and Alg. 2; Séjourné, Feydy, Vialard, Trouvé & Peyré 2019), run in the same absorbed log
    domain, with the same eps-scaling, as :func:`sinkhorn`.

    Stopping rule: per utterance, :math:`\sum_j |(\gamma^T 1)_j - (\gamma'^T 1)_j| <` ``tol`` where
    :math:`\gamma'` is the coupling after the next column update (for a hard column marginal this is the
    L1 marginal error :math:`\|\gamma^T 1 - b\|_1`).

    Parameters
    ----------
    cost, x_mask, y_mask, eps
        As in :func:`sinkhorn`.
    reg_m : float or (float, float)
        Marginal penalties :math:`(\tau_x, \tau_y) > 0`; a single number is used for both; ``inf`` is a hard
        marginal.
    reg_type : {"kl", "entropy"}
        Entropic term :math:`\Omega` (see above).
    max_iter, tol, check_every, init, return_log, eps_scaling, eps_init, stage_iter, warn, newton_steps
        As in :func:`sinkhorn` (Newton's method needs a hard token marginal, ``tau_y = inf``).

    Returns
    -------
    coupling : torch.Tensor
        (B, La, Lt), zero on padding; with ``return_log``, ``(coupling, log)`` as in :func:`sinkhorn`.

    References
    ----------
    L. Chizat, G. Peyré, B. Schmitzer, F.-X. Vialard, "Scaling algorithms for unbalanced optimal transport
    problems", Math. Comp. 87(314), 2563-2609, 2018.
    T. Séjourné, J. Feydy, F.-X. Vialard, A. Trouvé, G. Peyré, "Sinkhorn divergences for unbalanced optimal
    transport", arXiv:1910.12958, 2019.
    R. Flamary et al., "POT: Python Optimal Transport", JMLR 22(78), 2021 (``ot.unbalanced.sinkhorn_unbalanced``).

    Examples
    --------
    >>> import math, torch
    >>> from espnet_ot.ot import sinkhorn_unbalanced
    >>> C = torch.rand(1, 6, 2)
    >>> mx, my = torch.ones(1, 6, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)
    >>> gamma = sinkhorn_unbalanced(C, mx, my, eps=0.1, reg_m=(0.5, math.inf))
    >>> torch.allclose(gamma.sum(1), torch.full((1, 2), 0.5), atol=1e-5)  # tokens hard
    True
    """
    if isinstance(reg_m, (tuple, list)):
        if len(reg_m) != 2:
            raise ValueError(f"reg_m must be a number or a pair (tau_x, tau_y), got {reg_m!r}")
        taus = tuple(reg_m)
    else:
        taus = (reg_m, reg_m)
    taus = tuple(as_number(f"reg_m[{k}]", t, low=0.0, low_open=True, allow_inf=True) for k, t in enumerate(taus))
    if reg_type not in REG_TYPES:
        raise ValueError(f"reg_type must be one of {REG_TYPES}, got {reg_type!r}")
    return _solve(
        "sinkhorn_unbalanced",
        cost,
        x_mask,
        y_mask,
        eps,
        taus,
        reg_type,
        max_iter,
        tol,
        check_every,
        init,
        return_log,
        eps_scaling,
        eps_init,
        stage_iter,
        warn,
        newton_steps,
    )


def _sinkhorn_autograd(C, mx, my, eps, max_iter, tol, check_every, taus=(math.inf, math.inf), reg_type="kl"):
    """Log-domain Sinkhorn without in-place updates, for autograd through the iterations.

    Balanced, or with KL-relaxed marginals (``taus`` finite): the exact updates of :class:`_Side`, f = c - k LSE
    with k = tau / (tau + eps). Stops as :func:`sinkhorn` (hard rows) or :func:`sinkhorn_unbalanced` (relaxed
    rows: the column sums' change over the next column update). Padding is masked with a large finite negative
    log-kernel (not -inf), so no NaN reaches the gradients.
    """
    pair = mx.unsqueeze(2) & my.unsqueeze(1)
    la = mx.sum(-1, keepdim=True).clamp_min(1).to(C.dtype)
    lt = my.sum(-1, keepdim=True).clamp_min(1).to(C.dtype)
    a = mx.to(C.dtype) / la
    b = my.to(C.dtype) / lt
    log_a = torch.where(mx, -torch.log(la).expand_as(a), torch.zeros_like(a))
    log_b = torch.where(my, -torch.log(lt).expand_as(b), torch.zeros_like(b))
    M = (-C / eps).masked_fill(~pair, -1e9)

    def side(tau, log_w):
        """(k, c) of a side's update c - k LSE (as :meth:`_Side.exact_update`)."""
        if math.isinf(tau):
            return 1.0, log_w
        k = tau / (tau + eps)
        return k, (log_w if reg_type == "kl" else k * log_w)

    (kx, cx), (ky, cy) = side(taus[0], log_a), side(taus[1], log_b)

    def update_f(g):
        return torch.where(mx, cx - kx * torch.logsumexp(M + g.unsqueeze(1), 2), torch.zeros_like(a))

    def update_g(f):
        return torch.where(my, cy - ky * torch.logsumexp(M + f.unsqueeze(2), 1), torch.zeros_like(b))

    def coupling_of(f, g):
        return torch.exp(M + f.unsqueeze(2) + g.unsqueeze(1)) * pair

    f = torch.zeros_like(a)
    g = torch.zeros_like(b)
    n_iter = 0
    err = torch.zeros(C.shape[0], dtype=C.dtype, device=C.device)
    for n_iter in range(1, max_iter + 1):
        f = update_f(g)
        g = update_g(f)
        if n_iter % check_every == 0 or n_iter == max_iter:
            with torch.no_grad():
                if math.isinf(taus[0]):
                    err = (coupling_of(f, g).sum(2) - a).abs().sum(-1)
                else:
                    f_next = update_f(g)
                    cols = coupling_of(f_next, g).sum(1)
                    err = (cols - coupling_of(f_next, update_g(f_next)).sum(1)).abs().sum(-1)
            if float(err.max()) < tol:
                break
    coupling = torch.exp(M + f.unsqueeze(2) + g.unsqueeze(1)) * pair
    log = {
        "f": f.detach() * eps,
        "g": g.detach() * eps,
        "err": err,
        "n_iter": torch.full_like(err, n_iter, dtype=torch.long),
        "capped": bool(err.max() >= tol),
    }
    return coupling, log


def _solve(
    name,
    cost,
    x_mask,
    y_mask,
    eps,
    taus,
    reg_type,
    max_iter,
    tol,
    check_every,
    init,
    return_log,
    eps_scaling,
    eps_init,
    stage_iter,
    warn,
    newton_steps,
):
    """Argument checks, then :func:`_sinkhorn_core` in float32/float64 with autocast off."""
    check_tensor("cost", cost, 3)
    check_masks("x_mask", x_mask, "y_mask", y_mask, tuple(cost.shape))
    eps = as_number("eps", eps, low=0.0, low_open=True)
    max_iter = as_number("max_iter", max_iter, low=1, integer=True)
    check_every = as_number("check_every", check_every, low=1, integer=True)
    stage_iter = as_number("stage_iter", stage_iter, low=1, integer=True)
    newton_steps = as_number("newton_steps", newton_steps, low=0, integer=True)
    tol = as_number("tol", tol, low=0.0)
    eps_scaling = as_number("eps_scaling", eps_scaling, low=0.0, high=1.0)
    if eps_init is not None:
        eps_init = as_number("eps_init", eps_init, low=0.0, low_open=True)
    dtype = solver_dtype(cost)
    if init is not None:
        if not (isinstance(init, (tuple, list)) and len(init) == 2):
            raise TypeError("init must be a pair of potentials (f, g)")
        check_tensor("init[0]", init[0], 2)
        check_tensor("init[1]", init[1], 2)
        if tuple(init[0].shape) != tuple(x_mask.shape) or tuple(init[1].shape) != tuple(y_mask.shape):
            raise ValueError(
                f"init potentials must have shapes {tuple(x_mask.shape)} and {tuple(y_mask.shape)}, got "
                f"{tuple(init[0].shape)} and {tuple(init[1].shape)}"
            )
    work = resolving_dtype(dtype, eps, tol)  # float64 at an eps too small for float32 to reach tol
    if cost.requires_grad and torch.is_grad_enabled():
        # grad="unrolled": plain log-domain iterations with out-of-place updates, differentiable step by step
        check_finite("cost", cost, x_mask.unsqueeze(2) & y_mask.unsqueeze(1))
        with fp32_region(cost):
            coupling, log = _sinkhorn_autograd(
                cost.to(work), x_mask, y_mask, eps, max_iter, tol, check_every, taus, reg_type
            )
    else:
        with fp32_region(cost):
            coupling, log = _sinkhorn_core(
                cost.to(work),
                x_mask,
                y_mask,
                eps,
                taus,
                reg_type,
                max_iter,
                tol,
                check_every,
                init,
                eps_scaling,
                eps_init,
                stage_iter,
                newton_steps,
            )
    if work != dtype:
        coupling = coupling.to(dtype)
        log = dict(log, **{k: log[k].to(dtype) for k in ("f", "g", "err")})
    if warn and log["capped"]:
        worst = float(log["err"].max())
        warnings.warn(
            f"{name}: max_iter={max_iter} reached before tol={tol:g} (worst L1 marginal error {worst:.3g}); "
            "raise max_iter or eps",
            RuntimeWarning,
            stacklevel=3,
        )
    if return_log:
        return coupling, {k: log[k] for k in ("f", "g", "err", "n_iter")}
    return coupling


class _Side:
    """Per-side constants of the scaling updates: weights, relaxation exponent and log-offsets."""

    def __init__(self, mask: torch.Tensor, tau: float, reg_type: str, dtype: torch.dtype):
        m = mask.to(dtype)
        self.mask = mask
        self.w = m / m.sum(-1, keepdim=True).clamp_min(1.0)
        self.log_w = torch.where(
            mask,
            torch.log(self.w.clamp_min(1e-300 if dtype == torch.float64 else 1e-38)),
            torch.full_like(m, -math.inf),
        )
        self.tau = tau
        self.hard = math.isinf(tau)
        self.reg_type = reg_type
        self.pad = (1.0 - m).unsqueeze(1)  # (B, 1, L): 1 on padding, so divisions/logs there are harmless

    def exponent(self, eps: torch.Tensor) -> torch.Tensor:
        """tau / (tau + eps) per utterance, (B, 1)."""
        if self.hard:
            return torch.ones_like(eps)
        return self.tau / (self.tau + eps)

    def exact_update(self, eps: float) -> Tuple[float, torch.Tensor]:
        """(k, c) of the exact update phi_i = c_i - k LSE_i at one eps for the whole batch: k = tau / (tau + eps)
        (1 for a hard marginal), c the log-weights (times k for ``reg_type="entropy"``); k is a Python float, so
        reading it needs no host synchronisation."""
        k = 1.0 if self.hard else self.tau / (self.tau + float(eps))
        return k, (self.log_w if (self.hard or self.reg_type == "kl") else k * self.log_w)

    def log_target(self, phi0: torch.Tensor, expo: torch.Tensor) -> torch.Tensor:
        """Log-offset c of the absorbed update log u = c - expo * log(K v), (B, L); -inf on padding."""
        c = self.log_w if self.reg_type == "kl" else expo * self.log_w
        return torch.where(
            self.mask, c + (expo - 1.0) * torch.where(self.mask, phi0, torch.zeros_like(phi0)), self.log_w
        )


def _sinkhorn_core(
    C,
    mx,
    my,
    eps,
    taus,
    reg_type,
    max_iter,
    tol,
    check_every,
    init,
    eps_scaling,
    eps_init,
    stage_iter,
    newton_steps,
    trusted=False,
    sides=None,
):
    """The solver proper on a float32/float64 cost; returns (coupling, log) with log['capped'] a bool.

    ``trusted``: the caller vouches for a warm start (``init``, no ladder) on finite costs, padding included,
    in utterances that all have frames and tokens (GM-OT's inner solves), so the cost is not scanned.
    ``sides``: the (X, Y) :class:`_Side` pair of these masks, taus and reg_type, when the caller keeps one.
    """
    B, La, Lt = C.shape
    dtype, device = C.dtype, C.device
    X, Y = sides or (_Side(mx, taus[0], reg_type, dtype), _Side(my, taus[1], reg_type, dtype))
    err = torch.zeros(B, dtype=dtype, device=device)
    n_iter = torch.zeros(B, dtype=torch.long, device=device)
    phi = torch.full((B, La), -math.inf, dtype=dtype, device=device)
    psi = torch.full((B, Lt), -math.inf, dtype=dtype, device=device)
    if trusted:
        if init is None or eps_init is not None:
            raise ValueError("_sinkhorn_core: trusted solves are warm starts without an eps ladder")
        return _solve_checked(
            C,
            X,
            Y,
            eps,
            max_iter,
            tol,
            check_every,
            init,
            eps_scaling,
            stage_iter,
            newton_steps,
            torch.ones(B, dtype=torch.bool, device=device),
            err,
            n_iter,
            phi,
            psi,
            None,
            None,
            0,
        )
    active = mx.any(-1) & my.any(-1)
    if C.numel() == 0:
        log = {"f": torch.zeros_like(phi), "g": torch.zeros_like(psi), "err": err, "n_iter": n_iter, "capped": False}
        return torch.zeros_like(C), log
    C_in = C
    # Padding may hold anything (NaN included): it is replaced by one real cost of the same utterance, so the
    # minimum and maximum over the whole (La, Lt) block are those of the real costs (one pass each, no masked
    # copies), and a NaN/Inf among the real costs shows in them (no separate finiteness pass).
    i0, j0 = mx.to(torch.uint8).argmax(-1), my.to(torch.uint8).argmax(-1)
    fill = C[torch.arange(B, device=device), i0, j0]
    fill = torch.where(active & torch.isfinite(fill), fill, torch.zeros_like(fill))
    pair = mx.unsqueeze(2) & my.unsqueeze(1)
    C = torch.where(pair, C, fill[:, None, None])
    lo, hi = torch.aminmax(C.reshape(B, -1), dim=1)
    bad = active & ~(torch.isfinite(lo) & torch.isfinite(hi))
    flags = torch.stack([active.any(), active.all(), bad.any()]).long()
    K_b = None
    if 0.0 < eps_scaling < 1.0 and (init is None or eps_init is not None):
        K_b = _ladder(lo, hi, active, eps, eps_init, eps_scaling, _uses_newton(newton_steps, Y, Lt))
        flags = torch.cat([flags, K_b.amax(0, keepdim=True)])
    any_active, all_active, any_bad, *n_stages = flags.tolist()  # one host synchronisation
    if any_bad:
        check_finite("cost", C_in, pair)  # raises, naming the first utterance concerned
    if not any_active:
        log = {"f": torch.zeros_like(phi), "g": torch.zeros_like(psi), "err": err, "n_iter": n_iter, "capped": False}
        return torch.zeros_like(C), log
    if not all_active:  # empty utterances (no real frame or token) get a zero coupling; the others are solved alone
        idx = active.nonzero(as_tuple=True)[0]
        coupling, log = _sinkhorn_core(
            C_in[idx],
            mx[idx],
            my[idx],
            eps,
            taus,
            reg_type,
            max_iter,
            tol,
            check_every,
            None if init is None else (init[0][idx], init[1][idx]),
            eps_scaling,
            eps_init,
            stage_iter,
            newton_steps,
        )
        full = {"f": torch.zeros_like(phi), "g": torch.zeros_like(psi), "err": err, "n_iter": n_iter}
        log = {k: v.index_put((idx,), log[k]) for k, v in full.items()} | {"capped": log["capped"]}
        return torch.zeros_like(C_in).index_put_((idx,), coupling), log
    return _solve_checked(
        C,
        X,
        Y,
        eps,
        max_iter,
        tol,
        check_every,
        init,
        eps_scaling,
        stage_iter,
        newton_steps,
        active,
        err,
        n_iter,
        phi,
        psi,
        lo,
        K_b,
        n_stages[0] if n_stages else 0,
    )


def _uses_newton(newton_steps: int, Y: "_Side", Lt: int) -> bool:
    """Whether the solver finishes with Newton's method (hard token marginal, not too many tokens)."""
    return newton_steps > 0 and Y.hard and 0 < Lt <= NEWTON_MAX_LT


def _ladder(lo, hi, active, eps, eps_init, eps_scaling, use_newton):
    """Length K_b (B,) of every utterance's eps ladder: it starts at eps * r^-K_b, K_b = ceil(log_{1/r}(e0 / eps))
    with e0 = ``eps_init`` or, from a cold start, a few stages below the cost range ``hi - lo``."""
    if eps_init is None:
        # start a few stages below the cost range: above range/8 the coupling is close to the prior's
        # anyway; Newton's method needs no more than NEWTON_START (from a cold start it converges there
        # in a step or two, where Sinkhorn needs the whole ladder from the range down)
        rng = (hi - lo).clamp_min(0.0) / 8.0
    else:
        rng = torch.full_like(lo, eps_init)
    ratio = torch.log(rng / eps) / math.log(1.0 / eps_scaling)
    K_b = torch.where(active & (rng > eps), torch.ceil(ratio - 1e-9), torch.zeros_like(ratio)).clamp(0, 40).long()
    if use_newton and eps_init is None:
        K_b = K_b.clamp_max(max(0, math.floor(math.log(NEWTON_START / eps) / math.log(1.0 / eps_scaling) + 1e-9)))
    return K_b


def _solve_checked(
    C,
    X,
    Y,
    eps,
    max_iter,
    tol,
    check_every,
    init,
    eps_scaling,
    stage_iter,
    newton_steps,
    active,
    err,
    n_iter,
    phi,
    psi,
    lo,
    K_b,
    n_stages,
):
    """The solver on a checked cost in which every utterance has frames and tokens; ``lo``, the real costs'
    minimum per utterance, is needed for cold starts only; ``K_b`` (None: no eps ladder) is the length of every
    utterance's eps ladder, ``n_stages`` its maximum."""
    B, La, Lt = C.shape
    dtype, device = C.dtype, C.device
    mx, my = X.mask, Y.mask
    act_x, act_y = mx, my  # every utterance is active here
    # rows are exact only up to rounding (float32: ~0.5 ulp of the total mass, seen at eps 0.01), and the final
    # update recomputes the coupling with other roundings (~marginal_noise: potentials of size cost / eps): the
    # column error must end that much below tol for the coupling returned, rows and columns together, to meet it
    tol = tol - min(max(ROW_ROUNDING_ULPS * torch.finfo(dtype).eps, marginal_noise(dtype, eps)), 0.5 * tol)
    # Potentials phi = f / eps, psi = g / eps ("units of eps"), -inf on padding and on empty utterances, so
    # exp(phi_i + psi_j - C_ij / eps) is exactly 0 there without a masking pass.
    if init is None:
        # f = min C: every kernel entry <= 1 (>= exp(-8) at the first eps of the ladder, which is >= range / 8)
        f0 = torch.where(act_x, lo[:, None], torch.zeros_like(phi))
        g0 = torch.zeros((B, Lt), dtype=dtype, device=device)
    else:
        f0, g0 = init[0].to(dtype), init[1].to(dtype)

    use_newton = _uses_newton(newton_steps, Y, Lt)
    scaling = K_b is not None
    if scaling:  # eps ladder: utterance b starts at eps * r^-K_b

        def scale_of(k):
            return torch.pow(torch.full_like(err, 1.0 / eps_scaling), k.to(dtype))

        eps_b = eps * scale_of(K_b)  # current eps of every utterance, (B,)
        eps_0 = eps_b[:, None]
    else:
        eps_0 = eps
        if init is None:  # no ladder: f = row minimum, so every row of the first kernel has an entry 1
            row_min = C.masked_fill(~my.unsqueeze(1), math.inf).amin(2)
            f0 = torch.where(act_x, row_min, torch.zeros_like(row_min))
    phi = torch.where(act_x, f0 / eps_0, phi)
    psi = torch.where(act_y, g0 / eps_0, psi)

    newton = None  # the Newton solver, built at its first use
    newton_ladder = False  # the last stage was Newton's: go straight to Newton at the target eps
    # --- eps-scaling stages: a fixed number of iterations each (no host synchronisation, no batch coupling)
    for k in range(n_stages, 0, -1):
        part = active & (K_b >= k)  # utterances whose ladder has reached stage k
        eps_k = torch.where(part, eps * scale_of(torch.full_like(K_b, k)), eps_b)
        phi = phi * (eps_b / eps_k)[:, None]
        psi = psi * (eps_b / eps_k)[:, None]
        eps_b = eps_k
        eps_k_s = eps * (1.0 / eps_scaling) ** k
        newton_ladder = use_newton and eps_k_s <= NEWTON_START
        if newton_ladder:
            newton = newton or _Newton(C, X, Y)
            phi_n, psi_n, err_n, st, _, _ = newton.solve(
                eps_k_s, phi, psi, part, NEWTON_STAGE_TOL, min(newton_steps, NEWTON_STAGE_STEPS)
            )
            n_iter = n_iter + st
        else:
            phi_n, psi_n, err_n = _scaling_iters(C, eps_b, X, Y, phi, psi, stage_iter)
            n_iter = n_iter + stage_iter * part.long()
        ok = part & torch.isfinite(err_n)
        phi = torch.where(ok[:, None], phi_n, phi)
        psi = torch.where(ok[:, None], psi_n, psi)
    if scaling:  # last step of the ladder: to the target eps
        phi = torch.where(act_x, phi * (eps_b / eps)[:, None], phi)
        psi = torch.where(act_y, psi * (eps_b / eps)[:, None], psi)
    eps_t = torch.full_like(err, eps)

    # --- target eps: a short Sinkhorn block (enough for easy and warm-started problems, skipped after Newton
    # stages), then Newton's method on the token potentials (hard token marginal, few tokens) for the others
    done = torch.zeros(B, dtype=torch.long, device=device)
    todo = active.clone()
    capped = False
    if use_newton and not newton_ladder:
        # early checks (easy problems converge in a few iterations at large eps), frozen at convergence
        n0 = min(max_iter, 2 * check_every)
        phi_b, psi_b, err_b, n_b, n, block_coupling, all_conv = _final_block(
            C, eps_t, X, Y, phi, psi, n0, FIRST_CHECKS, tol
        )
        fine = torch.isfinite(err_b)
        phi = torch.where(fine[:, None], phi_b, phi)
        psi = torch.where(fine[:, None], psi_b, psi)
        err = torch.where(active & fine, err_b, err)
        n_iter = n_iter + n_b * active.long()
        done = done + n_b
        todo = todo & ~(fine & (err_b < tol))
        if all_conv:
            # everyone converged in the block: its coupling is the answer (rows exact, err its column error)
            return block_coupling(), _core_log(eps, act_x, act_y, phi, psi, err, n_iter, capped)
    # Every utterance is active here, so `todo` is known to be non-empty without reading it: all of it after
    # Newton stages, else what the block left. `left`: whether some utterance may still be in `todo`.
    left = True
    if use_newton:
        newton = newton or _Newton(C, X, Y)
        phi, psi, err_n, steps, conv, left = newton.solve(eps, phi, psi, todo, tol, min(newton_steps, max_iter))
        err = torch.where(todo, err_n, err)
        n_iter = n_iter + steps
        done = done + steps
        todo = todo & ~conv

    # --- then (or else) Sinkhorn blocks of check_every iterations, converged utterances frozen
    while left:
        left, everyone = torch.stack([todo.any(), todo.all()]).tolist()  # one host synchronisation
        if not left:
            break
        idx = None if everyone else todo.nonzero(as_tuple=True)[0]
        sub = (lambda t: t) if everyone else (lambda t: t[idx])
        Xs, Ys = (X, Y) if everyone else (X.subset(idx), Y.subset(idx))
        budget = max_iter - int(done.max() if everyone else done[idx].max())
        phi_b, psi_b, err_b, n_b, n, _, _ = _final_block(
            sub(C), sub(eps_t), Xs, Ys, sub(phi), sub(psi), budget, check_every, tol
        )
        failed = ~torch.isfinite(err_b)
        if bool(failed.any()):  # redo exactly in log domain for the utterances that under/overflowed
            fi = failed.nonzero(as_tuple=True)[0]
            gi = fi if everyone else idx[fi]
            p_l, s_l, e_l = _log_iters(C[gi] / eps, eps, X.subset(gi), Y.subset(gi), phi[gi], psi[gi], n)
            phi_b, psi_b, err_b = phi_b.index_put((fi,), p_l), psi_b.index_put((fi,), s_l), err_b.index_put((fi,), e_l)
        still = ~(err_b < tol)
        if everyone:
            phi, psi, err, done = phi_b, psi_b, err_b, done + n
            n_iter = n_iter + n_b
            todo = todo & still & (done < max_iter)
            capped = capped or bool((still & (done >= max_iter)).any())
        else:
            phi, psi, err = phi.index_put((idx,), phi_b), psi.index_put((idx,), psi_b), err.index_put((idx,), err_b)
            done = done.index_put((idx,), done[idx] + n)
            n_iter = n_iter.index_put((idx,), n_iter[idx] + n_b)
            hit = still & (done[idx] >= max_iter)
            capped = capped or bool(hit.any())
            todo = todo.index_put((idx,), still & ~hit)

    if Y.hard:
        # final exact x update: gamma_ij = exp(phi'_i + psi_j - C_ij / eps) with phi' the exact x potentials
        # of psi (rows exact for a hard x marginal), phi'_i = c_i - k (m_i + log s_i) with m_i the row's largest
        # psi_j - C_ij / eps and s_i = sum_j exp(psi_j - C_ij / eps - m_i) in [1, Lt]: nothing over- or
        # underflows whatever potentials the iterations ended with (so nothing needs a check), and no two large
        # numbers cancel in the row factor exp(phi'_i + m_i) (in float32, phi - lse cost the rows ~1e-5 of L1 at
        # eps 0.01). The error reported is the column error of the very coupling returned; the same formula
        # for every utterance, whatever its batch did before.
        kx, cx = X.exact_update(eps)
        Z = torch.add(psi.unsqueeze(1), C, alpha=-1.0 / eps)
        m = Z.amax(2, keepdim=True)
        E = _exp_(Z.sub_(m))
        m = m.squeeze(2)
        log_s = torch.log(E.sum(2))
        phi_f = torch.where(act_x, cx - kx * (m + log_s), phi)
        e_fac = cx - log_s if kx == 1.0 else cx - kx * log_s + (1.0 - kx) * m
        fac = torch.where(act_x, torch.exp(e_fac), torch.zeros_like(phi))
        coupling = E.mul_(fac.unsqueeze(2)).masked_fill_(~(mx.unsqueeze(2) & my.unsqueeze(1)), 0.0)
        err_f = (coupling.sum(1) - Y.w).abs().masked_fill(~my, 0.0).sum(-1)
        err = torch.where(active, err_f, err)
        phi = torch.where(act_x, phi_f, phi)
    else:
        coupling = _kernel(C, eps_t, phi, psi).masked_fill_(~(mx.unsqueeze(2) & my.unsqueeze(1)), 0.0)
    return coupling, _core_log(eps, act_x, act_y, phi, psi, err, n_iter, capped)


def _core_log(eps, act_x, act_y, phi, psi, err, n_iter, capped):
    """The solver's log: potentials f = eps phi, g = eps psi (0 on padding), error, iterations, capped."""
    return {
        "f": eps * torch.where(act_x, phi, torch.zeros_like(phi)),
        "g": eps * torch.where(act_y, psi, torch.zeros_like(psi)),
        "err": err,
        "n_iter": n_iter,
        "capped": capped,
    }


NEWTON_START = 1.0  # Newton's ladder starts at most here (cost units), Sinkhorn's at range / 8
NEWTON_STAGE_TOL, NEWTON_STAGE_STEPS = 1e-2, 20  # each stage of Newton's ladder: a loose tolerance
# largest change of a token potential in one Newton step, in units of eps. 10 made blocks of tokens that must
# shift far (strong priors, long utterances) crawl: beta 2, eps 0.01, 1000 frames did not converge in 5000
# iterations; 20 converges there in 45, and 50 overshoots into Sinkhorn's fallback again
NEWTON_CAP = 20.0
SHRINK_LO = 0.25  # a rejected Newton step shrinks by at least half, at most to a quarter
NEWTON_RIDGE = 1e-9  # ridge on Newton's Hessian, relative to the token weights (see _Newton.__init__)
FIRST_CHECKS = (3, 6, 10)  # checks of the first block at the target eps (then every check_every)
NEWTON_MAX_LT = 512  # Newton's linear systems are (Lt x Lt): beyond this, Sinkhorn iterations only
COMPACT_AT = 0.5  # once at most this fraction of the batch being iterated is unconverged, iterate those alone


class _Newton:
    r"""Damped Newton's method on the semi-dual in the token potentials, x potentials eliminated.

    With the exact x update :math:`\phi_i(\psi) = c_i - \kappa \log\sum_j \exp(\psi_j - C_{ij}/\varepsilon)`
    (:math:`\kappa = \tau_x/(\tau_x+\varepsilon)`, 1 for a hard marginal) the dual becomes a concave function
    of :math:`\psi` alone, :math:`F(\psi) = \langle b, \psi\rangle - \sum_i a_i \mathrm{LSE}_i` (hard x) or
    :math:`\langle b, \psi\rangle - \frac{\tau_x+\varepsilon}{\varepsilon}\sum_i r_i` (relaxed x, r the row
    sums), whose gradient is :math:`b - q` (q the column marginal) and whose negative Hessian is
    :math:`J = \mathrm{diag}(q) - \kappa W`, :math:`W = \Gamma^T \mathrm{diag}(1/r)\, \Gamma`, an (Lt x Lt) system
    per utterance. As :math:`W 1 = q`, :math:`J = (1-\kappa)\mathrm{diag}(q) + \kappa\, \mathcal{L}(W)` with
    :math:`\mathcal{L}(W) = \mathrm{diag}(W 1) - W` the Laplacian of W's off-diagonal part, which is how it is
    computed: at small eps the rows of the coupling are nearly one-hot and :math:`q_j - W_{jj}` loses every digit
    of float32, while the Laplacian's entries are sums of positive terms. For a hard x marginal J is singular
    along the constant vector (the gauge of the potentials); the rank-one term :math:`1 1^T / l_t` fixes it.
    A step is accepted unless it overshoots the maximum of F along the direction by much (the derivative
    there, accurate in float32 where F is not, is at least minus half the initial slope); otherwise the step
    shrinks to the secant root of the derivative (Nocedal & Wright 2006, Sec. 3.5; Brauer, Clason, Lorenz &
    Wirth 2017 solve the two-potential system). Evaluations are shifted by the previous log-sum-exp, so nothing
    over- or underflows at any eps. Work is in the (B, Lt, La) layout: the reductions over tokens are then
    over a middle axis, the fast one on CPU.
    """

    def __init__(self, C: torch.Tensor, X: "_Side", Y: "_Side"):
        self.Ct = C.transpose(1, 2).contiguous()
        self.X, self.Y = X, Y
        my = Y.mask.to(torch.float64)
        gauge = my.unsqueeze(2) * my.unsqueeze(1) / my.sum(-1).clamp_min(1.0)[:, None, None] if X.hard else 0.0
        # identity on padded tokens, the gauge fix and a ridge: at small eps a group of tokens can share no
        # frame with the others above float32's range, so L(W) splits into blocks, singular beyond the gauge;
        # the ridge makes such a block's step large (then capped), the step Newton takes were the links resolved
        self.fix = torch.diag_embed(1.0 - my + NEWTON_RIDGE * Y.w.to(torch.float64)) + gauge
        self.pad = X.pad.squeeze(1)  # (B, La): 1 on padded frames

    def setup(self, eps: float) -> None:
        self.eps = eps
        self.Cs = self.Ct * (-1.0 / eps)
        self.kx, self.cx = self.X.exact_update(eps)

    def evaluate(self, ps: torch.Tensor, shift: Optional[torch.Tensor]):
        """Column error (B,), q - b, the log-sum-exp per frame and (E, fac, s, q) after an exact x update at
        token potentials ``ps``, with gamma_ij = fac_i E_ji; ``shift`` (B, La) None: the frame's maximum."""
        E = self.Cs + ps.unsqueeze(2)
        if shift is None:
            shift = E.amax(1)
        E = _exp_(E.sub_(shift.unsqueeze(1)))
        s_ = E.sum(1).add_(self.pad)  # 1 on padded frames, where fac is 0 (cx = -inf)
        log_s = torch.log(s_)
        lse = shift + log_s
        # fac = exp(phi_i + shift_i), written without cancelling the large shift
        e_fac = self.cx - log_s if self.kx == 1.0 else self.cx - self.kx * log_s + (1.0 - self.kx) * shift
        fac = torch.exp(e_fac)
        q = bmv(E, fac)
        e = q - self.Y.w
        return e.abs().sum(-1), e, lse, (E, fac, s_, q)

    def phi(self, lse: torch.Tensor) -> torch.Tensor:
        return torch.where(self.X.mask, self.cx - self.kx * lse, self.X.log_w)

    def direction(self, e, parts):
        """Newton direction J^{-1}(b - q), capped at NEWTON_CAP (units of eps), and its slope (b - q) . d."""
        E, fac, s_, q = parts
        W = torch.bmm(E * (fac / s_).unsqueeze(1), E.transpose(1, 2))
        W.diagonal(dim1=1, dim2=2).zero_()
        J = torch.diag_embed(W.sum(-1)).sub_(W).double().add_(self.fix)
        if self.kx != 1.0:
            J = J.mul_(self.kx).add_(torch.diag_embed((1.0 - self.kx) * q.double()))
        # (cholesky_ex: were J not numerically positive definite, the step would be garbage and rejected by
        # the line search; the utterance then stalls and Sinkhorn's iterations take over)
        # (two triangular solves, not cholesky_solve: on CPU that one reads an error flag back at every call)
        Lc = torch.linalg.cholesky_ex(J)[0]
        d = torch.linalg.solve_triangular(Lc, e.double().unsqueeze(2), upper=False)
        d = torch.linalg.solve_triangular(Lc.mT, d, upper=True).squeeze(2).to(e.dtype)
        d = d.mul_(-torch.clamp(NEWTON_CAP / torch.linalg.vector_norm(d, math.inf, -1, keepdim=True), max=1.0))
        return d, -(e * d).sum(-1)

    def take(self, idx: torch.Tensor) -> "_Newton":
        """The problem of the utterances ``idx`` alone, set up at the same eps."""
        sub = object.__new__(_Newton)
        sub.X, sub.Y, sub.fix, sub.pad = self.X.subset(idx), self.Y.subset(idx), self.fix[idx], self.pad[idx]
        sub.eps, sub.Cs, sub.kx, sub.cx = self.eps, self.Cs[idx], self.kx, self.cx[idx]
        return sub

    def solve(self, eps, phi, psi, todo, tol, max_steps):
        """Newton at ``eps`` from token potentials ``psi`` for the utterances in ``todo`` (the others keep
        their state exactly); returns phi, psi, the L1 column error, the steps taken, the convergence flag and
        whether some utterance of ``todo`` may be unconverged (False: the last host synchronisation saw none)."""
        self.setup(eps)
        err, e, shift, parts = self.evaluate(psi, None)
        phi = torch.where(todo.unsqueeze(1), self.phi(shift), phi)
        err = torch.where(todo, err, torch.zeros_like(err))
        conv = todo & (err < tol)
        live = todo & ~conv
        need = live  # utterances that need a new direction at their last evaluated (accepted) point
        delta = torch.zeros_like(psi)
        slope = torch.zeros_like(err)
        steps = torch.zeros_like(todo, dtype=torch.long)
        t = torch.ones_like(err)
        # every utterance's trajectory is its own (a round cap, no per-utterance budget), so the result of
        # each does not depend on its batch. Once at most COMPACT_AT of the utterances iterated are live, the
        # loop goes on with those alone (`nw`: the sub-problem, `rows`: its utterances); the others' results
        # are written to `out` first.
        nw, rows, out, dropped, batch_todo = self, None, {}, 0, todo
        n_left = 1  # (live is part of todo & ~conv: a loop that does not break ends with n_left > 0)
        for _ in range(max_steps):
            n_live, n_need, n_left = torch.stack([live, need, todo & ~conv]).sum(1).tolist()  # one host sync
            if not n_live:
                break
            if n_live <= COMPACT_AT * live.shape[0]:
                keep = live.nonzero(as_tuple=True)[0]
                _write_back(out, dict(psi=psi, shift=shift, err=err, steps=steps, conv=conv), rows)
                rows = keep if rows is None else rows[keep]
                dropped += n_left - n_live  # stalled: neither converged nor live
                nw = nw.take(keep)
                psi, shift, err, e, delta, slope, t, steps, conv, live, need, todo = (
                    v[keep] for v in (psi, shift, err, e, delta, slope, t, steps, conv, live, need, todo)
                )
                parts = tuple(v[keep] for v in parts)
            if n_need:
                d, sl = nw.direction(e, parts)
                delta = torch.where(need.unsqueeze(1), d, delta)
                slope = torch.where(need, sl, slope)
                t = torch.where(need, 1.0, t)
                steps = steps + need
            trial = psi + (t * live).unsqueeze(1) * delta
            err_t, e, lse, parts = nw.evaluate(trial, shift)
            dphi = -(e * delta).sum(-1)  # derivative of F along delta at the trial point
            # accepted: within tolerance, or not overshooting much (err_t < inf: finite)
            conv_t = live & (err_t < tol)
            ok = conv_t | (live & (err_t < math.inf) & (dphi >= -0.5 * slope))
            okc = ok.unsqueeze(1)
            psi, shift = torch.where(okc, trial, psi), torch.where(okc, lse, shift)
            err = torch.where(ok, err_t, err)
            conv = conv | conv_t
            # rejected: the secant root of the (decreasing) derivative on [0, t], within [SHRINK_LO, 1/2] of t
            t = torch.where(ok, t, torch.nan_to_num(slope / (slope - dphi), nan=0.1).clamp_(SHRINK_LO, 0.5) * t)
            live = live & ~conv & (t > 1e-4)
            need = ok & live
        if rows is not None:
            _write_back(out, dict(psi=psi, shift=shift, err=err, steps=steps, conv=conv), rows)
            psi, shift, err, steps, conv = (out[k] for k in ("psi", "shift", "err", "steps", "conv"))
        left = n_left + dropped > 0
        todo = batch_todo
        phi = torch.where(todo.unsqueeze(1), self.phi(shift), phi)
        return phi, psi, err, steps, conv, left


def _write_back(state: Dict[str, torch.Tensor], w: Dict[str, torch.Tensor], rows: Optional[torch.Tensor]):
    """Copy the working state ``w`` of batch rows ``rows`` (None: all) into ``state``; returns ``rows``."""
    for k, v in w.items():
        state[k] = v if rows is None else state[k].index_copy(0, rows, v)
    return rows


def _side_subset(self, idx):
    s = object.__new__(_Side)
    s.mask, s.w, s.log_w, s.pad = self.mask[idx], self.w[idx], self.log_w[idx], self.pad[idx]
    s.tau, s.hard, s.reg_type = self.tau, self.hard, self.reg_type
    return s


_Side.subset = _side_subset


def _exp_(Z: torch.Tensor) -> torch.Tensor:
    """In-place exp, with results below ``_TINY`` (1e-15 in float32) set to exactly 0.

    On CPU, arithmetic on subnormal numbers takes a slow path, up to 100x slower: exp of an argument whose
    result underflows does, and so do the products of two small kernel entries inside ``bmm`` (Newton's
    Hessian multiplies kernel entries pairwise). The argument is floored where exp stays normal, and results
    below ``_TINY`` are zeroed, so no product of two kept entries and a weight is subnormal. Every kernel
    built here is either the current coupling estimate (absorbed potentials) or shifted so that each row's
    largest entry is about 1, so a zeroed entry changes a marginal by less than ``La * Lt * _TINY``.
    """
    return torch.nn.functional.threshold_(Z.clamp_min_(_LOG_FLOOR[Z.dtype]).exp_(), _TINY[Z.dtype], 0.0)


_LOG_FLOOR = {torch.float32: -87.0, torch.float64: -700.0}
_TINY = {torch.float32: 1e-15, torch.float64: 1e-140}


def _kernel(C: torch.Tensor, eps: torch.Tensor, phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """exp(phi_i + psi_j - C_ij / eps_b) for per-utterance eps (B,), in a few passes over (B, La, Lt).

    Entries below ``_TINY`` are 0 (see :func:`_exp_`); the scalings are 0 on padding.
    """
    Z = torch.mul(C, (-1.0 / eps)[:, None, None])
    Z.add_(phi.unsqueeze(2)).add_(psi.unsqueeze(1))
    return _exp_(Z)


class _Scaling:
    """State of one absorbed block: kernel K (and K^T), scalings u, v as (B, 1, L) rows."""

    def __init__(self, C, eps, X, Y, phi, psi):
        self.K = _kernel(C, eps, phi, psi)
        self.Kt = self.K.transpose(1, 2).contiguous()
        self.X, self.Y, self.phi, self.psi = X, Y, phi, psi
        ex, ey = X.exponent(eps[:, None]), Y.exponent(eps[:, None])
        self.ex, self.ey = ex.unsqueeze(1), ey.unsqueeze(1)
        # hard side: u = a / (K v); relaxed side: u = exp(c - ex * log(K v)) with c from the absorbed phi
        self.cx = None if X.hard else X.log_target(phi, ex).unsqueeze(1)
        self.cy = None if Y.hard else Y.log_target(psi, ey).unsqueeze(1)
        self.a, self.b = X.w.unsqueeze(1), Y.w.unsqueeze(1)
        self.u = 1.0 - X.pad

    def update_v(self, u):
        s = torch.bmm(u, self.K)
        if self.cy is None:
            return self.b / (s + self.Y.pad), s
        return torch.exp(self.cy - self.ey * torch.log(s + self.Y.pad)), s

    def update_u(self, v):
        s = torch.bmm(v, self.Kt)
        if self.cx is None:
            return self.a / (s + self.X.pad)
        return torch.exp(self.cx - self.ex * torch.log(s + self.X.pad))

    def error(self, u, v):
        """L1 distance of the column marginal to its value after the next v update, (B,)."""
        v_next, s = self.update_v(u)
        return (s * (v - v_next)).abs().sum(-1).squeeze(1)

    def absorb(self, u, v, err):
        """The absorbed potentials (phi + log u, psi + log v) and ``err``, NaN where a scaling under/overflowed
        (log u and log v are 0 on padding, so their sums are finite iff every real entry is)."""
        lu = torch.log(u + self.X.pad).squeeze(1)
        lv = torch.log(v + self.Y.pad).squeeze(1)
        finite = torch.isfinite(err + lu.sum(-1) + lv.sum(-1))
        return self.phi + lu, self.psi + lv, torch.where(finite, err, torch.full_like(err, math.nan))


def _scaling_iters(C, eps, X, Y, phi, psi, n):
    """``n`` scaling iterations from absorbed (phi, psi); returns the absorbed potentials and the error
    (non-finite where the scalings under/overflowed)."""
    S = _Scaling(C, eps, X, Y, phi, psi)
    u = S.u
    for _ in range(n):
        v, _ = S.update_v(u)
        u = S.update_u(v)
    return S.absorb(u, v, S.error(u, v))


def _final_block(C, eps, X, Y, phi, psi, max_n, checks, tol, absorb_every=100):
    """Scaling iterations at the target eps between two absorptions, converged utterances frozen.

    Runs at most ``min(max_n, absorb_every)`` iterations and checks the error at the iterations in
    ``checks`` (an int k: every k iterations) and at the last one. An utterance keeps the state of the first
    check at which its error is below ``tol`` (later iterations of its neighbours do not change it, so every
    result is independent of the batch); the block ends at the first check where all have converged. If
    the scalings under- or overflow, the block returns the state of its previous check; if that happens
    before the first check, the error is NaN for the utterances concerned, which the caller redoes in log
    domain. Returns the absorbed potentials, the error, the iterations (B,) each utterance's state has, the
    iterations run, the state's coupling diag(u) K diag(v) as a function (None after an under/overflow):
    its rows are exact (u is the last update) and ``err`` is its column error, and whether every utterance
    converged (a bool, read in the block's last host synchronisation).
    """
    S = _Scaling(C, eps, X, Y, phi, psi)
    limit = max(1, min(max_n, absorb_every))
    at = range(checks, limit, checks) if isinstance(checks, int) else checks
    at = sorted({c for c in at if 0 < c < limit} | {limit})
    u = S.u
    n = 0
    last = None
    frozen = torch.zeros(phi.shape[0], dtype=torch.bool, device=phi.device)
    kept = None
    for c in at:
        while n < c:
            v, _ = S.update_v(u)
            u = S.update_u(v)
            n += 1
        phi_n, psi_n, err = S.absorb(u, v, S.error(u, v))
        finite = torch.isfinite(err)
        state = (phi_n, psi_n, err, torch.full_like(err, n, dtype=torch.long), u, v)
        if kept is not None:  # utterances frozen at an earlier check keep that state
            state = tuple(torch.where(frozen.view(-1, *([1] * (t.dim() - 1))), k, t) for k, t in zip(kept, state))
            finite = finite | frozen
        conv = frozen | (finite & (err < tol))
        all_finite, all_conv = torch.stack([finite.all(), conv.all()]).tolist()  # one host synchronisation
        if not all_finite:
            if last is not None:
                return last + (False,)
            nan_err = torch.where(finite, state[2], torch.full_like(err, math.nan))
            return state[0], state[1], nan_err, state[3], n, None, False
        u_s, v_s = state[4], state[5]
        result = state[:4] + (n, lambda u_s=u_s, v_s=v_s: S.K * u_s.transpose(1, 2) * v_s)
        if all_conv or c == limit:
            return result + (all_conv,)
        kept, frozen, last = state, conv, result
    raise AssertionError("unreachable: the last check is the limit")


def _log_iters(Cs, eps, X, Y, phi, psi, n):
    """``n`` exact log-domain iterations (logsumexp updates) on Cs = C / eps; the stable fallback."""
    e = torch.full((Cs.shape[0], 1), eps, dtype=Cs.dtype, device=Cs.device)
    ex, ey = X.exponent(e), Y.exponent(e)
    cx = X.log_w if (X.hard or X.reg_type == "kl") else ex * X.log_w
    cy = Y.log_w if (Y.hard or Y.reg_type == "kl") else ey * Y.log_w
    for _ in range(max(1, n)):
        psi = torch.where(Y.mask, cy - ey * torch.logsumexp(phi.unsqueeze(2) - Cs, dim=1), Y.log_w)
        phi = torch.where(X.mask, cx - ex * torch.logsumexp(psi.unsqueeze(1) - Cs, dim=2), X.log_w)
    col = torch.logsumexp(phi.unsqueeze(2) - Cs, dim=1)
    psi_next = torch.where(Y.mask, cy - ey * col, Y.log_w)
    mass = torch.exp(psi + col)
    mass_next = torch.exp(psi_next + col)
    err = (mass - mass_next).masked_fill(~Y.mask, 0).abs().sum(-1)
    return phi, psi, err
