r"""Intra-sequence edge matrices S of GM-OT as operators, so GM-OT never forms an (L x L) matrix it can avoid.

The entropic FGW solver needs two things from an edge matrix S of a sequence with weights p:
``S @ X`` for an (L, K) matrix X (the tensor-product identity of Peyré et al. 2016, Prop. 1) and
``(S * S) @ p`` (the constant term of the square loss). Each structure implements both:

* :class:`DenseStructure` — any (B, L, L) matrix, O(L^2 K).
* :class:`TemporalStructure` — :math:`S(i,k) = |t_i - t_k|` with :math:`t_i = i / l`: ``S @ X`` by prefix
  sums in O(L K) for long sequences (a dense bmm up to 128 positions, faster there), and :math:`S^{\circ 2}` is rank 3 (:math:`t_i^2 - 2 t_i t_k + t_k^2`), so
  ``(S * S) @ p`` is O(L).
* :class:`FeatureStructure` — :math:`S(i,k) = 1 - \cos(x_i, x_k)`: ``S @ X = 1 (1^T X) - \hat X (\hat X^T X)``
  in O(L D K) and ``(S * S) @ p`` in O(L D^2), never O(L^2).
* :class:`MixedStructure` — a weighted sum of structures (``S @ X`` is linear; ``(S * S) @ p`` is formed
  densely once per problem).
"""

import functools
from typing import Optional, Sequence, Tuple

import torch

from espnet_ot.ot._utils import bmv, normalize_rows


class Structure:
    """Abstract edge matrix S of shape (B, L, L); zero on padded rows/columns."""

    def matmul(self, X: torch.Tensor) -> torch.Tensor:
        """Return S @ X for X of shape (B, L, K)."""
        raise NotImplementedError

    def rmatmul(self, X: torch.Tensor) -> torch.Tensor:
        """Return X @ S for X of shape (B, K, L) (= (S @ X^T)^T, S being symmetric)."""
        return self.matmul(X.transpose(1, 2)).transpose(1, 2)

    def sq_matvec(self, p: torch.Tensor) -> torch.Tensor:
        """Return (S * S) @ p for weights p of shape (B, L)."""
        raise NotImplementedError

    def dense(self) -> torch.Tensor:
        """Materialise S as a (B, L, L) tensor (for tests and small problems)."""
        raise NotImplementedError

    def subset(self, idx: torch.Tensor) -> "Structure":
        """The structure of the utterances ``idx`` of the batch."""
        raise NotImplementedError

    @property
    def shape(self) -> Tuple[int, int]:
        """(B, L): the batch size and the number of positions the structure covers."""
        return tuple(self.mask.shape)


class DenseStructure(Structure):
    """An explicit (B, L, L) edge matrix."""

    def __init__(self, S: torch.Tensor, mask: torch.Tensor):
        if S.dim() != 3 or S.shape[1] != S.shape[2] or tuple(S.shape[:2]) != tuple(mask.shape):
            raise ValueError(
                f"a structure matrix must be (B, L, L) matching its mask {tuple(mask.shape)}, got {tuple(S.shape)}"
            )
        pair = (mask.unsqueeze(2) & mask.unsqueeze(1)).to(S.dtype)
        self.S = S * pair

    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(self.S.shape[:2])

    def matmul(self, X):
        return torch.bmm(self.S.to(X.dtype), X)

    def rmatmul(self, X):
        return torch.bmm(X, self.S.to(X.dtype).transpose(1, 2))

    def sq_matvec(self, p):
        return bmv(self.S.to(p.dtype).pow(2), p)

    def dense(self):
        return self.S

    def subset(self, idx):
        sub = object.__new__(DenseStructure)
        sub.S = self.S[idx]
        return sub


TEMPORAL_DENSE_MAX = 128  # up to this length, S @ X is a bmm with the dense S (CPU, 1 thread, B = 32, S @ X
# with X of 20 columns: 20 positions 75 us dense vs 308 us prefix sums, 100 positions 229 vs 228 us, 200 positions
# 917 vs 438 us; the dense product grows as L^2, the prefix sums as L)


