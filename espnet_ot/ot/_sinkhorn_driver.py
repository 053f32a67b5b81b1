"""The driver of the entropic OT solvers (private): the options object, the eps ladder, the blocks at the target
eps with their convergence checks, Newton's rounds and the final exact update; and the unrolled iterations for
autograd. Used by :mod:`espnet_ot.ot.sinkhorn` (after its argument checks) and :mod:`espnet_ot.ot.gromov`."""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from espnet_ot.ot._newton import NEWTON_STAGE_STEPS, NEWTON_STAGE_TOL, NEWTON_START, NEWTON_STEPS, Newton, uses_newton
from espnet_ot.ot._sinkhorn_kernels import Side, exact_rows, final_block, kernel, log_iters, scaling_iters
from espnet_ot.ot._utils import check_finite, marginal_noise

STAGE_ITER = 10  # Sinkhorn iterations per stage of the eps ladder
# ratio of consecutive eps of the ladder. 0.25 was ~15% faster on the benchmark (TOT eps 0.01, B=32, La=200:
# 19 -> 16 ms) but at beta 2 one utterance's Newton stalled after the larger jump (195 iterations instead of 31)
EPS_SCALING = 0.5
ROW_ROUNDING_ULPS = 4  # allowance for the rows' rounding in the stopping test (see _Solve.__init__)
FIRST_CHECKS = (3, 6, 10)  # checks of the first block at the target eps (then every check_every)


@dataclass(frozen=True)
class SolverOptions:
    """The (checked) options of one entropic OT solve, as in :func:`espnet_ot.ot.sinkhorn.sinkhorn_unbalanced`:
    ``taus`` = (tau_x, tau_y) are the marginal penalties (inf: a hard marginal), ``reg_type`` the entropic term."""

    eps: float
    taus: Tuple[float, float] = (math.inf, math.inf)
    reg_type: str = "kl"
    max_iter: int = 5000
    tol: float = 1e-6
    check_every: int = 10
    eps_scaling: float = EPS_SCALING
    eps_init: Optional[float] = None
    stage_iter: int = STAGE_ITER
    newton_steps: int = NEWTON_STEPS


def solve(C, mx, my, opts: SolverOptions, init=None, trusted=False, sides=None):
    """The solver proper on a float32/float64 cost; returns (coupling, log) with log['capped'] a bool.

    ``trusted``: the caller vouches for a warm start (``init``, no ladder) on finite costs, padding included,
    in utterances that all have frames and tokens (GM-OT's inner solves), so the cost is not scanned.
    ``sides``: the (X, Y) :class:`Side` pair of these masks, taus and reg_type, when the caller keeps one.
    """
    B, La, Lt = C.shape
    dtype, device = C.dtype, C.device
    X, Y = sides or (Side(mx, opts.taus[0], opts.reg_type, dtype), Side(my, opts.taus[1], opts.reg_type, dtype))
    if trusted:
        if init is None or opts.eps_init is not None:
            raise ValueError("solve: trusted solves are warm starts without an eps ladder")
        return _Solve(C, (X, Y), opts, torch.ones(B, dtype=torch.bool, device=device)).run(init, None, None, 0)
    active = mx.any(-1) & my.any(-1)
    if C.numel() == 0:
        return torch.zeros_like(C), _zero_log(C)
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
    if 0.0 < opts.eps_scaling < 1.0 and (init is None or opts.eps_init is not None):
        K_b = _ladder(lo, hi, active, opts, uses_newton(opts.newton_steps, Y, Lt))
        flags = torch.cat([flags, K_b.amax(0, keepdim=True)])
    any_active, all_active, any_bad, *n_stages = flags.tolist()  # one host synchronisation
    if any_bad:
        check_finite("cost", C_in, pair)  # raises, naming the first utterance concerned
    if not any_active:
        return torch.zeros_like(C), _zero_log(C)
    if not all_active:  # empty utterances (no real frame or token) get a zero coupling; the others are solved alone
        idx = active.nonzero(as_tuple=True)[0]
        sub_init = None if init is None else (init[0][idx], init[1][idx])
        coupling, log = solve(C_in[idx], mx[idx], my[idx], opts, sub_init)
        full = _zero_log(C_in)
        log = {k: full[k].index_put((idx,), log[k]) for k in ("f", "g", "err", "n_iter")} | {"capped": log["capped"]}
        return torch.zeros_like(C_in).index_put_((idx,), coupling), log
    return _Solve(C, (X, Y), opts, active).run(init, lo, K_b, n_stages[0] if n_stages else 0)


