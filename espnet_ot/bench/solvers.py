"""Solver benchmark: our batched Sinkhorn/TOT/unbalanced/FGW against POT's batched solvers and per-utterance POT loops."""

import argparse
import json
import math
import time
from typing import Callable, Dict, List

import numpy as np
import torch

from espnet_ot.ot import (
    TemporalStructure,
    cosine_cost,
    fused_gromov_wasserstein,
    sinkhorn,
    sinkhorn_unbalanced,
    temporal_structure,
    tot_cost,
)
from espnet_ot.utils.measure import random_ot_problem


def _best_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Best of ``repeats`` timed runs after a warm-up: on a shared machine (CPU steal) the minimum is the least
    noisy estimate of a solver's own time."""
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def _l1_err(P: np.ndarray, a: np.ndarray, b: np.ndarray, relax: bool = False) -> float:
    """L1 marginal error of one coupling: columns (tokens) always, rows too unless the rows are relaxed."""
    err = float(np.abs(P.sum(0) - b).sum())
    return err if relax else err + float(np.abs(P.sum(1) - a).sum())


def run_case(
    case: str,
    B: int,
    La: int,
    Lt: int,
    D: int,
    eps: float,
    tol: float,
    max_iter: int,
    gw_max_iter: int,
    beta: float,
    alpha: float,
    repeats: int,
    device: str,
    seed: int = 0,
    pot_max_iter: int = 20000,
    relax: float = 1.0,
) -> Dict[str, object]:
    """One row: ours vs POT's batched solver, POT's per-utterance loop and (Sinkhorn cases) POT's
    per-utterance ``sinkhorn_epsilon_scaling``, with iterations and worst L1 marginal error of each."""
    import ot
    import ot.batch

    x, y, mx, my, la, lt = random_ot_problem(B, La, Lt, D, device, seed)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    C = cosine_cost(x, y, mx, my)
    if case in ("tot", "uot"):
        C = tot_cost(C, mx, my, beta)
    a = mx.to(C.dtype) / mx.sum(-1, keepdim=True)
    b = my.to(C.dtype) / my.sum(-1, keepdim=True)
    C_np = C.cpu().double().numpy()
    w = [(np.full(n, 1 / n), np.full(m, 1 / m)) for n, m in zip(la, lt)]
    pot_eps = None
    ours_log = {}

    if case in ("ot", "tot"):

        def ours():
            P, log = sinkhorn(C, mx, my, eps, max_iter=max_iter, tol=tol, return_log=True)
            ours_log.update(log)
            return P

        def pot_batch():
            return ot.batch.solve_batch(
                C, reg=eps, a=a, b=b, max_iter=pot_max_iter, tol=tol, method="log_sinkhorn"
            ).plan

        def pot_loop():
            return [
                ot.bregman.sinkhorn_log(
                    w[k][0], w[k][1], C_np[k, :n, :m], eps, numItermax=pot_max_iter, stopThr=tol, warn=False, log=True
                )
                for k, (n, m) in enumerate(zip(la, lt))
            ]

        def pot_eps():
            return [
                ot.bregman.sinkhorn_epsilon_scaling(
                    w[k][0], w[k][1], C_np[k, :n, :m], eps, numItermax=pot_max_iter, stopThr=tol, warn=False, log=True
                )
                for k, (n, m) in enumerate(zip(la, lt))
            ]
    elif case == "uot":

        def ours():
            P, log = sinkhorn_unbalanced(
                C, mx, my, eps, reg_m=(relax, math.inf), max_iter=max_iter, tol=tol, return_log=True
            )
            ours_log.update(log)
            return P

        pot_batch = None

        def pot_loop():
            return [
                ot.unbalanced.sinkhorn_unbalanced(
                    w[k][0],
                    w[k][1],
                    C_np[k, :n, :m],
                    eps,
                    (relax, math.inf),
                    method="sinkhorn_stabilized",
                    numItermax=pot_max_iter,
                    stopThr=tol,
                    log=True,
                )
                for k, (n, m) in enumerate(zip(la, lt))
            ]
    else:
        Sx, Sy = TemporalStructure(mx), TemporalStructure(my)
        Dx, Dy = temporal_structure(mx), temporal_structure(my)
        Dx_np, Dy_np = Dx.cpu().double().numpy(), Dy.cpu().double().numpy()

        def ours():
            P, log = fused_gromov_wasserstein(
                C,
                Sx,
                Sy,
                mx,
                my,
                alpha,
                eps,
                max_iter=gw_max_iter,
                tol=tol,
                sinkhorn_max_iter=max_iter,
                sinkhorn_tol=tol,
                return_log=True,
            )
            ours_log.update(err=log["sinkhorn_err"], n_iter=log["sinkhorn_iter"])
            return P

        def pot_batch():
            # NB: a different problem. solve_gromov_batch is a proximal-point method (KL(T | T_k) steps) for
            # *unregularised* FGW, not entropic FGW; the row reports how far its plan is from POT's entropic one
            # (pot_batch_vs_loop_max_diff), and the loop is the POT path that solves our problem
            return ot.batch.solve_gromov_batch(
                Dx, Dy, reg=eps, a=a, b=b, M=C, alpha=alpha, max_iter=gw_max_iter, tol=tol, tol_inner=tol
            ).plan

        def pot_loop():
            return [
                ot.gromov.entropic_fused_gromov_wasserstein(
                    C_np[k, :n, :m],
                    Dx_np[k, :n, :n],
                    Dy_np[k, :m, :m],
                    w[k][0],
                    w[k][1],
                    loss_fun="square_loss",
                    epsilon=eps,
                    alpha=alpha,
                    max_iter=gw_max_iter,
                    tol=tol,
                    numItermax=max_iter,
                    stopThr=tol,
                    warn=False,
                    log=True,
                )
                for k, (n, m) in enumerate(zip(la, lt))
            ]

    relaxed = case == "uot"
    P = ours().cpu().double().numpy()
    ours_err = max(_l1_err(P[k, :n, :m], *w[k], relax=relaxed) for k, (n, m) in enumerate(zip(la, lt)))
    refs = pot_loop()
    plans = [r[0] for r in refs]
    pot_iters = [len(r[1].get("err", [])) * (10 if case in ("ot", "tot") else 1) for r in refs]
    pot_err = max(_l1_err(plans[k], *w[k], relax=relaxed) for k in range(B))
    diff = max(float(np.abs(P[k, :n, :m] - plans[k]).max()) for k, (n, m) in enumerate(zip(la, lt)))
    ours_ms = _best_ms(ours, repeats, sync)
    row = {
        "case": case,
        "B": B,
        "La": La,
        "Lt": Lt,
        "D": D,
        "eps": eps,
        "tol": tol,
        "device": device,
        "threads": torch.get_num_threads(),
        "ours_ms": round(ours_ms, 3),
        "ours_iters": int(ours_log["n_iter"].max()),
        "ours_marginal_err": float(f"{ours_err:.3g}"),
    }
    if case in ("tot", "uot"):  # the fgw case has no temporal prior (its structure is temporal)
        row["beta"] = beta
    if relaxed:
        row["relax"] = relax
    pot_loop_ms = _best_ms(pot_loop, max(1, repeats // 3), lambda: None)
    row.update(
        {
            "pot_loop_ms": round(pot_loop_ms, 3),
            "pot_loop_iters_max": max(pot_iters),
            "pot_marginal_err": float(f"{pot_err:.3g}"),
            "pot_converged": bool(pot_err <= tol),
            "speedup_vs_loop": round(pot_loop_ms / ours_ms, 2),
            "max_abs_diff": float(f"{diff:.3g}"),
        }
    )
    if pot_batch is not None:
        pb = pot_batch().cpu().double().numpy()
        pb_err = max(_l1_err(pb[k, :n, :m], *w[k]) for k, (n, m) in enumerate(zip(la, lt)))
        pot_batch_ms = _best_ms(pot_batch, max(1, repeats // 3), sync)
        row.update(
            {
                "pot_batch_ms": round(pot_batch_ms, 3),
                "pot_batch_marginal_err": float(f"{pb_err:.3g}"),
                "pot_batch_converged": bool(pb_err <= tol),
                "speedup_vs_batch": round(pot_batch_ms / ours_ms, 2),
            }
        )
        if case == "fgw":
            pb_diff = max(float(np.abs(pb[k, :n, :m] - plans[k]).max()) for k, (n, m) in enumerate(zip(la, lt)))
            row["pot_batch_vs_loop_max_diff"] = float(f"{pb_diff:.3g}")
    if case in ("ot", "tot"):
        es = pot_eps()
        es_err = max(_l1_err(es[k][0], *w[k]) for k in range(B))
        pot_eps_ms = _best_ms(pot_eps, 1, lambda: None)
        row.update(
            {
                "pot_epsscaling_ms": round(pot_eps_ms, 3),
                "pot_epsscaling_marginal_err": float(f"{es_err:.3g}"),
                "pot_epsscaling_converged": bool(es_err <= tol),
                "speedup_vs_epsscaling": round(pot_eps_ms / ours_ms, 2),
            }
        )
    return row


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m espnet_ot.bench solvers", description=__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--repeats", type=int, default=7, help="timed runs of ours (a third of them for POT; the best is reported)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--eps", type=float, default=0.1, help="eps of the ot and fgw cases")
    p.add_argument("--tot_eps", "--tot-eps", default="0.1,0.01", help="comma-separated eps of the tot cases")
    p.add_argument("--relax", type=float, default=1.0, help="acoustic-side KL penalty of the uot case")
    p.add_argument("--tol", type=float, default=1e-4, help="L1 marginal tolerance of every solver")
    p.add_argument(
        "--pot_max_iter", "--pot-max-iter", type=int, default=20000, help="iteration cap of the POT Sinkhorn paths"
    )
    p.add_argument("--max_iter", "--max-iter", type=int, default=5000, help="our safety cap (we stop on --tol)")
    p.add_argument(
        "--gw_max_iter", "--gw-max-iter", type=int, default=50, help="outer FGW iterations (POT's batch default)"
    )
    p.add_argument("--beta", type=float, default=0.5, help="temporal prior weight of the tot cases")
    p.add_argument("--alpha", type=float, default=0.5, help="FGW trade-off")
    p.add_argument("--cases", default="ot,tot,uot,fgw", help="comma-separated subset of ot,tot,uot,fgw")
    p.add_argument("--no_long", "--no-long", action="store_true", help="skip the La=1000, Lt=50 cases")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch; run with --device cpu")
    shapes = [(32, 200, 20, 256)] + ([] if args.no_long else [(32, 1000, 50, 256)])
    for B, La, Lt, D in shapes:
        for case in args.cases.split(","):
            eps_list = [float(e) for e in args.tot_eps.split(",")] if case == "tot" else [args.eps]
            if La > 200 and case in ("tot", "uot"):
                continue  # the long shape is FGW's; POT's Sinkhorn loops there take minutes
            for eps in eps_list:
                row = run_case(
                    case,
                    B,
                    La,
                    Lt,
                    D,
                    eps,
                    args.tol,
                    args.max_iter,
                    args.gw_max_iter,
                    args.beta,
                    args.alpha,
                    args.repeats,
                    args.device,
                    pot_max_iter=args.pot_max_iter,
                    relax=args.relax,
                )
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
