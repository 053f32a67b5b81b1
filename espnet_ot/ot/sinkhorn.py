"""Batched, masked entropic OT solvers: log-stabilised Sinkhorn with eps-scaling, balanced and (semi-)unbalanced.

The public API and its argument checks; the algorithm is in the private modules :mod:`._sinkhorn_driver` (eps
ladder, blocks, checks, final exact update, unrolled autograd), :mod:`._sinkhorn_kernels` (scaling kernels, the
log-domain fallback) and :mod:`._newton` (Newton's method)."""

import math
import warnings
from typing import Dict, Optional, Tuple, Union

import torch

from espnet_ot.ot._newton import NEWTON_STEPS
from espnet_ot.ot._sinkhorn_driver import EPS_SCALING, STAGE_ITER, SolverOptions, solve, unrolled
from espnet_ot.ot._utils import (
    as_number,
    check_finite,
    check_masks,
    check_tensor,
    fp32_region,
    resolving_dtype,
    solver_dtype,
)

REG_TYPES = ("kl", "entropy")


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
    opts = _checked_options(
        cost,
        x_mask,
        y_mask,
        eps=eps,
        taus=(math.inf, math.inf),
        reg_type="kl",
        max_iter=max_iter,
        tol=tol,
        check_every=check_every,
        eps_scaling=eps_scaling,
        eps_init=eps_init,
        stage_iter=stage_iter,
        newton_steps=newton_steps,
    )
    return _solve("sinkhorn", cost, x_mask, y_mask, opts, init, return_log, warn)


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
    opts = _checked_options(
        cost,
        x_mask,
        y_mask,
        eps=eps,
        taus=taus,
        reg_type=reg_type,
        max_iter=max_iter,
        tol=tol,
        check_every=check_every,
        eps_scaling=eps_scaling,
        eps_init=eps_init,
        stage_iter=stage_iter,
        newton_steps=newton_steps,
    )
    return _solve("sinkhorn_unbalanced", cost, x_mask, y_mask, opts, init, return_log, warn)


def _checked_options(cost, x_mask, y_mask, **options) -> SolverOptions:
    """Checks the cost and the masks, then the options (keyword arguments: the fields of :class:`SolverOptions`,
    taus and reg_type already checked); returns the options."""
    check_tensor("cost", cost, 3)
    check_masks("x_mask", x_mask, "y_mask", y_mask, tuple(cost.shape))
    options["eps"] = as_number("eps", options["eps"], low=0.0, low_open=True)
    for name, low in (("max_iter", 1), ("check_every", 1), ("stage_iter", 1), ("newton_steps", 0)):
        options[name] = as_number(name, options[name], low=low, integer=True)
    options["tol"] = as_number("tol", options["tol"], low=0.0)
    options["eps_scaling"] = as_number("eps_scaling", options["eps_scaling"], low=0.0, high=1.0)
    if options["eps_init"] is not None:
        options["eps_init"] = as_number("eps_init", options["eps_init"], low=0.0, low_open=True)
    return SolverOptions(**options)


def _solve(name, cost, x_mask, y_mask, opts: SolverOptions, init, return_log, warn):
    """Checks of ``init``, then the solver (:func:`._sinkhorn_driver.solve`, or the unrolled iterations when the
    cost requires grad) in float32/float64 with autocast off, on a cost and options checked by
    :func:`_checked_options`."""
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
    work = resolving_dtype(dtype, opts.eps, opts.tol)  # float64 at an eps too small for float32 to reach tol
    if cost.requires_grad and torch.is_grad_enabled():
        # grad="unrolled": plain log-domain iterations with out-of-place updates, differentiable step by step
        check_finite("cost", cost, x_mask.unsqueeze(2) & y_mask.unsqueeze(1))
        with fp32_region(cost):
            coupling, log = unrolled(cost.to(work), x_mask, y_mask, opts)
    else:
        with fp32_region(cost):
            coupling, log = solve(cost.to(work), x_mask, y_mask, opts, init)
    if work != dtype:
        coupling = coupling.to(dtype)
        log = dict(log, **{k: log[k].to(dtype) for k in ("f", "g", "err")})
    if warn and log["capped"]:
        worst = float(log["err"].max())
        warnings.warn(
            f"{name}: max_iter={opts.max_iter} reached before tol={opts.tol:g} (worst L1 marginal error {worst:.3g}); "
            "raise max_iter or eps",
            RuntimeWarning,
            stacklevel=3,
        )
    if return_log:
        return coupling, {k: log[k] for k in ("f", "g", "err", "n_iter")}
    return coupling
