"""espnet_ot.ot.sinkhorn: agreement with POT, convergence at the paper's small eps (tolerance stopping, max_iter
warning, stats), padding and batch invariance, envelope gradient, low precision and bad inputs (docs/method.md §2-3)."""

import importlib
import math
import warnings

import numpy as np
import pytest
import torch

ot = pytest.importorskip("ot", reason="POT is the test oracle: pip install pot (the [test] extra)")
from scipy.spatial.distance import cdist  # noqa: E402

from espnet_ot.ot import (  # noqa: E402
    TemporalStructure,
    cosine_cost,
    fused_gromov_wasserstein,
    ot_alignment,
    sinkhorn,
    tot_cost,
    transport_cost,
)
from espnet_ot.utils.measure import op_counts, random_ot_problem  # noqa: E402 (as the benchmarks count them)
from helpers import assert_marginals, random_batch  # noqa: E402

LA, LT = [37, 20, 1, 12, 29], [6, 3, 1, 9, 2]  # true lengths of a padded batch (one 1 x 1 problem)


def pot_tot_cost(x, y, beta):
    """TOT cost written out from its definition, independently of espnet_ot: 1 - cos + beta * d^2."""
    la, lt = len(x), len(y)
    C = cdist(x, y, metric="cosine")
    i = np.arange(1, la + 1)[:, None] / la
    j = np.arange(1, lt + 1)[None, :] / lt
    d = np.abs(i - j) / np.sqrt(1 / la**2 + 1 / lt**2)
    return C + beta * d**2


def col_row_err(P, mx, my):
    a = mx.to(P.dtype) / mx.sum(-1, keepdim=True)
    b = my.to(P.dtype) / my.sum(-1, keepdim=True)
    return (P.sum(1) - b).abs().sum(-1), (P.sum(2) - a).abs().sum(-1)


def test_tot_eps_001_matches_pot_converged():
    la, lt = [40, 25, 33], [6, 4, 5]
    x, y, mx, my = random_batch(la, lt, seed=1)
    eps, beta = 0.01, 0.5
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, beta)
    P, log = sinkhorn(C, mx, my, eps, tol=1e-10, return_log=True)
    assert (log["err"] < 1e-10).all()
    for k, (n, m) in enumerate(zip(la, lt)):
        M = pot_tot_cost(x[k, :n].numpy(), y[k, :m].numpy(), beta)
        assert np.abs(M - C[k, :n, :m].numpy()).max() < 1e-12  # our cost is the definition
        a, b = np.full(n, 1 / n), np.full(m, 1 / m)
        ref, pot = ot.bregman.sinkhorn_log(a, b, M, eps, numItermax=20000, stopThr=1e-12, log=True)
        if pot["niter"] >= 20000 - 1:
            # POT from a cold start needs 235k iterations (98 s) on utterance 0: there it starts from our
            # potentials instead. The entropic optimum is unique and POT stops only once its own marginals are
            # exact to 1e-12, so a wrong answer of ours would still be moved to the optimum and show below.
            warm = (log["f"][k, :n].numpy() / eps, log["g"][k, :m].numpy() / eps)
            ref = ot.bregman.sinkhorn_log(a, b, M, eps, numItermax=500000, stopThr=1e-12, warmstart=warm)
        # the oracle itself must have converged for the comparison to mean anything
        assert np.abs(ref.sum(0) - b).sum() < 1e-9 and np.abs(ref.sum(1) - a).sum() < 1e-9
        assert np.abs(P[k, :n, :m].numpy() - ref).max() < 1e-5


