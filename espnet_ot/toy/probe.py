"""Homophone probe of a masked language model: does it pick the right character among its homophones better than frequency?"""

from collections import Counter
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Tuple, Union

import numpy as np
import torch

from espnet_ot.toy.errors import readings, syllables


def _candidates(chars: Sequence[str], same_tone: bool) -> Dict[str, List[str]]:
    """For each character, itself and the others of chars sharing a reading (same_tone) or a syllable (any tone)."""
    key = readings if same_tone else syllables
    by_key: Dict[str, set] = {}
    for c in chars:
        for k in key(c):
            by_key.setdefault(k, set()).add(c)
    return {c: sorted(set().union(*[by_key[k] for k in key(c)]) if key(c) else {c}) for c in chars}


def _masked_logits(model, tok, vocab: Dict[str, int], items: Sequence[Tuple[str, int]]) -> torch.Tensor:
    """Masked-LM logits (N, L, V) of [CLS] s [SEP] with character i of s replaced by [MASK], for each (s, i)."""
    ids = [[tok.cls_token_id] + [vocab.get(ch, tok.unk_token_id) for ch in s] + [tok.sep_token_id] for s, _ in items]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), tok.pad_token_id)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for k, (x, (_, i)) in enumerate(zip(ids, items)):
        input_ids[k, : len(x)] = torch.tensor(x)
        attention[k, : len(x)] = 1
        input_ids[k, i + 1] = tok.mask_token_id
    return model(input_ids=input_ids, attention_mask=attention).logits


class Choice(NamedTuple):
    """One ambiguous position: character ``position`` of sentence ``sentence`` (an index into the sentences), its
    same-syllable ``candidates`` (the true character among them) and whether the PLM and frequency choose it."""

    sentence: int
    position: int
    candidates: List[str]
    plm_right: bool
    freq_right: bool


def _load_masked_lm(plm: Union[str, Path]):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(plm))
    return tok, AutoModelForMaskedLM.from_pretrained(str(plm)).eval(), tok.get_vocab()


@torch.no_grad()
def _choose(lm, sentences: Sequence[str], cands: Dict[str, List[str]], train_counts: Counter, batch_size: int):
    tok, model, vocab = lm
    items = [(k, i, cands[c]) for k, s in enumerate(sentences) for i, c in enumerate(s) if len(cands.get(c, ())) > 1]
    out: List[Choice] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        logits = _masked_logits(model, tok, vocab, [(sentences[k], i) for k, i, _ in chunk])
        for n, (k, i, cand) in enumerate(chunk):
            scores = logits[n, i + 1, [vocab[c] for c in cand]]
            true = sentences[k][i]
            freq = max(cand, key=lambda c: (train_counts.get(c, 0), -ord(c)))
            out.append(Choice(k, i, cand, cand[int(scores.argmax())] == true, freq == true))
    return out


def plm_choices(
    plm: Union[str, Path],
    sentences: Sequence[str],
    inventory: Sequence[str],
    train_counts: Counter,
    same_tone: bool = False,
    batch_size: int = 256,
) -> List[Choice]:
    """Mask each ambiguous character of each sentence and choose among its homophones in ``inventory``.

    A character is *ambiguous* when another character of the inventory (the recogniser's characters) shares one
    of its syllables (any tone; with ``same_tone`` one of its readings). The PLM's choice is the candidate with the
    highest masked-LM score at that position; the frequency choice is the candidate most frequent in the
    training transcripts (``train_counts``; ties by code point). One :class:`Choice` per ambiguous position, in
    sentence order.
    """
    lm = _load_masked_lm(plm)
    inv = [c for c in inventory if c in lm[2]]
    return _choose(lm, sentences, _candidates(inv, same_tone), train_counts, batch_size)