def _blank(C):
    """The initial state (err, n_iter, phi, psi) of a solve on C: zero errors and iterations, potentials -inf."""
    B, La, Lt = C.shape
    err = torch.zeros(B, dtype=C.dtype, device=C.device)
    n_iter = torch.zeros(B, dtype=torch.long, device=C.device)
    phi = torch.full((B, La), -math.inf, dtype=C.dtype, device=C.device)
    psi = torch.full((B, Lt), -math.inf, dtype=C.dtype, device=C.device)
    return err, n_iter, phi, psi


def _zero_log(C):
    """The log of a batch with nothing to solve: zero potentials, errors and iterations."""
    err, n_iter, phi, psi = _blank(C)
    return {"f": torch.zeros_like(phi), "g": torch.zeros_like(psi), "err": err, "n_iter": n_iter, "capped": False}


def _ladder(lo, hi, active, opts: SolverOptions, use_newton):
    """Length K_b (B,) of every utterance's eps ladder: it starts at eps * r^-K_b, K_b = ceil(log_{1/r}(e0 / eps))
    with e0 = ``eps_init`` or, from a cold start, a few stages below the cost range ``hi - lo``."""
    eps, eps_scaling = opts.eps, opts.eps_scaling
    if opts.eps_init is None:
        # start a few stages below the cost range: above range/8 the coupling is close to the prior's
        # anyway; Newton's method needs no more than NEWTON_START (from a cold start it converges there
        # in a step or two, where Sinkhorn needs the whole ladder from the range down)
        rng = (hi - lo).clamp_min(0.0) / 8.0
    else:
        rng = torch.full_like(lo, opts.eps_init)
    ratio = torch.log(rng / eps) / math.log(1.0 / eps_scaling)
    K_b = torch.where(active & (rng > eps), torch.ceil(ratio - 1e-9), torch.zeros_like(ratio)).clamp(0, 40).long()
    if use_newton and opts.eps_init is None:
        K_b = K_b.clamp_max(max(0, math.floor(math.log(NEWTON_START / eps) / math.log(1.0 / eps_scaling) + 1e-9)))
    return K_b


