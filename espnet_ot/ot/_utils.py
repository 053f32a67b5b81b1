"""Shared helpers of the OT core: dtype policy, mask checks and uniform marginals."""

from typing import Tuple

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def solver_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Return the dtype the solvers compute in: float64 if any input is float64, else float32.

    fp16/bf16 inputs (AMP) are always promoted: the solvers never run in low precision.
    """
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def check_masks(
    name_x: str, x_mask: torch.Tensor, name_y: str, y_mask: torch.Tensor, shape: Tuple[int, int, int]
) -> None:
    """Raise a one-line error when masks do not match a (B, La, Lt) problem."""
    B, La, Lt = shape
    for name, mask, L in ((name_x, x_mask, La), (name_y, y_mask, Lt)):
        if mask.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor (True = real position), got {mask.dtype}")
        if tuple(mask.shape) != (B, L):
            raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {(B, L)} to match the cost")


def uniform_weights(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Uniform weights 1/l on the l real positions of each row, 0 on padding (all-padding rows stay 0)."""
    m = mask.to(dtype)
    return m / m.sum(-1, keepdim=True).clamp_min(1.0)


def lengths(mask: torch.Tensor) -> torch.Tensor:
    """True lengths (number of real positions) of a (B, L) bool mask, shape (B,)."""
    return mask.sum(-1)