def homophone_probe(
    plm: Union[str, Path],
    sentences: Sequence[str],
    inventory: Sequence[str],
    train_counts: Counter,
    batch_size: int = 256,
) -> Dict[str, Dict[str, float]]:
    """How often the PLM and frequency pick the right homophone (:func:`plm_choices`), for two candidate sets:
    ``any_tone`` (same syllable, any tone: what a recogniser that cannot hear tones confuses) and ``same_tone``
    (same syllable and tone).

    Returns ``{"any_tone": {...}, "same_tone": {...}}`` with ``plm_acc``, ``freq_acc``, ``n`` (ambiguous
    positions) and ``ambiguous_share`` (of all characters of the sentences).
    """
    lm = _load_masked_lm(plm)
    inv = [c for c in inventory if c in lm[2]]
    total_chars = sum(len(s) for s in sentences)
    result: Dict[str, Dict[str, float]] = {}
    for name, same_tone in (("any_tone", False), ("same_tone", True)):
        choices = _choose(lm, sentences, _candidates(inv, same_tone), train_counts, batch_size)
        n = len(choices)
        result[name] = {
            "plm_acc": sum(c.plm_right for c in choices) / max(1, n),
            "freq_acc": sum(c.freq_right for c in choices) / max(1, n),
            "n": n,
            "ambiguous_share": n / max(1, total_chars),
        }
    return result


def feature_identity_probe(
    train: Sequence[Tuple[str, np.ndarray]],
    test: Sequence[Tuple[str, np.ndarray]],
) -> Dict[str, float]:
    """What a Z_L row says about its own token: nearest class-mean (cosine) identification of the character.

    ``train``/``test`` are (sentence, Z_L) pairs whose Z_L has one row per character between [CLS] and [SEP].
    The class means come from ``train``; each ``test`` row is assigned the character of the nearest mean, among
    all characters (``all``) and among the true character's same-syllable characters only (``homophones``, over
    the ambiguous positions). Close to 1 means Z_L is a code of the token itself, information the CTC labels
    already carry; the PLM's knowledge of which homophone fits the context shows when the token is masked.
    """

    def rows(pairs):
        chars: List[str] = []
        mats = []
        for sentence, z in pairs:
            z = np.asarray(z, dtype=np.float64)
            if z.shape[0] != len(sentence) + 2:
                raise ValueError(
                    f"Z_L of {sentence!r} has {z.shape[0]} rows, expected {len(sentence) + 2} "
                    "(one per character plus [CLS] and [SEP])"
                )
            chars += list(sentence)
            mats.append(z[1:-1])
        x = np.concatenate(mats)
        return chars, x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    train_chars, x_train = rows(train)
    vocab = sorted(set(train_chars))
    index = {c: i for i, c in enumerate(vocab)}
    labels = np.array([index[c] for c in train_chars])
    means = np.stack([x_train[labels == i].mean(0) for i in range(len(vocab))])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    test_chars, x_test = rows(test)
    known = [i for i, c in enumerate(test_chars) if c in index]
    scores = x_test[known] @ means.T
    right = [vocab[int(k)] == test_chars[i] for i, k in zip(known, scores.argmax(1))]
    homophones = _candidates(vocab, same_tone=False)
    amb = [(n, i) for n, i in enumerate(known) if len(homophones[test_chars[i]]) > 1]
    right_h = [
        homophones[test_chars[i]][int(np.argmax(scores[n, [index[c] for c in homophones[test_chars[i]]]]))]
        == test_chars[i]
        for n, i in amb
    ]
    return {
        "all": float(np.mean(right)),
        "homophones": float(np.mean(right_h)) if right_h else float("nan"),
        "n": len(known),
        "n_homophones": len(amb),
    }


@torch.no_grad()
def plm_rechoice(
    plm: Union[str, Path], hyps: Dict[str, str], inventory: Sequence[str], batch_size: int = 256
) -> Dict[str, str]:
    """A decode-time ceiling: each hypothesis character re-chosen by the PLM among its same-syllable characters.

    For every character of every hypothesis that has same-syllable (any tone) candidates in ``inventory``, the
    character is masked in its hypothesis (the rest as recognised) and replaced by the candidate with the highest
    masked-LM score. What this fixes bounds what a language model could fix of the homophone and tone errors.
    """
    tok, model, vocab = _load_masked_lm(plm)
    cands = _candidates([c for c in inventory if c in vocab], same_tone=False)
    items = [
        (u, i, cands[c]) for u, h in sorted(hyps.items()) for i, c in enumerate(h) if c in cands and len(cands[c]) > 1
    ]
    out = {u: list(h) for u, h in hyps.items()}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        logits = _masked_logits(model, tok, vocab, [(hyps[u], i) for u, i, _ in chunk])
        for k, (u, i, cand) in enumerate(chunk):
            out[u][i] = cand[int(logits[k, i + 1, [vocab[c] for c in cand]].argmax())]
    return {u: "".join(h) for u, h in out.items()}