class _Solve:
    """A solve on a checked cost in which every utterance has frames and tokens (``active``, all True): the
    state its phases share. Potentials phi = f / eps, psi = g / eps ("units of eps"), -inf on padding, so
    exp(phi_i + psi_j - C_ij / eps) is exactly 0 there without a masking pass."""

    def __init__(self, C, sides, opts: SolverOptions, active):
        self.C, (self.X, self.Y), self.opts, self.active = C, sides, opts, active
        dtype = C.dtype
        self.err, self.n_iter, self.phi, self.psi = _blank(C)
        # rows are exact only up to rounding (float32: ~0.5 ulp of the total mass, seen at eps 0.01), and the
        # final update recomputes the coupling with other roundings (~marginal_noise: potentials of size
        # cost / eps): the column error must end that much below tol for the coupling returned, rows and columns
        # together, to meet it
        tol = opts.tol
        self.tol = tol - min(
            max(ROW_ROUNDING_ULPS * torch.finfo(dtype).eps, marginal_noise(dtype, opts.eps)), 0.5 * tol
        )
        self.use_newton = uses_newton(opts.newton_steps, self.Y, C.shape[2])
        self.newton = None  # the Newton solver, built at its first use
        self.capped = False

    def run(self, init, lo, K_b, n_stages):
        """From ``init`` (None: a cold start from the real costs' minima ``lo``) down the eps ladder of lengths
        ``K_b`` (None: no ladder; ``n_stages`` its maximum) to the target eps; returns (coupling, log)."""
        eps_b = self._start(init, lo, K_b)
        newton_ladder = False if K_b is None else self._ladder(K_b, n_stages, eps_b)
        # --- target eps: a short Sinkhorn block (enough for easy and warm-started problems, skipped after Newton
        # stages), then Newton's method on the token potentials (hard token marginal, few tokens) for the others
        self.eps_t = torch.full_like(self.err, self.opts.eps)
        self.done = torch.zeros(self.C.shape[0], dtype=torch.long, device=self.C.device)
        self.todo = self.active.clone()
        if self.use_newton and not newton_ladder:
            coupling = self._first_block()
            if coupling is not None:
                return coupling, self._log()
        # Every utterance is active here, so `todo` is known to be non-empty without reading it: all of it after
        # Newton stages, else what the block left. `left`: whether some utterance may still be in `todo`.
        left = self._newton_rounds() if self.use_newton else True
        if left:  # then (or else) Sinkhorn blocks
            self._blocks()
        return self._finish()

    def _newton(self) -> Newton:
        if self.newton is None:
            self.newton = Newton(self.C, self.X, self.Y)
        return self.newton

    def _scale_of(self, k):
        return torch.pow(torch.full_like(self.err, 1.0 / self.opts.eps_scaling), k.to(self.C.dtype))

    def _start(self, init, lo, K_b):
        """The starting potentials; returns every utterance's first eps (B,) (None: no ladder)."""
        C, X, Y = self.C, self.X, self.Y
        B, La, Lt = C.shape
        if init is None:
            # f = min C: every kernel entry <= 1 (>= exp(-8) at the first eps of the ladder, which is >= range / 8)
            f0 = torch.where(X.mask, lo[:, None], torch.zeros_like(self.phi))
            g0 = torch.zeros((B, Lt), dtype=C.dtype, device=C.device)
        else:
            f0, g0 = init[0].to(C.dtype), init[1].to(C.dtype)
        eps_b = None
        if K_b is not None:  # eps ladder: utterance b starts at eps * r^-K_b
            eps_b = self.opts.eps * self._scale_of(K_b)  # current eps of every utterance, (B,)
            eps_0 = eps_b[:, None]
        else:
            eps_0 = self.opts.eps
            if init is None:  # no ladder: f = row minimum, so every row of the first kernel has an entry 1
                row_min = C.masked_fill(~Y.mask.unsqueeze(1), math.inf).amin(2)
                f0 = torch.where(X.mask, row_min, torch.zeros_like(row_min))
        self.phi = torch.where(X.mask, f0 / eps_0, self.phi)
        self.psi = torch.where(Y.mask, g0 / eps_0, self.psi)
        return eps_b

    def _ladder(self, K_b, n_stages, eps_b):
        """The eps-scaling stages, a fixed number of iterations each (no host synchronisation, no batch
        coupling), then the step to the target eps; returns whether the last stage was Newton's."""
        C, X, Y, opts, active = self.C, self.X, self.Y, self.opts, self.active
        eps, phi, psi, n_iter = opts.eps, self.phi, self.psi, self.n_iter
        newton_ladder = False
        for k in range(n_stages, 0, -1):
            part = active & (K_b >= k)  # utterances whose ladder has reached stage k
            eps_k = torch.where(part, eps * self._scale_of(torch.full_like(K_b, k)), eps_b)
            phi = phi * (eps_b / eps_k)[:, None]
            psi = psi * (eps_b / eps_k)[:, None]
            eps_b = eps_k
            eps_k_s = eps * (1.0 / opts.eps_scaling) ** k
            newton_ladder = self.use_newton and eps_k_s <= NEWTON_START
            if newton_ladder:
                steps = min(opts.newton_steps, NEWTON_STAGE_STEPS)
                phi_n, psi_n, err_n, st, _, _ = self._newton().solve(eps_k_s, phi, psi, part, NEWTON_STAGE_TOL, steps)
                n_iter = n_iter + st
            else:
                phi_n, psi_n, err_n = scaling_iters(C, eps_b, X, Y, phi, psi, opts.stage_iter)
                n_iter = n_iter + opts.stage_iter * part.long()
            ok = part & torch.isfinite(err_n)
            phi = torch.where(ok[:, None], phi_n, phi)
            psi = torch.where(ok[:, None], psi_n, psi)
        # last step of the ladder: to the target eps
        self.phi = torch.where(X.mask, phi * (eps_b / eps)[:, None], phi)
        self.psi = torch.where(Y.mask, psi * (eps_b / eps)[:, None], psi)
        self.n_iter = n_iter
        return newton_ladder

    def _first_block(self):
        """Early checks (easy problems converge in a few iterations at large eps), frozen at convergence;
        returns the block's coupling when every utterance converged in it (rows exact, err its column error)."""
        active, todo, tol = self.active, self.todo, self.tol
        n0 = min(self.opts.max_iter, 2 * self.opts.check_every)
        phi_b, psi_b, err_b, n_b, n, block_coupling, all_conv = final_block(
            self.C, self.eps_t, (self.X, self.Y), self.phi, self.psi, n0, FIRST_CHECKS, tol
        )
        fine = torch.isfinite(err_b)
        self.phi = torch.where(fine[:, None], phi_b, self.phi)
        self.psi = torch.where(fine[:, None], psi_b, self.psi)
        self.err = torch.where(active & fine, err_b, self.err)
        self.n_iter = self.n_iter + n_b * active.long()
        self.done = self.done + n_b
        self.todo = todo & ~(fine & (err_b < tol))
        return block_coupling() if all_conv else None

    def _newton_rounds(self):
        """Newton's method at the target eps on `todo`; returns whether some utterance may be left unconverged."""
        todo, opts = self.todo, self.opts
        cap = min(opts.newton_steps, opts.max_iter)
        self.phi, self.psi, err_n, steps, conv, left = self._newton().solve(
            opts.eps, self.phi, self.psi, todo, self.tol, cap
        )
        self.err = torch.where(todo, err_n, self.err)
        self.n_iter = self.n_iter + steps
        self.done = self.done + steps
        self.todo = todo & ~conv
        return left

    def _blocks(self):
        """Sinkhorn blocks of check_every iterations until every utterance converged or reached max_iter,
        converged utterances frozen; utterances whose block under/overflowed are redone in log domain."""
        C, X, Y, opts, tol, eps_t = self.C, self.X, self.Y, self.opts, self.tol, self.eps_t
        eps, max_iter = opts.eps, opts.max_iter
        phi, psi, err, n_iter, done, todo, capped = (
            self.phi,
            self.psi,
            self.err,
            self.n_iter,
            self.done,
            self.todo,
            False,
        )
        while True:
            left, everyone = torch.stack([todo.any(), todo.all()]).tolist()  # one host synchronisation
            if not left:
                break
            idx = None if everyone else todo.nonzero(as_tuple=True)[0]
            sub = (lambda t: t) if everyone else (lambda t: t[idx])
            sides = (X, Y) if everyone else (X.subset(idx), Y.subset(idx))
            budget = max_iter - int(done.max() if everyone else done[idx].max())
            phi_b, psi_b, err_b, n_b, n, _, _ = final_block(
                sub(C), sub(eps_t), sides, sub(phi), sub(psi), budget, opts.check_every, tol
            )
            failed = ~torch.isfinite(err_b)
            if bool(failed.any()):  # redo exactly in log domain for the utterances that under/overflowed
                fi = failed.nonzero(as_tuple=True)[0]
                gi = fi if everyone else idx[fi]
                p_l, s_l, e_l = log_iters(C[gi] / eps, eps, X.subset(gi), Y.subset(gi), phi[gi], psi[gi], n)
                phi_b, psi_b = phi_b.index_put((fi,), p_l), psi_b.index_put((fi,), s_l)
                err_b = err_b.index_put((fi,), e_l)
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
        self.phi, self.psi, self.err, self.n_iter, self.done, self.todo = phi, psi, err, n_iter, done, todo
        self.capped = capped

    def _finish(self):
        """The final exact x update (hard token marginal; see :func:`exact_rows`), else the coupling of the
        potentials; returns (coupling, log)."""
        C, X, Y = self.C, self.X, self.Y
        if Y.hard:
            coupling, phi_f, err_f = exact_rows(C, self.opts.eps, X, Y, self.phi, self.psi)
            self.err = torch.where(self.active, err_f, self.err)
            self.phi = torch.where(X.mask, phi_f, self.phi)
        else:
            pair = X.mask.unsqueeze(2) & Y.mask.unsqueeze(1)
            coupling = kernel(C, self.eps_t, self.phi, self.psi).masked_fill_(~pair, 0.0)
        return coupling, self._log()

    def _log(self):
        """The solver's log: potentials f = eps phi, g = eps psi (0 on padding), error, iterations, capped."""
        eps, phi, psi = self.opts.eps, self.phi, self.psi
        return {
            "f": eps * torch.where(self.X.mask, phi, torch.zeros_like(phi)),
            "g": eps * torch.where(self.Y.mask, psi, torch.zeros_like(psi)),
            "err": self.err,
            "n_iter": self.n_iter,
            "capped": self.capped,
        }


