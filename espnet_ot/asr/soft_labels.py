"""The PLM's masked-LM predictions as sparse soft labels over the CTC tokens (and their one-hot control).

Stored per utterance as one (L_t, 2k) float32 matrix aligned with Z_L's rows ([CLS] y [SEP]): columns
``[0, k)`` hold CTC token ids, columns ``[k, 2k)`` their probabilities. Row j (a token of the transcript) is
the PLM's masked-LM distribution at j with token j replaced by [MASK], restricted to the CTC tokens that are
single PLM tokens, renormalised there, cut to its top k and renormalised again. [CLS], [SEP] and padding rows
are zero (no target). The identity control keeps the layout with one entry: the true token, probability 1.
ESPnet's data loader carries the matrices as the data key ``plm_soft_labels`` (type ``kaldi_ark``).
"""

from typing import Dict, List, Sequence, Tuple

import torch

SOFT_LABELS_KEY = "plm_soft_labels"
# CTC tokens that are never a target: ESPnet's specials and the word separator
_NOT_TARGETS = frozenset({"<blank>", "<unk>", "<sos/eos>", "<sos>", "<eos>", "<pad>", "<space>"})


class CTCVocabMap:
    """The CTC tokens that are single PLM tokens: ``plm_ids[i]`` is the PLM id of CTC token ``ctc_ids[i]``."""

    def __init__(self, tokenizer, token_list: Sequence[str]):
        """Map every CTC token (specials excluded) spelled exactly like a PLM vocabulary entry."""
        special = set(tokenizer.all_special_ids)
        unk = tokenizer.unk_token_id
        plm_ids: List[int] = []
        ctc_ids: List[int] = []
        for ctc_id, token in enumerate(token_list):
            if token in _NOT_TARGETS:
                continue
            pid = tokenizer.convert_tokens_to_ids(token)
            if pid is None or pid == unk or pid in special:
                continue
            plm_ids.append(int(pid))
            ctc_ids.append(ctc_id)
        if not ctc_ids:
            raise ValueError(
                "--token_list: none of its tokens is a token of the PLM's vocabulary, so the PLM's predictions "
                "cannot be expressed over the CTC tokens (soft labels need a character token list and a "
                "character-level PLM such as bert-base-chinese)"
            )
        self.plm_ids = torch.tensor(plm_ids, dtype=torch.long)
        self.ctc_ids = torch.tensor(ctc_ids, dtype=torch.long)
        self.plm_to_ctc: Dict[int, int] = dict(zip(plm_ids, ctc_ids))
        self.n_ctc = len(token_list)

    def __len__(self) -> int:
        return len(self.ctc_ids)


def masked_lm_soft_labels(
    mlm: torch.nn.Module,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    mask_id: int,
    vocab: CTCVocabMap,
    top_k: int,
    chunk: int = 256,
) -> torch.Tensor:
    """Sparse masked-LM soft labels (B, L, 2 top_k) of PLM inputs ``ids`` ([CLS] y [SEP], padded).

    For every token j of every sequence (1 <= j < length - 1) one PLM pass with ids[j] = [MASK] gives
    p(. | y without y_j); the distribution over the mapped CTC tokens is renormalised, cut to its top k and
    renormalised. ``chunk`` masked sequences go through the PLM at once. For the utterance "ab", row 0 is
    [CLS], row 1 'a' (``out[b, 1, :k]`` CTC ids, ``out[b, 1, k:]`` their probabilities), row 2 'b', row 3 [SEP].
    """
    device = ids.device
    k = min(int(top_k), len(vocab))
    out = torch.zeros(ids.size(0), ids.size(1), 2 * int(top_k), dtype=torch.float32)
    attention = torch.arange(ids.size(1), device=device)[None, :] < lengths[:, None]
    rows = [(b, j) for b in range(ids.size(0)) for j in range(1, int(lengths[b]) - 1)]
    plm_ids = vocab.plm_ids.to(device)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        b_idx = torch.tensor([b for b, _ in part], device=device)
        j_idx = torch.tensor([j for _, j in part], device=device)
        n = torch.arange(len(part), device=device)
        masked = ids[b_idx].clone()
        masked[n, j_idx] = mask_id
        logits = mlm(input_ids=masked, attention_mask=attention[b_idx].long()).logits[n, j_idx]
        p = torch.softmax(logits.float()[:, plm_ids], dim=-1)
        top = p.topk(k, dim=-1)
        probs = top.values / top.values.sum(-1, keepdim=True)
        b_cpu, j_cpu = b_idx.cpu(), j_idx.cpu()
        out[b_cpu, j_cpu, :k] = vocab.ctc_ids[top.indices.cpu()].float()
        out[b_cpu, j_cpu, top_k : top_k + k] = probs.cpu()
    return out


def identity_soft_labels(ids: torch.Tensor, lengths: torch.Tensor, vocab: CTCVocabMap, top_k: int) -> torch.Tensor:
    """The context-free control (B, L, 2 top_k): row j is the one-hot of the true token y_j (zero if unmapped)."""
    out = torch.zeros(ids.size(0), ids.size(1), 2 * int(top_k), dtype=torch.float32)
    for b in range(ids.size(0)):
        for j in range(1, int(lengths[b]) - 1):
            ctc = vocab.plm_to_ctc.get(int(ids[b, j]))
            if ctc is not None:
                out[b, j, 0] = float(ctc)
                out[b, j, top_k] = 1.0
    return out


def split_soft_labels(labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ids, probs) of a (..., 2k) soft-label tensor: ids as long, probabilities as float."""
    k = labels.size(-1) // 2
    return labels[..., :k].round().long(), labels[..., k:].float()
