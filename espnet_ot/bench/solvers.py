"""Solver benchmark: our batched Sinkhorn/TOT/FGW against POT's batched solvers and a per-utterance POT loop."""

import argparse
import json
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import torch

from espnet_ot.ot import (
    TemporalStructure,
    cosine_cost,
    fused_gromov_wasserstein,
    sinkhorn,
    temporal_structure,
    tot_cost,
)


def _median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _problem(B: int, La: int, Lt: int, D: int, device: str, seed: int):
    """Random features with unequal true lengths (the first utterance has the full length)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, La, D, generator=g)
    y = torch.randn(B, Lt, D, generator=g)
    la = torch.randint(La // 2, La + 1, (B,), generator=g)
    lt = torch.randint(max(Lt // 2, 1), Lt + 1, (B,), generator=g)
    la[0], lt[0] = La, Lt
    mx = torch.arange(La)[None] < la[:, None]
    my = torch.arange(Lt)[None] < lt[:, None]
    return x.to(device), y.to(device), mx.to(device), my.to(device), la.tolist(), lt.tolist()


def run_case(case: str, B: int, La: int, Lt: int, D: int, eps: float, tol: float, max_iter: int,
             gw_max_iter: int, beta: float, alpha: float, repeats: int, device: str,
             seed: int = 0) -> Dict[str, object]:
    import ot
    import ot.batch

    x, y, mx, my, la, lt = _problem(B, La, Lt, D, device, seed)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    C = cosine_cost(x, y, mx, my)
    if case in ("tot", "fgw_tot"):
        C = tot_cost(C, mx, my, beta)
    a = mx.to(C.dtype) / mx.sum(-1, keepdim=True)
    b = my.to(C.dtype) / my.sum(-1, keepdim=True)
    C_np = C.cpu().double().numpy()

    if case in ("ot", "tot"):
        def ours():
            return sinkhorn(C, mx, my, eps, max_iter=max_iter, tol=tol)

        def pot_batch():
            return ot.batch.solve_batch(C, reg=eps, a=a, b=b, max_iter=max_iter, tol=tol, method="log_sinkhorn").plan

        def pot_loop():
            return [
                ot.bregman.sinkhorn_log(np.full(n, 1 / n), np.full(m, 1 / m), C_np[k, :n, :m], eps,
                                        numItermax=max_iter, stopThr=tol, warn=False)
                for k, (n, m) in enumerate(zip(la, lt))
            ]
    else:
        Sx, Sy = TemporalStructure(mx), TemporalStructure(my)
        Dx, Dy = temporal_structure(mx), temporal_structure(my)
        Dx_np, Dy_np = Dx.cpu().double().numpy(), Dy.cpu().double().numpy()

        def ours():
            return fused_gromov_wasserstein(C, Sx, Sy, mx, my, alpha, eps, max_iter=gw_max_iter, tol=tol,
                                            sinkhorn_max_iter=max_iter, sinkhorn_tol=tol)

        def pot_batch():
            # POT's default of 50 inner iterations: fewer than ours, so this baseline is if anything flattered
            return ot.batch.solve_gromov_batch(Dx, Dy, reg=eps, a=a, b=b, M=C, alpha=alpha, max_iter=gw_max_iter,
                                               tol=tol, tol_inner=tol).plan

        def pot_loop():
            return [
                ot.gromov.entropic_fused_gromov_wasserstein(
                    C_np[k, :n, :m], Dx_np[k, :n, :n], Dy_np[k, :m, :m], np.full(n, 1 / n), np.full(m, 1 / m),
                    loss_fun="square_loss", epsilon=eps, alpha=alpha, max_iter=gw_max_iter, tol=tol,
                    numItermax=max_iter, stopThr=tol, warn=False)
                for k, (n, m) in enumerate(zip(la, lt))
            ]

    P = ours().cpu().double().numpy()
    refs = pot_loop()
    diff = max(float(np.abs(P[k, :n, :m] - refs[k]).max()) for k, (n, m) in enumerate(zip(la, lt)))
    ours_ms = _median_ms(ours, repeats, sync)
    pot_batch_ms = _median_ms(pot_batch, repeats, sync)
    pot_loop_ms = _median_ms(pot_loop, max(1, repeats // 3), lambda: None)
    return {
        "case": case, "B": B, "La": La, "Lt": Lt, "D": D, "eps": eps, "tol": tol, "device": device,
        "threads": torch.get_num_threads(), "ours_ms": round(ours_ms, 3), "pot_batch_ms": round(pot_batch_ms, 3),
        "pot_loop_ms": round(pot_loop_ms, 3), "speedup_vs_batch": round(pot_batch_ms / ours_ms, 2),
        "speedup_vs_loop": round(pot_loop_ms / ours_ms, 2), "max_abs_diff": diff,
    }


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m espnet_ot.bench solvers", description=__doc__)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per solver (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--gw-max-iter", type=int, default=50, help="outer FGW iterations (POT's batch default)")
    p.add_argument("--beta", type=float, default=0.5, help="temporal prior weight of the tot cases")
    p.add_argument("--alpha", type=float, default=0.5, help="FGW trade-off")
    p.add_argument("--cases", default="ot,tot,fgw", help="comma-separated subset of ot,tot,fgw")
    p.add_argument("--no-long", action="store_true", help="skip the La=1000, Lt=50 cases")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch; run with --device cpu")
    shapes = [(32, 200, 20, 256)] + ([] if args.no_long else [(32, 1000, 50, 256)])
    for B, La, Lt, D in shapes:
        for case in args.cases.split(","):
            row = run_case(case, B, La, Lt, D, args.eps, args.tol, args.max_iter, args.gw_max_iter, args.beta, args.alpha,
                           args.repeats, args.device)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
