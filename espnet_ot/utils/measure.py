"""What the benchmarks (espnet_ot.bench) count and the problems they solve, shared with the tests of the same
quantities (tests/ot, tests/bench): the tests import these, never the benchmarks themselves."""

from typing import Callable, Dict, List, Tuple

import torch


def op_counts(fn: Callable[[], None]) -> Dict[str, int]:
    """Tensor operations one call of fn launches, counted with torch.profiler on CPU.

    ``ops``: leaf ATen operators (those that call no other ATen operator: on a GPU, roughly one kernel launch
    each); ``syncs``: the reads that make the host wait for the device on a GPU: ``aten::_local_scalar_dense``
    (``.item()``, ``bool()``, ``int()`` of a tensor), ``aten::nonzero`` (its output size is data-dependent; also
    inside boolean-mask indexing) and ``Tensor.tolist()`` (a copy to the host that on CPU dispatches no operator,
    so it is counted in Python).
    """
    from torch.profiler import ProfilerActivity, profile

    tolist, tolists = torch.Tensor.tolist, []

    def counted_tolist(t: torch.Tensor):
        tolists.append(1)
        return tolist(t)

    torch.Tensor.tolist = counted_tolist
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
    finally:
        torch.Tensor.tolist = tolist
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    leaves = [e for e in events if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    reads = sum(e.name in ("aten::_local_scalar_dense", "aten::nonzero") for e in events)
    return {"ops": len(leaves), "syncs": reads + len(tolists)}


def random_ot_problem(
    B: int, La: int, Lt: int, D: int, device: str, seed: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, List[int], List[int]]:
    """The solver benchmark's problem: random features with unequal true lengths (the first utterance has the full
    length). Returns x (B, La, D), y (B, Lt, D), their masks and true lengths."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, La, D, generator=g)
    y = torch.randn(B, Lt, D, generator=g)
    la = torch.randint(La // 2, La + 1, (B,), generator=g)
    lt = torch.randint(max(Lt // 2, 1), Lt + 1, (B,), generator=g)
    la[0], lt[0] = La, Lt
    mx = torch.arange(La)[None] < la[:, None]
    my = torch.arange(Lt)[None] < lt[:, None]
    return x.to(device), y.to(device), mx.to(device), my.to(device), la.tolist(), lt.tolist()
