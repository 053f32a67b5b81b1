"""Shared helpers of the OT core: dtype policy, argument and mask checks, uniform marginals, fp32 regions."""

import contextlib
import math
import numbers
from typing import Optional, Tuple

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def solver_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Return the dtype the solvers compute in: float64 if any input is float64, else float32.

    fp16/bf16 inputs (AMP) are always promoted: the solvers never run in low precision.
    """
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


# L1 marginal error that rounding leaves in an entropic coupling, in ulps of the dtype per unit of 1/eps, for costs
# of order 1 (cosine costs, their temporal prior, GM-OT's step costs): the potentials, of size ~ cost / eps, must
# resolve how a frame splits between tokens to better than their own rounding. Measured up to 0.05 in float32
# (ot/tot, 60-120 frames, 5-15 tokens, eps 1e-4 to 1e-6: an L1 error of 5e-4 at eps 1e-5); twice that is assumed.
MARGINAL_NOISE_ULPS = 0.1


def marginal_noise(dtype: torch.dtype, eps: float) -> float:
    """The L1 marginal error rounding in ``dtype`` leaves at ``eps`` (costs of order 1), see MARGINAL_NOISE_ULPS."""
    return MARGINAL_NOISE_ULPS * torch.finfo(dtype).eps / eps


def resolving_dtype(dtype: torch.dtype, eps: float, tol: float) -> torch.dtype:
    """``dtype``, or float64 where rounding in ``dtype`` would leave more than ``tol / 4`` of L1 marginal error at
    ``eps`` (float32 below eps ~ 5e-8 / tol: 5e-4 at tol 1e-4), so that the solvers reach ``tol`` there too."""
    if dtype != torch.float64 and 4.0 * marginal_noise(dtype, eps) > tol:
        return torch.float64
    return dtype


def bmv(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector product ``A @ x``, (B, M, N) x (B, N) -> (B, M).

    ``x`` goes to ``bmm`` as a transposed (B, 1, N) row: on CPU, bmm runs that layout about 8x faster than
    the contiguous (B, N, 1) column of ``x.unsqueeze(2)`` (17 vs 135 us at 32 x 20 x 200, torch 2.11).
    """
    return torch.bmm(A, x.unsqueeze(1).transpose(1, 2)).squeeze(2)


def fp32_region(t: torch.Tensor):
    """Context in which autocast is off for ``t``'s device, so float32 inputs stay float32 (AMP safety)."""
    try:
        return torch.autocast(device_type=t.device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not know: nothing to disable
        return contextlib.nullcontext()


def as_number(
    name: str,
    value,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    allow_inf: bool = False,
    integer: bool = False,
) -> float:
    """Return ``value`` as a float (int when ``integer``), or raise one line naming ``name``.

    Numbers written as strings (``'5e-1'``, as PyYAML reads ``5e-1``) are accepted. ``low``/``high`` are
    inclusive bounds (``low`` exclusive with ``low_open``); NaN is always rejected, infinity unless ``allow_inf``.
    """
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise TypeError(f"{name} must be a number, got the string {value!r}") from None
    elif isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if integer:
        if not value.is_integer():
            raise TypeError(f"{name} must be an integer, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value:g}")
    return int(value) if integer else value


def check_masks(
    name_x: str, x_mask: torch.Tensor, name_y: str, y_mask: torch.Tensor, shape: Tuple[int, int, int]
) -> None:
    """Raise a one-line error when masks do not match a (B, La, Lt) problem.

    Any pattern of real positions is allowed (not only prefixes): positions are counted among the real ones.
    """
    B, La, Lt = shape
    for name, mask, L in ((name_x, x_mask, La), (name_y, y_mask, Lt)):
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{name} must be a bool tensor (True = real position), got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor (True = real position), got {mask.dtype}")
        if tuple(mask.shape) != (B, L):
            raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {(B, L)} to match the cost")


def check_tensor(name: str, t, dim: int) -> None:
    """Raise a one-line error unless ``t`` is a real (non-complex) tensor with ``dim`` dimensions."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be a real floating (or integer) tensor, got {t.dtype}")
    if t.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(t.shape)}")


def check_finite(name: str, t: torch.Tensor, where: torch.Tensor, *more) -> None:
    """Raise ValueError naming ``name`` if ``t`` has NaN/Inf where ``where`` (broadcastable bool) is True.

    ``more``: further (name, t, where) triples, checked in the same host synchronisation.
    """
    checks = [(name, t, where), *more]
    bads = [~torch.isfinite(c[1]) & c[2] for c in checks]
    flags = torch.stack([bad.any() for bad in bads]).tolist()  # one host synchronisation
    for (name, _, _), bad, flag in zip(checks, bads, flags):
        if flag:
            b = int(bad.reshape(bad.shape[0], -1).any(-1).nonzero()[0, 0])
            raise ValueError(f"{name} has NaN/Inf at real positions (first in utterance {b}): clean the input")


NORM_EPS = 1e-6  # absolute floor of a feature norm (all-zero utterances)
# floor of a feature norm relative to the largest of its utterance: a zero (silent) frame's direction is
# undefined, and the gradient of x / max(||x||, floor) there is I / floor; 1e-3 of the utterance's scale keeps it
# within ~1e3 of a normal frame's while every frame above 0.1% of the largest norm is normalised exactly
NORM_REL = 1e-3


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """x / max(||x_i||, NORM_REL * max_k ||x_k||, NORM_EPS) along the last dimension of (B, L, D) features.

    The floor follows each utterance's own scale (its largest row norm, taken as a constant), so a zero row has
    a bounded gradient at any feature scale and the result does not depend on the rest of the batch.
    """
    if x.shape[1] == 0:  # no positions: nothing to normalise (and no maximum to take)
        return x
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    with torch.no_grad():
        floor = n.amax(1, keepdim=True).mul_(NORM_REL).clamp_min_(NORM_EPS)
    return x / n.clamp_min(floor)


def uniform_weights(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Uniform weights 1/l on the l real positions of each row, 0 on padding (all-padding rows stay 0)."""
    m = mask.to(dtype)
    return m / m.sum(-1, keepdim=True).clamp_min(1.0)


def ranks(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1-based rank of every real position among the real positions of its row (0 on padding), (B, L).

    For a prefix mask this is ``1, 2, ..., l``; for any other mask, the real positions are counted in order.
    """
    return torch.cumsum(mask.to(dtype), dim=-1) * mask.to(dtype)


def cosine_of(x: torch.Tensor, y: torch.Tensor, x_mask: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
    """:func:`espnet_ot.ot.cost.cosine_cost` on checked arguments (also used by the alignment dispatcher)."""
    dtype = solver_dtype(x, y)
    with fp32_region(x):
        # padding may hold anything (NaN included): zero it before it meets the real positions in the bmm
        xn = normalize_rows(
            torch.where(x_mask.unsqueeze(2), x.to(dtype), torch.zeros((), dtype=dtype, device=x.device))
        )
        yn = normalize_rows(
            torch.where(y_mask.unsqueeze(2), y.to(dtype), torch.zeros((), dtype=dtype, device=y.device))
        )
        cost = 1.0 - torch.bmm(xn, yn.transpose(1, 2))
        pair = x_mask.unsqueeze(2) & y_mask.unsqueeze(1)
        return cost * pair.to(dtype)
