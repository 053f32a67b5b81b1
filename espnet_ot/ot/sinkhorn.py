"""Batched, masked entropic OT solver: Sinkhorn iterations in the log-stabilised (absorption) form."""

from typing import Dict, Optional, Tuple, Union

import torch

from espnet_ot.ot._utils import check_masks, solver_dtype, uniform_weights

def sinkhorn(
    cost: torch.Tensor,
    x_mask: torch.Tensor,
    y_mask: torch.Tensor,
    eps: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 10,
    init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    return_log: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, torch.Tensor]]]:
    r"""Entropic optimal transport between uniform distributions on the real positions, batched.

    Solves, for every utterance b of the batch independently (TOT-CAKT Eq. 8/15, DESIGN §2),

    .. math::
        \gamma^\star = \mathop{\arg\min}_{\gamma \in \Pi(a, b)} \langle \gamma, C \rangle - \varepsilon H(\gamma),
        \qquad a_i = 1/l_a,\ b_j = 1/l_t \text{ on real positions, 0 on padding},

    whose solution is :math:`\gamma_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)` for the dual potentials
    (f, g). The potentials are updated with Sinkhorn's alternating projections in the log-stabilised
    *absorption* form (Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport
    problems", SIAM J. Sci. Comput. 2019, Alg. 2; Peyré & Cuturi, "Computational Optimal Transport",
    2019, §4.4): every ``check_every`` iterations the scalings are absorbed into (f, g) and the kernel
    :math:`K_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)` is rebuilt, so the kernel stays well scaled
    for any eps, while the iterations in between are cheap batched mat-vecs. Should a block under- or
    overflow (very small eps, first block), that utterance's block is redone with exact log-domain
    updates (logsumexp), so the result is the log-domain Sinkhorn answer in every case.

    Stopping rule: per utterance, the L1 error of the column marginal (the row marginal is exact after
    each update) below ``tol``; an utterance that has converged is frozen, so its coupling does not depend
    on its batch neighbours. Convergence is checked once per block (one host synchronisation per
    ``check_every`` iterations). Computation is in float32 (float64 for float64 costs), also under AMP.

    Args:
        cost: (B, La, Lt) ground cost.
        x_mask, y_mask: (B, La) / (B, Lt) bool, True on real positions (rows with no real position
            produce an all-zero coupling).
        eps: entropic regularisation :math:`\varepsilon > 0`.
        max_iter: maximum number of Sinkhorn iterations (one iteration = one update of f and of g).
        tol: per-utterance tolerance on the L1 marginal error.
        check_every: iterations between absorptions / convergence checks.
        init: optional warm-start potentials (f, g), shapes (B, La), (B, Lt).
        return_log: also return a dict with ``f``, ``g`` (potentials), ``err`` (B,) and ``n_iter`` (B,).

    Returns:
        coupling (B, La, Lt), zero on padding; with ``return_log``, ``(coupling, log)``.
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must be (B, La, Lt), got shape {tuple(cost.shape)}")
    check_masks("x_mask", x_mask, "y_mask", y_mask, tuple(cost.shape))
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (entropic regularisation), got {eps}")
    if max_iter < 1 or check_every < 1:
        raise ValueError(f"max_iter and check_every must be >= 1, got {max_iter} and {check_every}")

    dtype = solver_dtype(cost)
    mx, my = x_mask, y_mask
    a = uniform_weights(mx, dtype)
    b = uniform_weights(my, dtype)
    # Internally the potentials are kept in units of eps (alpha = f / eps, beta = g / eps) and are -inf
    # on padding, so exp(alpha_i + beta_j - C_ij / eps) is exactly 0 there without any masking pass.
    C = cost.to(dtype)
    neg_inf_x = torch.full_like(a, float("-inf"))
    neg_inf_y = torch.full_like(b, float("-inf"))
    if init is None:
        # Any potentials are a valid start; the row minima keep the first kernel from underflowing.
        row_min = C.masked_fill(~my.unsqueeze(1), float("inf")).min(dim=2).values
        alpha = torch.where(mx, row_min / eps, neg_inf_x)
        beta = torch.where(my, torch.zeros_like(b), neg_inf_y)
    else:
        alpha = torch.where(mx, init[0].to(dtype) / eps, neg_inf_x)
        beta = torch.where(my, init[1].to(dtype) / eps, neg_inf_y)

    active = mx.any(-1) & my.any(-1)
    err = torch.zeros(C.shape[0], dtype=dtype, device=C.device)
    n_iter = torch.zeros(C.shape[0], dtype=torch.long, device=C.device)
    done = 0
    while done < max_iter and bool(active.any()):
        everyone = bool(active.all())
        idx = None if everyone else active.nonzero(as_tuple=True)[0]
        sel = (lambda t: t) if everyone else (lambda t: t[idx])
        alpha_b, beta_b, err_b, n = _scaling_block(
            sel(C), eps, sel(a), sel(b), sel(alpha), sel(beta), max_iter - done, check_every, tol
        )
        failed = ~torch.isfinite(err_b)
        if bool(failed.any()):
            # redo this block's iterations exactly in log domain for the utterances that under/overflowed
            fi = failed.nonzero(as_tuple=True)[0]
            g_idx = fi if everyone else idx[fi]
            a_log, b_log, e_log = _log_block(
                C[g_idx] / eps, mx[g_idx], my[g_idx], a[g_idx], b[g_idx], alpha[g_idx], beta[g_idx], n
            )
            alpha_b = alpha_b.index_put((fi,), a_log)
            beta_b = beta_b.index_put((fi,), b_log)
            err_b = err_b.index_put((fi,), e_log)
        if everyone:
            alpha, beta, err, n_iter = alpha_b, beta_b, err_b, n_iter + n
            active = ~(err_b < tol) & active
        else:
            alpha = alpha.index_put((idx,), alpha_b)
            beta = beta.index_put((idx,), beta_b)
            err = err.index_put((idx,), err_b)
            n_iter = n_iter.index_put((idx,), n_iter[idx] + n)
            active = active.index_put((idx,), ~(err_b < tol))
        done += n

    coupling = _kernel(C, eps, alpha, beta)
    if return_log:
        return coupling, {"f": eps * alpha, "g": eps * beta, "err": err, "n_iter": n_iter}
    return coupling


def _kernel(C: torch.Tensor, eps: float, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """exp(alpha_i + beta_j - C_ij / eps), in three passes over the (B, La, Lt) tensor."""
    Z = torch.sub(alpha.unsqueeze(2), C, alpha=1.0 / eps)
    Z.add_(beta.unsqueeze(1))
    return Z.exp_()


def _scaling_block(C, eps, a, b, alpha, beta, max_n, check_every, tol, absorb_every=100):
    """Sinkhorn iterations on the kernel with (alpha, beta) absorbed, between two absorptions.

    Runs at most ``min(max_n, absorb_every)`` iterations and checks the column-marginal error every
    ``check_every``; the block ends early at the first check where some utterance has converged, so that
    the caller can freeze it (this keeps every utterance's result independent of its neighbours). If the
    scalings under- or overflow, the block returns the state of its previous check (the caller absorbs and
    rebuilds the kernel); if that happens before the first check, the error is NaN for the utterances
    concerned, which the caller redoes in log domain. Returns the absorbed potentials, the L1 column
    error and the number of iterations run. Vectors are kept as (B, 1, L) rows so every product is a
    batched row-vector times matrix, the fastest layout on CPU.
    """
    K = _kernel(C, eps, alpha, beta)
    Kt = K.transpose(1, 2).contiguous()
    a, b = a.unsqueeze(1), b.unsqueeze(1)
    padx, pady = (a == 0).to(a.dtype), (b == 0).to(b.dtype)
    limit = min(max_n, absorb_every)
    u = 1.0 - padx
    n = 0
    last = None
    while True:
        v = b / (torch.bmm(u, K) + pady)
        u = a / (torch.bmm(v, Kt) + padx)
        n += 1
        if n % check_every == 0 or n == limit:
            err = (v * torch.bmm(u, K) - b).abs().sum(-1).squeeze(1)
            log_u = torch.log(u + padx).squeeze(1)
            log_v = torch.log(v + pady).squeeze(1)
            finite = torch.isfinite(log_u).all(-1) & torch.isfinite(log_v).all(-1) & torch.isfinite(err)
            state = (alpha + log_u, beta + log_v, err, n)
            if not bool(finite.all()):
                if last is not None:
                    return last
                return state[0], state[1], torch.where(finite, err, torch.full_like(err, float("nan"))), n
            if n == limit or bool((err < tol).any()):
                return state
            last = state


def _log_block(Cs, mx, my, a, b, alpha, beta, n):
    """``n`` exact log-domain Sinkhorn iterations (logsumexp updates); the stable fallback."""
    log_a = torch.where(mx, torch.log(torch.where(mx, a, torch.ones_like(a))), torch.full_like(a, float("-inf")))
    log_b = torch.where(my, torch.log(torch.where(my, b, torch.ones_like(b))), torch.full_like(b, float("-inf")))
    for _ in range(n):
        beta = log_b - torch.logsumexp(alpha.unsqueeze(2) - Cs, dim=1)
        beta = torch.where(my, beta, log_b)
        alpha = log_a - torch.logsumexp(beta.unsqueeze(1) - Cs, dim=2)
        alpha = torch.where(mx, alpha, log_a)
    err = (_kernel(Cs, 1.0, alpha, beta).sum(1) - b).abs().sum(-1)
    return alpha, beta, err
