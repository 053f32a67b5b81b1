"""Damped Newton's method on the semi-dual of entropic OT in the token potentials (private: used by the driver,
:mod:`espnet_ot.ot._sinkhorn_driver`; :func:`write_back` and ``COMPACT_AT`` also by :mod:`espnet_ot.ot.gromov`)."""

import math
from typing import Dict, Optional

import torch

from espnet_ot.ot._sinkhorn_kernels import Side, exp_
from espnet_ot.ot._utils import bmv

# cap on Newton's rounds (trial points) at the target eps. Strong priors at small eps can need ~100 (beta 2,
# eps 0.01, 1000 frames: 45; a random batch at beta 3: 101), and Sinkhorn, which takes over at the cap, needs
# thousands there; rounds with few utterances left iterate those alone (COMPACT_AT), so they cost little
NEWTON_STEPS = 200
NEWTON_START = 1.0  # Newton's ladder starts at most here (cost units), Sinkhorn's at range / 8
NEWTON_STAGE_TOL, NEWTON_STAGE_STEPS = 1e-2, 20  # each stage of Newton's ladder: a loose tolerance
# largest change of a token potential in one Newton step, in units of eps. 10 made blocks of tokens that must
# shift far (strong priors, long utterances) crawl: beta 2, eps 0.01, 1000 frames did not converge in 5000
# iterations; 20 converges there in 45, and 50 overshoots into Sinkhorn's fallback again
NEWTON_CAP = 20.0
SHRINK_LO = 0.25  # a rejected Newton step shrinks by at least half, at most to a quarter
NEWTON_RIDGE = 1e-9  # ridge on Newton's Hessian, relative to the token weights (see Newton.__init__)
NEWTON_MAX_LT = 512  # Newton's linear systems are (Lt x Lt): beyond this, Sinkhorn iterations only
COMPACT_AT = 0.5  # once at most this fraction of the batch being iterated is unconverged, iterate those alone


class Newton:
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

    def __init__(self, C: torch.Tensor, X: Side, Y: Side):
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
        E = exp_(E.sub_(shift.unsqueeze(1)))
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

    def take(self, idx: torch.Tensor) -> "Newton":
        """The problem of the utterances ``idx`` alone, set up at the same eps."""
        sub = object.__new__(Newton)
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
                write_back(out, dict(psi=psi, shift=shift, err=err, steps=steps, conv=conv), rows)
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
            write_back(out, dict(psi=psi, shift=shift, err=err, steps=steps, conv=conv), rows)
            psi, shift, err, steps, conv = (out[k] for k in ("psi", "shift", "err", "steps", "conv"))
        left = n_left + dropped > 0
        todo = batch_todo
        phi = torch.where(todo.unsqueeze(1), self.phi(shift), phi)
        return phi, psi, err, steps, conv, left


def write_back(state: Dict[str, torch.Tensor], w: Dict[str, torch.Tensor], rows: Optional[torch.Tensor]):
    """Copy the working state ``w`` of batch rows ``rows`` (None: all) into ``state``; returns ``rows``."""
    for k, v in w.items():
        state[k] = v if rows is None else state[k].index_copy(0, rows, v)
    return rows


def uses_newton(newton_steps: int, Y: Side, Lt: int) -> bool:
    """Whether the solver finishes with Newton's method (hard token marginal, not too many tokens)."""
    return newton_steps > 0 and Y.hard and 0 < Lt <= NEWTON_MAX_LT
