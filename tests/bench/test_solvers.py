"""`python -m espnet_ot.bench solvers`: one row per case on a small problem, with the columns the docs report."""

import pytest

pytest.importorskip("ot", reason="POT is the benchmark's baseline (the [test] extra)")

from espnet_ot.bench import solvers  # noqa: E402


@pytest.mark.parametrize("case", ["ot", "tot", "uot", "fgw"])
def test_row_reports_ours_and_pot_with_errors_and_ratios(case, single_thread):
    row = solvers.run_case(
        case,
        B=3,
        La=24,
        Lt=5,
        D=8,
        eps=0.2,
        tol=1e-4,
        max_iter=5000,
        gw_max_iter=50,
        beta=0.5,
        alpha=0.5,
        repeats=1,
        device="cpu",
        pot_max_iter=20000,
    )
    assert row["ours_marginal_err"] < 1e-4 and row["ours_iters"] >= 1, row
    # (POT stops on the L2 norm of its marginal error; pot_converged says whether that met our L1 tolerance)
    assert row["pot_marginal_err"] < 1e-3 and isinstance(row["pot_converged"], bool) and row["speedup_vs_loop"] > 0
    assert ("beta" in row) == (case in ("tot", "uot"))
    if case != "uot":
        assert row["max_abs_diff"] < 1e-3, row  # the same problem as POT's loop, to its tolerance
    if case in ("ot", "tot"):
        assert row["pot_epsscaling_marginal_err"] < 1e-3 and "speedup_vs_epsscaling" in row, row
    if case == "fgw":  # POT's batched solver solves unregularised FGW: how far its plan is from ours is shown
        assert row["pot_batch_vs_loop_max_diff"] > 0, row
