"""Forced choice among same-syllable characters read from a CTC model: does the recogniser know what the PLM knows?"""

from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import torch

from espnet_ot.toy.probe import Choice


def ctc_forced_choice(
    log_probs: torch.Tensor, targets: Sequence[int], items: Sequence[Tuple[int, Sequence[int]]], blank: int
) -> List[bool]:
    """Whether the CTC branch prefers the reference to each of its same-syllable variants, position by position.

    For an item (j, candidates) every candidate c gives the transcript y with y_j replaced by c and the rest as in
    the reference; the CTC branch chooses the candidate of the highest CTC likelihood
    ``-ctc_loss(log_probs, y^(j <- c))``. The choice is right when the true y_j scores strictly higher than every
    other candidate (a tie, or an infeasible transcript of too few frames, counts as wrong).

    Parameters
    ----------
    log_probs : tensor (T, V)
        The CTC branch's log posteriors of one utterance.
    targets : sequence of int
        The reference token ids y_1..y_N.
    items : sequence of (j, candidate ids)
        The positions to test with their candidates, the true ``targets[j]`` among them.
    blank : int
        The blank id.

    Returns
    -------
    list of bool, one per item.

    Examples
    --------
    >>> lp = torch.log(torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7]]))  # blank 0, tokens 1 and 2
    >>> ctc_forced_choice(lp, [1], [(0, [1, 2])], blank=0)
    [True]
    """
    seqs, owner = [], []
    for n, (j, cands) in enumerate(items):
        if targets[j] not in cands:
            raise ValueError(f"item {n}: the candidates of position {j} do not include its token {targets[j]}")
        for c in cands:
            seqs.append([c if k == j else t for k, t in enumerate(targets)])
            owner.append((n, c == targets[j]))
    if not seqs:
        return []
    t_len, n_seq = log_probs.shape[0], len(seqs)
    nll = torch.nn.functional.ctc_loss(
        log_probs.double().unsqueeze(1).expand(t_len, n_seq, log_probs.shape[1]),
        torch.tensor(seqs),
        torch.full((n_seq,), t_len),
        torch.full((n_seq,), len(targets)),
        blank=blank,
        reduction="none",
        zero_infinity=False,
    )
    true_nll = [float("inf")] * len(items)
    best_other = [float("inf")] * len(items)
    for (n, is_true), value in zip(owner, nll.tolist()):
        if is_true:
            true_nll[n] = value
        else:
            best_other[n] = min(best_other[n], value)
    return [t < o for t, o in zip(true_nll, best_other)]


def forced_choice_accuracy(
    model: torch.nn.Module,
    wavs: Mapping[str, Union[str, Path]],
    refs: Mapping[str, str],
    choices: Sequence[Tuple[str, Choice]],
) -> Dict[str, float]:
    """The CTC branch's forced-choice accuracy (:func:`ctc_forced_choice`) at the PLM's choice positions.

    ``choices`` pairs an utterance id with a :class:`~espnet_ot.toy.probe.Choice` of its reference (from
    :func:`~espnet_ot.toy.probe.plm_choices`). Returns ``knowledge_acc`` over the positions where the masked PLM
    chooses right and frequency wrong (what only context can tell: the signature of transferred knowledge),
    ``ambiguous_acc`` over all of them, and their counts ``n_knowledge``, ``n_ambiguous``. Characters outside the
    model's token list are read as its ``<unk>``; positions whose candidates are not all in it are left out.
    """
    from espnet_ot.toy.decode import ctc_log_posteriors

    index = {t: i for i, t in enumerate(model.token_list)}
    unk = index.get("<unk>", model.blank_id)
    by_utt: Dict[str, List[Choice]] = {}
    for utt, choice in choices:
        if all(c in index for c in choice.candidates):
            by_utt.setdefault(utt, []).append(choice)
    right: List[Tuple[bool, Choice]] = []
    for utt, log_probs in ctc_log_posteriors(model, {u: wavs[u] for u in by_utt}):
        targets = [index.get(ch, unk) for ch in refs[utt]]
        items = [(c.position, [index[x] for x in c.candidates]) for c in by_utt[utt]]
        right += zip(ctc_forced_choice(log_probs, targets, items, model.blank_id), by_utt[utt])
    knowledge = [ok for ok, c in right if c.plm_right and not c.freq_right]
    return {
        "knowledge_acc": sum(knowledge) / max(1, len(knowledge)),
        "n_knowledge": len(knowledge),
        "ambiguous_acc": sum(ok for ok, _ in right) / max(1, len(right)),
        "n_ambiguous": len(right),
    }