def unrolled(C, mx, my, opts: SolverOptions):
    """Log-domain Sinkhorn without in-place updates, for autograd through the iterations.

    Balanced, or with KL-relaxed marginals (``opts.taus`` finite): the exact updates of :class:`Side`,
    f = c - k LSE with k = tau / (tau + eps). Stops as :func:`sinkhorn` (hard rows) or
    :func:`sinkhorn_unbalanced` (relaxed rows: the column sums' change over the next column update). Padding is masked with a large finite negative
    log-kernel (not -inf), so no NaN reaches the gradients.
    """
    eps, taus, reg_type, max_iter, tol = opts.eps, opts.taus, opts.reg_type, opts.max_iter, opts.tol
    pair = mx.unsqueeze(2) & my.unsqueeze(1)
    la = mx.sum(-1, keepdim=True).clamp_min(1).to(C.dtype)
    lt = my.sum(-1, keepdim=True).clamp_min(1).to(C.dtype)
    a = mx.to(C.dtype) / la
    b = my.to(C.dtype) / lt
    log_a = torch.where(mx, -torch.log(la).expand_as(a), torch.zeros_like(a))
    log_b = torch.where(my, -torch.log(lt).expand_as(b), torch.zeros_like(b))
    M = (-C / eps).masked_fill(~pair, -1e9)

    def side(tau, log_w):
        """(k, c) of a side's update c - k LSE (as :meth:`Side.exact_update`)."""
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
        if n_iter % opts.check_every == 0 or n_iter == max_iter:
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
