"""OT-aligned distillation: the PLM's masked-LM soft labels against CTC posteriors pooled through the coupling.

For token j of an utterance, the coupling's column j, normalised, weights the frames, w_ij = γ_ij / Σ_i γ_ij;
the pooled CTC posterior q_j = Σ_i w_ij P~_i (Eq. 23's frame posteriors) without the blank, renormalised, is
compared with the PLM's prediction p_j = p_PLM(. | y without y_j) by KL(p_j || q_j), summed over the tokens
that have a target (docs/method.md §6). The coupling is a constant here (it says where, the KL trains what).
"""

from typing import Dict, Tuple

import torch

_TINY = 1e-30


def pooled_log_posteriors(
    gamma: torch.Tensor, log_probs: torch.Tensor, blank: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """log q_j(v) over the non-blank tokens (B, L_t, V) (the blank column is meaningless) and the weights w.

    Args:
        gamma: coupling (B, L_a, L_t), zero at padding; treated as a constant.
        log_probs: CTC log posteriors (B, L_a, V) of the same frames.
        blank: index of the blank token.
    """
    dtype = torch.promote_types(log_probs.dtype, torch.float32)  # float32 under AMP, float64 kept
    g = gamma.detach().to(dtype)
    w = g / g.sum(1, keepdim=True).clamp_min(_TINY)
    q = torch.bmm(w.transpose(1, 2), log_probs.to(dtype).exp())
    non_blank = q.sum(-1) - q[..., blank]
    return q.clamp_min(_TINY).log() - non_blank.clamp_min(_TINY).log()[..., None], w


def distill_kl(
    gamma: torch.Tensor,
    log_probs: torch.Tensor,
    target_ids: torch.Tensor,
    target_probs: torch.Tensor,
    blank: int,
    frame_mask: torch.Tensor,
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Σ_j KL(p_j || q_j) per utterance (B,) and the pooling statistics (means over tokens with a target).

    Args:
        gamma: coupling (B, L_a, L_t) (constant, see :func:`pooled_log_posteriors`).
        log_probs: CTC log posteriors (B, L_a, V).
        target_ids: (B, L_t, k) CTC token ids of the soft labels (never the blank where the probability is > 0).
        target_probs: (B, L_t, k) their probabilities; a row of zeros (specials, padding) is no target.
        blank: index of the blank token.
        frame_mask: (B, L_a) bool, True at real frames (for ``pool_span``).

    Returns:
        kl: (B,) the summed KL divergences (its gradient is the cross-entropy's).
        stats: ``pool_peak`` (mean of max_i w_ij: 1 = one frame, 1/L_a = uniform) and ``pool_span`` (mean of
        exp(H(w_j)) / L_a: the share of the utterance a token's weights spread over; 1 = uniform).
    """
    log_q, w = pooled_log_posteriors(gamma, log_probs, blank)
    p = target_probs.to(log_q.dtype)
    log_p = p.clamp_min(_TINY).log()
    kl = (p * (log_p - log_q.gather(-1, target_ids))).sum(-1)  # (B, L_t); zero where there is no target
    with torch.no_grad():
        has = p.sum(-1) > 0
        n_frames = frame_mask.sum(1).clamp_min(1).to(w.dtype)
        entropy = -(w * w.clamp_min(_TINY).log()).sum(1)  # (B, L_t)
        n_tok = has.sum().clamp_min(1)
        stats = {
            "pool_peak": (w.max(1).values * has).sum() / n_tok,
            "pool_span": (entropy.exp() / n_frames[:, None] * has).sum() / n_tok,
        }
    return kl.sum(-1), stats