@pytest.mark.parametrize("method", ["ot", "tot", "gmot"])
def test_default_ot_alignment_at_eps_001_meets_default_tolerance(method):
    # AISHELL-like lengths in float32: the defaults must converge, not stop on an iteration count
    x, y, mx, my = random_batch([200, 150, 90], [20, 12, 7], D=32, dtype=torch.float32, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching max_iter would warn
        r = ot_alignment(x, y, mx, my, method=method, eps=0.01, beta=0.5)
    col, row = col_row_err(r.coupling, mx, my)
    assert (r.marginal_err <= 1e-4).all(), r.marginal_err
    assert (col <= 1e-4).all() and (row <= 1e-4).all(), (col, row)
    assert (r.n_iter > 0).all() and r.n_iter.dtype == torch.long


def test_rows_exact_to_rounding_in_float32_at_small_eps():
    # the final x update makes every row exact; written as exp(phi_f - phi) with two large potentials it lost
    # ~1e-5 of row L1 to float32 cancellation at eps 0.01 (the bench's combined error went over 1e-4)
    x, y, mx, my = random_batch([200, 160, 120, 200], [20, 16, 9, 12], D=64, dtype=torch.float32, seed=5)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    P, log = sinkhorn(C, mx, my, 0.01, tol=1e-4, return_log=True)
    col, row = col_row_err(P.double(), mx, my)
    assert (row < 2e-6).all(), row
    assert torch.allclose(col, log["err"].double(), atol=2e-6), (col, log["err"])


def test_rows_and_columns_together_within_tol_in_float32(single_thread):
    # the benchmark's TOT problem at eps 0.01: one utterance's column error ended 4e-8 below tol and the rows'
    # float32 rounding (6e-8 of L1) took rows + columns over it; the stopping test now allows for the rows
    x, y, mx, my, _, _ = random_ot_problem(32, 200, 20, 256, "cpu", 0)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    P = sinkhorn(C, mx, my, 0.01, tol=1e-4)
    col, row = col_row_err(P.double(), mx, my)
    assert ((col + row) <= 1e-4).all(), (col + row).max()


def test_strong_temporal_prior_at_small_eps_converges_with_the_marginals_it_reports():
    # beta 2 at eps 0.01 on padded utterances: the token potentials grow past exp's range on the padded frames'
    # rows (0 * inf = NaN in the column sums), and at this eps the Hessian loses its small eigenvalues to
    # float32 cancellation; the solver once returned couplings 4% off the marginals with neither warning nor
    # reported error. Checked here independently of the solver's own error report.
    x, y, mx, my = random_batch([300, 220, 160, 260], [30, 24, 18, 28], D=64, dtype=torch.float32, seed=0)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching max_iter would warn
        P, log = sinkhorn(C, mx, my, 0.01, tol=1e-4, return_log=True)
    col, row = col_row_err(P.double(), mx, my)
    assert (col <= 1e-4).all() and (row <= 1e-5).all(), (col, row)
    assert (log["n_iter"] <= 100).all(), log["n_iter"]  # Newton's ladder, not thousands of Sinkhorn iterations


def test_strong_temporal_prior_on_long_utterances_converges_in_newton_steps():
    # beta 2 at eps 0.01 on 1000 frames / 50 tokens (four utterances of the solver benchmark's La 1000 case):
    # blocks of tokens must shift their potentials by many eps. With Newton's step capped at 10 eps and 60
    # rounds, these ran into Sinkhorn's fallback and stopped at max_iter with an L1 error of 2e-3
    x, y, mx, my, _, _ = random_ot_problem(32, 1000, 50, 256, "cpu", 0)
    k = [0, 2, 15, 29]
    C = tot_cost(cosine_cost(x[k], y[k], mx[k], my[k]), mx[k], my[k], 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching max_iter would warn
        P, log = sinkhorn(C, mx[k], my[k], 0.01, tol=1e-4, return_log=True)
    col, row = col_row_err(P.double(), mx[k], my[k])
    assert (col + row <= 1e-4).all(), (col, row)
    assert (log["n_iter"] <= 60).all(), log["n_iter"]


def test_eps_scaling_and_newton_cut_the_iterations():
    x, y, mx, my = random_batch([120, 90], [15, 10], D=32, dtype=torch.float32, seed=3)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    _, fast = sinkhorn(C, mx, my, 0.1, tol=1e-4, return_log=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, plain = sinkhorn(C, mx, my, 0.1, tol=1e-4, return_log=True, eps_scaling=0, newton_steps=0)
    assert (fast["err"] < 1e-4).all() and (plain["err"] < 1e-4).all()
    assert fast["n_iter"].max() * 5 < plain["n_iter"].max(), (fast["n_iter"], plain["n_iter"])


@pytest.mark.parametrize("method", ["ot", "tot", "gmot"])
def test_max_iter_cap_warns_once_with_the_error(method):
    x, y, mx, my = random_batch([80, 60], [10, 8], D=16, dtype=torch.float32, seed=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = ot_alignment(x, y, mx, my, method=method, eps=0.01, max_iter=2, eps_scaling=0)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1, msgs
    assert "max_iter=2" in msgs[0] and "marginal error" in msgs[0]
    worst = float(r.marginal_err.max())
    assert f"{worst:.3g}" in msgs[0]
    if method != "gmot":  # FGW's outer loop can land within tol even when an inner solve hit its cap
        assert worst > 1e-4


def test_converged_utterances_do_not_depend_on_their_batch():
    # float64: in float32 the padded and unpadded gemms round differently and eps = 0.02 amplifies that to ~1e-6
    x, y, mx, my = random_batch([70, 30, 50], [9, 3, 6], D=16, dtype=torch.float64, seed=5)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    P = sinkhorn(C, mx, my, 0.02, tol=1e-5)
    for k, (n, m) in enumerate(zip([70, 30, 50], [9, 3, 6])):
        alone = sinkhorn(C[k : k + 1, :n, :m], mx[k : k + 1, :n], my[k : k + 1, :m], 0.02, tol=1e-5)
        assert torch.allclose(P[k, :n, :m], alone[0], atol=1e-12, rtol=0)


# TOT at small eps converges slowly for any Sinkhorn (POT included): the cases are those where both converge
@pytest.mark.parametrize("eps, beta", [(1.0, 0.0), (0.1, 0.0), (0.03, 0.0), (1.0, 0.5), (0.1, 0.5)])
def test_sinkhorn_matches_pot_sinkhorn_log(eps, beta, device):
    x, y, mx, my = (t.to(device) for t in random_batch(LA, LT))
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, beta)
    P = sinkhorn(C, mx, my, eps, max_iter=20000, tol=1e-12)
    C, P, mx, my = C.cpu(), P.cpu(), mx.cpu(), my.cpu()
    for k, (la, lt) in enumerate(zip(LA, LT)):
        ref = ot.bregman.sinkhorn_log(
            np.full(la, 1 / la), np.full(lt, 1 / lt), C[k, :la, :lt].numpy(), eps, numItermax=100000, stopThr=1e-14
        )
        assert np.abs(P[k, :la, :lt].numpy() - ref).max() < 1e-5
    assert_marginals(P, mx, my, atol=1e-10)


@pytest.mark.parametrize("solver", ["sinkhorn", "fgw"])
def test_padding_and_batch_invariance(solver):
    x, y, mx, my = random_batch(LA, LT, dtype=torch.float32, seed=4)
    eps = 0.1

    def solve(x, y, mx, my):
        C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
        if solver == "sinkhorn":
            return sinkhorn(C, mx, my, eps, tol=1e-6)
        return fused_gromov_wasserstein(C, TemporalStructure(mx), TemporalStructure(my), mx, my, 0.5, eps)

    P = solve(x, y, mx, my)
    for k, (la, lt) in enumerate(zip(LA, LT)):
        # alone, without padding
        alone = solve(x[k : k + 1, :la], y[k : k + 1, :lt], mx[k : k + 1, :la], my[k : k + 1, :lt])
        assert torch.allclose(P[k, :la, :lt], alone[0], atol=1e-7, rtol=1e-5)
        # alone, with extra padding (garbage values in the padded frames must not matter)
        xp = torch.cat([x[k : k + 1, :la], 100 * torch.randn(1, 50, x.shape[2])], 1)
        yp = torch.cat([y[k : k + 1, :lt], 100 * torch.randn(1, 4, y.shape[2])], 1)
        mxp = torch.arange(la + 50)[None] < la
        myp = torch.arange(lt + 4)[None] < lt
        padded = solve(xp, yp, mxp, myp)
        # other shapes round differently: equal within the solve's tolerance (1e-6 L1 marginal error)
        assert torch.allclose(P[k, :la, :lt], padded[0, :la, :lt], atol=1e-6, rtol=1e-5)
        assert padded[0, la:].abs().max() == 0 and padded[0, :, lt:].abs().max() == 0


def test_all_padding_rows_are_excluded():
    x, y, mx, my = random_batch([10, 5], [4, 3], dtype=torch.float32)
    mx[1] = False
    P = sinkhorn(cosine_cost(x, y, mx, my), mx, my, 0.1)
    assert torch.isfinite(P).all() and P[1].abs().max() == 0
    assert torch.allclose(P[0].sum(), torch.tensor(1.0), atol=1e-5)
    r = ot_alignment(x, y, mx, my, method="gmot", eps=0.1)
    assert torch.isfinite(r.loss).all() and r.loss[1] == 0


def test_envelope_gradient_wrt_cost_is_the_coupling():
    x, y, mx, my = random_batch(LA, LT, dtype=torch.float32)
    C = cosine_cost(x, y, mx, my).requires_grad_(True)
    with torch.no_grad():
        P = sinkhorn(C, mx, my, 0.1)
    transport_cost(C, P).sum().backward()
    assert torch.equal(C.grad, P)
    r = ot_alignment(x, y, mx, my, method="tot", eps=0.1)
    assert not r.coupling.requires_grad  # envelope mode keeps no solver graph: memory is iteration-free


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_solved_in_float32(dtype):
    x, y, mx, my = random_batch(LA, LT, dtype=torch.float32, seed=10)
    r16 = ot_alignment(x.to(dtype), y.to(dtype), mx, my, method="tot", eps=0.05)
    # the same (rounded) inputs given in float32: a float32 solve gives the same coupling to rounding, while a
    # solve in fp16/bf16 (eps = 0.05 amplifies their 1e-3..4e-3 relative cost error) is off by ~1e-3
    r32 = ot_alignment(x.to(dtype).float(), y.to(dtype).float(), mx, my, method="tot", eps=0.05)
    assert r16.coupling.dtype == torch.float32 and r16.loss.dtype == torch.float32
    assert torch.isfinite(r16.coupling).all()
    assert (r16.coupling - r32.coupling).abs().max() < 1e-6
    torch.testing.assert_close(r16.loss, r32.loss, rtol=1e-5, atol=1e-6)


def test_bad_inputs_give_clear_errors():
    x, y, mx, my = random_batch([3], [2], dtype=torch.float32)
    C = cosine_cost(x, y, mx, my)
    with pytest.raises(TypeError, match="x_mask must be a bool"):
        sinkhorn(C, mx.float(), my, 0.1)
    with pytest.raises(ValueError, match="eps must be > 0"):
        sinkhorn(C, mx, my, 0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        ot_alignment(x, y, mx, my, method="wasserstein")
    with pytest.raises(ValueError, match="alpha must be in"):
        fused_gromov_wasserstein(C, TemporalStructure(mx), TemporalStructure(my), mx, my, 1.5, 0.1)


def test_a_solve_that_ends_in_its_first_block_reads_the_device_once_per_check():
    # the cost check (which also reads the eps ladder's length), then one read per convergence check of the
    # block: nothing re-reads what those told (a GPU waits at each read)
    first_checks = importlib.import_module("espnet_ot.ot._sinkhorn_driver").FIRST_CHECKS
    x, y, mx, my = random_batch(LA, LT, D=16, dtype=torch.float32, seed=1)
    C = cosine_cost(x, y, mx, my)
    for eps in (2.0, 0.5):
        P, log = sinkhorn(C, mx, my, eps, tol=1e-4, return_log=True)
        n = int(log["n_iter"].max())
        assert n in first_checks  # converged in the first block
        assert op_counts(lambda: sinkhorn(C, mx, my, eps, tol=1e-4))["syncs"] == 1 + first_checks.index(n) + 1


def test_newton_on_its_live_utterances_alone_gives_the_whole_batch_result(monkeypatch):
    # once at most COMPACT_AT of the utterances are live, Newton iterates those alone: same couplings and steps
    nt = importlib.import_module("espnet_ot.ot._newton")
    x, y, mx, my = random_batch([70, 30, 50, 40, 60, 25], [9, 3, 6, 5, 8, 4], D=16, dtype=torch.float64, seed=5)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    taken = []
    take = nt.Newton.take
    monkeypatch.setattr(nt.Newton, "take", lambda self, idx: taken.append(len(idx)) or take(self, idx))
    P, log = sinkhorn(C, mx, my, 0.01, tol=1e-6, return_log=True)
    assert taken and max(taken) <= 3, taken  # some rounds iterated at most half of the 6 utterances
    assert (log["err"] < 1e-6).all()
    monkeypatch.setattr(nt, "COMPACT_AT", 0.0)  # never shrink
    P_all, log_all = sinkhorn(C, mx, my, 0.01, tol=1e-6, return_log=True)
    assert torch.allclose(P, P_all, rtol=0, atol=1e-12)
    assert torch.equal(log["n_iter"], log_all["n_iter"])


def test_a_newton_direction_reads_nothing_from_the_device():
    # torch.cholesky_solve reads an error flag back to the host at every call (on CPU at least: .item())
    nt = importlib.import_module("espnet_ot.ot._newton")
    x, y, mx, my = random_batch(LA, LT, D=16, dtype=torch.float32, seed=1)
    C = tot_cost(cosine_cost(x, y, mx, my), mx, my, 0.5)
    X, Y = nt.Side(mx, math.inf, "kl", C.dtype), nt.Side(my, math.inf, "kl", C.dtype)
    newton = nt.Newton(C, X, Y)
    newton.setup(0.1)
    _, e, _, parts = newton.evaluate(torch.zeros(my.shape), None)
    assert op_counts(lambda: newton.direction(e, parts))["syncs"] == 0
