"""The scaling kernels of the entropic OT solvers: per-side constants, absorbed scaling blocks and the exact
log-domain fallback (private, shared by :mod:`espnet_ot.ot.sinkhorn`, :mod:`espnet_ot.ot.gromov` and the driver)."""

import math
from typing import Tuple

import torch

# exp_: arguments floored where exp stays normal, results below _TINY set to 0
_LOG_FLOOR = {torch.float32: -87.0, torch.float64: -700.0}
_TINY = {torch.float32: 1e-15, torch.float64: 1e-140}
ABSORB_EVERY = 100  # most scaling iterations of a block at the target eps between two absorptions


class Side:
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

    def subset(self, idx: torch.Tensor) -> "Side":
        """The constants of the utterances ``idx`` alone."""
        s = object.__new__(Side)
        s.mask, s.w, s.log_w, s.pad = self.mask[idx], self.w[idx], self.log_w[idx], self.pad[idx]
        s.tau, s.hard, s.reg_type = self.tau, self.hard, self.reg_type
        return s


def exp_(Z: torch.Tensor) -> torch.Tensor:
    """In-place exp, with results below ``_TINY`` (1e-15 in float32) set to exactly 0.

    On CPU, arithmetic on subnormal numbers takes a slow path, up to 100x slower: exp of an argument whose
    result underflows does, and so do the products of two small kernel entries inside ``bmm`` (Newton's
    Hessian multiplies kernel entries pairwise). The argument is floored where exp stays normal, and results
    below ``_TINY`` are zeroed, so no product of two kept entries and a weight is subnormal. Every kernel
    built here is either the current coupling estimate (absorbed potentials) or shifted so that each row's
    largest entry is about 1, so a zeroed entry changes a marginal by less than ``La * Lt * _TINY``.
    """
    return torch.nn.functional.threshold_(Z.clamp_min_(_LOG_FLOOR[Z.dtype]).exp_(), _TINY[Z.dtype], 0.0)


def kernel(C: torch.Tensor, eps: torch.Tensor, phi: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """exp(phi_i + psi_j - C_ij / eps_b) for per-utterance eps (B,), in a few passes over (B, La, Lt).

    Entries below ``_TINY`` are 0 (see :func:`exp_`); the scalings are 0 on padding.
    """
    Z = torch.mul(C, (-1.0 / eps)[:, None, None])
    Z.add_(phi.unsqueeze(2)).add_(psi.unsqueeze(1))
    return exp_(Z)


class Scaling:
    """State of one absorbed block: kernel K (and K^T), scalings u, v as (B, 1, L) rows."""

    def __init__(self, C, eps, X, Y, phi, psi):
        self.K = kernel(C, eps, phi, psi)
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


def scaling_iters(C, eps, X, Y, phi, psi, n):
    """``n`` scaling iterations from absorbed (phi, psi); returns the absorbed potentials and the error
    (non-finite where the scalings under/overflowed)."""
    S = Scaling(C, eps, X, Y, phi, psi)
    u = S.u
    for _ in range(n):
        v, _ = S.update_v(u)
        u = S.update_u(v)
    return S.absorb(u, v, S.error(u, v))


def final_block(C, eps, sides, phi, psi, max_n, checks, tol):
    """Scaling iterations at the target eps between two absorptions, converged utterances frozen.

    ``sides``: the (X, Y) :class:`Side` pair. Runs at most ``min(max_n, ABSORB_EVERY)`` iterations and checks the error at the iterations in
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
    S = Scaling(C, eps, *sides, phi, psi)
    limit = max(1, min(max_n, ABSORB_EVERY))
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


def log_iters(Cs, eps, X, Y, phi, psi, n):
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


def exact_rows(C: torch.Tensor, eps: float, X: Side, Y: Side, phi: torch.Tensor, psi: torch.Tensor):
    """The final exact x update at token potentials ``psi``: (coupling, phi', column error).

    gamma_ij = exp(phi'_i + psi_j - C_ij / eps) with phi' the exact x potentials of psi (rows exact for a hard
    x marginal), phi'_i = c_i - k (m_i + log s_i) with m_i the row's largest psi_j - C_ij / eps and
    s_i = sum_j exp(psi_j - C_ij / eps - m_i) in [1, Lt]: nothing over- or underflows whatever potentials the
    iterations ended with (so nothing needs a check), and no two large numbers cancel in the row factor
    exp(phi'_i + m_i) (in float32, phi - lse cost the rows ~1e-5 of L1 at eps 0.01). The error is the column
    error of the very coupling returned; ``phi`` is kept on padding.
    """
    mx, my = X.mask, Y.mask
    kx, cx = X.exact_update(eps)
    Z = torch.add(psi.unsqueeze(1), C, alpha=-1.0 / eps)
    m = Z.amax(2, keepdim=True)
    E = exp_(Z.sub_(m))
    m = m.squeeze(2)
    log_s = torch.log(E.sum(2))
    phi_f = torch.where(mx, cx - kx * (m + log_s), phi)
    e_fac = cx - log_s if kx == 1.0 else cx - kx * log_s + (1.0 - kx) * m
    fac = torch.where(mx, torch.exp(e_fac), torch.zeros_like(phi))
    coupling = E.mul_(fac.unsqueeze(2)).masked_fill_(~(mx.unsqueeze(2) & my.unsqueeze(1)), 0.0)
    err_f = (coupling.sum(1) - Y.w).abs().masked_fill(~my, 0.0).sum(-1)
    return coupling, phi_f, err_f