class TemporalStructure(Structure):
    r"""Temporal edges :math:`S(i,k) = |i - k| / l` of a sequence of true length l (i, k ranks among the real
    positions, so any mask pattern is allowed). ``S @ X`` is a bmm with the dense S up to length 128, prefix sums
    (O(L K), no (L x L) matrix) beyond."""

    def __init__(self, mask: torch.Tensor):
        if mask.dtype != torch.bool or mask.dim() != 2:
            raise ValueError(f"TemporalStructure needs a (B, L) bool mask, got {mask.dtype} {tuple(mask.shape)}")
        self.mask = mask
        self._length = mask.sum(-1, keepdim=True).clamp_min(1)
        # 0-based rank among the real positions (the position itself for ESPnet's prefix masks)
        self._pos = (torch.cumsum(mask.long(), dim=-1) - 1).clamp_min(0)
        self._dense = None

    def positions(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Normalised positions t_i = i / l (i the rank among the real positions), shape (B, L), in ``dtype``."""
        return self._pos.to(dtype) / self._length.to(dtype)

    def _cached_dense(self, dtype: torch.dtype) -> torch.Tensor:
        if self._dense is None or self._dense.dtype != dtype:
            self._dense = self.dense(dtype)
        return self._dense

    def rmatmul(self, X):
        if X.shape[2] <= TEMPORAL_DENSE_MAX:  # X S as one bmm (contiguous result, no transposed copies)
            return torch.bmm(X, self._cached_dense(X.dtype))
        return super().rmatmul(X)

    def matmul(self, X):
        if X.shape[1] <= TEMPORAL_DENSE_MAX:  # one bmm with the dense S, built once per dtype
            return torch.bmm(self._cached_dense(X.dtype), X)
        # sum_k |t_i - t_k| X_k = t_i (2 P_i - P) + Q - 2 Q_i with P_i, Q_i prefix sums of X_k and t_k X_k
        # (in place: at 1000 x 50 the allocations and broadcasts of the plain expression cost 40% more)
        t = self.positions(X.dtype).unsqueeze(2)
        m = self.mask.to(X.dtype).unsqueeze(2)
        Xm = X * m
        P = torch.cumsum(Xm, dim=1)
        Q = torch.cumsum(Xm.mul_(t), dim=1)
        P_all, Q_all = P[:, -1:].clone(), Q[:, -1:].clone()
        return P.mul_(2.0).sub_(P_all).mul_(t).add_(Q_all).sub_(Q, alpha=2.0).mul_(m)

    def sq_matvec(self, p):
        # sum_k (t_i - t_k)^2 p_k = t_i^2 sum(p) - 2 t_i sum(t p) + sum(t^2 p)
        t = self.positions(p.dtype)
        pm = p * self.mask.to(p.dtype)
        s0 = pm.sum(-1, keepdim=True)
        s1 = (t * pm).sum(-1, keepdim=True)
        s2 = (t * t * pm).sum(-1, keepdim=True)
        return (t * t * s0 - 2.0 * t * s1 + s2) * self.mask.to(p.dtype)

    def subset(self, idx):
        sub = TemporalStructure(self.mask[idx])
        sub._dense = None if self._dense is None else self._dense[idx]
        return sub

    def dense(self, dtype: torch.dtype = torch.float32):
        t = self.positions(dtype)
        pair = (self.mask.unsqueeze(2) & self.mask.unsqueeze(1)).to(dtype)
        return (t.unsqueeze(2) - t.unsqueeze(1)).abs() * pair


class FeatureStructure(Structure):
    r"""Feature edges :math:`S(i,k) = 1 - \cos(x_i, x_k)` within one modality (GM-OT's edges).

    Differentiable in ``x``: the GM-OT loss passes gradients to the features through S.
    """

    def __init__(self, x: torch.Tensor, mask: torch.Tensor):
        if x.dim() != 3 or tuple(x.shape[:2]) != tuple(mask.shape):
            raise ValueError(
                f"FeatureStructure needs x (B, L, D) matching mask {tuple(mask.shape)}, got {tuple(x.shape)}"
            )
        self.mask = mask
        m = mask.unsqueeze(2)
        x = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))  # padding may hold anything
        # norms floored as in the cosine cost (relative to the utterance's largest): a zero row's gradient is bounded
        self.xn = normalize_rows(x)

    def matmul(self, X):
        xn = self.xn.to(X.dtype)
        m = self.mask.to(X.dtype).unsqueeze(2)
        Xm = X * m
        return (Xm.sum(1, keepdim=True) * m) - torch.bmm(xn, torch.bmm(xn.transpose(1, 2), Xm))

    def sq_matvec(self, p):
        # sum_k (1 - c_ik)^2 p_k = sum(p) - 2 (xn xn^T p)_i + xn_i^T (sum_k p_k xn_k xn_k^T) xn_i
        xn = self.xn.to(p.dtype)
        pm = p * self.mask.to(p.dtype)
        s0 = pm.sum(-1, keepdim=True)
        lin = bmv(xn, bmv(xn.transpose(1, 2), pm))
        second = torch.bmm(xn.transpose(1, 2), xn * pm.unsqueeze(2))  # (B, D, D)
        quad = (torch.bmm(xn, second) * xn).sum(-1)
        return (s0 - 2.0 * lin + quad) * self.mask.to(p.dtype)

    def subset(self, idx):
        sub = object.__new__(FeatureStructure)
        sub.mask, sub.xn = self.mask[idx], self.xn[idx]
        return sub

    def dense(self):
        pair = (self.mask.unsqueeze(2) & self.mask.unsqueeze(1)).to(self.xn.dtype)
        return (1.0 - torch.bmm(self.xn, self.xn.transpose(1, 2))) * pair


class MixedStructure(Structure):
    """Weighted sum of structures, e.g. ``w * temporal + (1 - w) * feature``."""

    def __init__(self, parts: Sequence[Structure], weights: Sequence[float]):
        if len(parts) != len(weights) or not parts:
            raise ValueError("MixedStructure needs as many weights as parts (at least one)")
        shapes = [s.shape for s in parts]
        if any(shape != shapes[0] for shape in shapes):
            raise ValueError(f"MixedStructure needs parts over the same (B, L) positions, got {shapes}")
        self.parts, self.weights = list(parts), [float(w) for w in weights]

    @property
    def shape(self) -> Tuple[int, int]:
        return self.parts[0].shape

    def matmul(self, X):
        return sum(w * s.matmul(X) for s, w in zip(self.parts, self.weights))

    def subset(self, idx):
        return MixedStructure([s.subset(idx) for s in self.parts], self.weights)

    def sq_matvec(self, p):
        S = self.dense(p.dtype)
        return bmv(S.pow(2), p)

    def dense(self, dtype: Optional[torch.dtype] = None):
        # temporal parts are built directly in the target dtype (a float32 one would cap float64 precision)
        if dtype is None:
            others = [s.dense().dtype for s in self.parts if not isinstance(s, TemporalStructure)]
            dtype = functools.reduce(torch.promote_types, others, torch.float32)
        mats = [s.dense(dtype) if isinstance(s, TemporalStructure) else s.dense().to(dtype) for s in self.parts]
        return sum(w * m for m, w in zip(mats, self.weights))


def as_structure(S, mask: torch.Tensor, name: str = "structure", mask_name: str = "mask") -> Structure:
    """Wrap a dense (B, L, L) tensor as a :class:`DenseStructure`; pass structures through. Either must cover the
    (B, L) positions of ``mask``: one-line error naming the argument ``name`` (and ``mask_name``) otherwise."""
    if isinstance(S, torch.Tensor):
        if S.dim() != 3 or S.shape[1] != S.shape[2] or tuple(S.shape[:2]) != tuple(mask.shape):
            raise ValueError(
                f"{name} must be a (B, L, L) matrix matching {mask_name} {tuple(mask.shape)}, got {tuple(S.shape)}: "
                f"build it on the same positions as {mask_name}"
            )
        return DenseStructure(S, mask)
    if not isinstance(S, Structure):
        raise TypeError(f"{name} must be a (B, L, L) tensor or a Structure, got {type(S).__name__}")
    if tuple(S.shape) != tuple(mask.shape):
        raise ValueError(
            f"{name} covers (B, L) = {tuple(S.shape)} positions but {mask_name} is {tuple(mask.shape)}: build "
            f"{name} from the same mask (and features) as {mask_name}"
        )
    return S


def temporal_structure(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Temporal edge matrix :math:`S(i,k) = |i-k|/l`, dense (B, L, L), 0 on padding.

    The solvers use the operator :class:`TemporalStructure` (prefix sums beyond 128 positions) instead.
    """
    return TemporalStructure(mask).dense(dtype)


def feature_structure(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""Feature edge matrix :math:`S(i,k) = 1 - \cos(x_i, x_k)`, dense (B, L, L), 0 on padding."""
    return FeatureStructure(x, mask).dense()
