"""Character error rate and its decomposition into linguistic (homophone, tone) and acoustic errors, with pypinyin."""

import collections
import functools
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Mapping, Sequence, Tuple

import editdistance

from espnet_ot.toy.extra import require

# Categories of a character error, in report order. A substitution is a *homophone* when the two characters
# share a reading (syllable and tone), a *tone* error when they share a syllable but no reading with the same
# tone; both can in principle be fixed by a language model, since the audio is (nearly) the same.
CATEGORIES: Tuple[str, ...] = ("homophone", "tone", "other_sub", "deletion", "insertion")
LINGUISTIC: Tuple[str, ...] = ("homophone", "tone")


@functools.lru_cache(maxsize=None)
def readings(char: str) -> FrozenSet[str]:
    """All pinyin readings of a character with the tone as a trailing digit (``TONE3``), e.g. {'hang2', 'xing2'}.

    The neutral tone is written as 5, so every reading ends in a digit.
    """
    pypinyin = require("pypinyin")
    out = pypinyin.pinyin(char, style=pypinyin.Style.TONE3, heteronym=True, neutral_tone_with_five=True)[0]
    return frozenset(r for r in out if r and r[-1].isdigit())


def syllables(char: str) -> FrozenSet[str]:
    """The readings of a character without their tone, e.g. {'hang', 'xing'}."""
    return frozenset(r[:-1] for r in readings(char))


def classify_substitution(ref: str, hyp: str) -> str:
    """``homophone`` (a common reading), ``tone`` (a common syllable, other tone) or ``other_sub``."""
    if readings(ref) & readings(hyp):
        return "homophone"
    if syllables(ref) & syllables(hyp):
        return "tone"
    return "other_sub"


_TIE = {"homophone": 0.0, "tone": 0.5, "other_sub": 1.0}


def align(ref: str, hyp: str) -> List[Tuple[str, str, str]]:
    """A minimum-edit alignment of two character strings as (op, ref_char, hyp_char) with op in C, S, D, I.

    Among the alignments with the fewest edits (their count is ``editdistance.eval(ref, hyp)``) it picks one
    that pairs phonetically close characters: each substitution adds a tie-breaking 1e-3 times 0 (homophone),
    0.5 (tone) or 1 (other), each insertion or deletion 1e-3. So ``气 -> 汽 + inserted 很`` wins over
    ``inserted 汽 + 气 -> 很``, which a plain Levenshtein backtrace may return.
    """
    n, m = len(ref), len(hyp)
    tie = 1e-3
    d = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        d[i][0] = i * (1 + tie)
    for j in range(1, m + 1):
        d[0][j] = j * (1 + tie)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            r, h = ref[i - 1], hyp[j - 1]
            sub = 0.0 if r == h else 1 + tie * _TIE[classify_substitution(r, h)]
            d[i][j] = min(d[i - 1][j - 1] + sub, d[i - 1][j] + 1 + tie, d[i][j - 1] + 1 + tie)
    ops: List[Tuple[str, str, str]] = []
    i, j = n, m
    while i or j:
        if i and j:
            r, h = ref[i - 1], hyp[j - 1]
            sub = 0.0 if r == h else 1 + tie * _TIE[classify_substitution(r, h)]
            if abs(d[i][j] - (d[i - 1][j - 1] + sub)) < 1e-9:
                ops.append(("C" if r == h else "S", r, h))
                i, j = i - 1, j - 1
                continue
        if i and abs(d[i][j] - (d[i - 1][j] + 1 + tie)) < 1e-9:
            ops.append(("D", ref[i - 1], ""))
            i -= 1
        else:
            ops.append(("I", "", hyp[j - 1]))
            j -= 1
    return ops[::-1]


@dataclass
class ErrorCounts:
    """Reference length and error counts of a set of utterances, per category."""

    n_ref: int = 0
    counts: Dict[str, int] = field(default_factory=lambda: {c: 0 for c in CATEGORIES})

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return sum(self.counts.values())

    @property
    def cer(self) -> float:
        """Character error rate in percent."""
        return 100.0 * self.errors / max(1, self.n_ref)

    def points(self) -> Dict[str, float]:
        """Each category as CER points (they add up to the CER)."""
        return {c: 100.0 * n / max(1, self.n_ref) for c, n in self.counts.items()}

    @property
    def linguistic_share(self) -> float:
        """Share of the errors that are homophone or tone substitutions."""
        return sum(self.counts[c] for c in LINGUISTIC) / max(1, self.errors)


def utterance_errors(ref: str, hyp: str) -> ErrorCounts:
    """Error counts of one utterance (the total equals the edit distance)."""
    out = ErrorCounts(n_ref=len(ref))
    for op, r, h in align(ref, hyp):
        if op == "S":
            out.counts[classify_substitution(r, h)] += 1
        elif op == "D":
            out.counts["deletion"] += 1
        elif op == "I":
            out.counts["insertion"] += 1
    if out.errors != editdistance.eval(ref, hyp):  # pragma: no cover - guards the alignment
        raise RuntimeError(f"alignment of {ref!r} / {hyp!r} disagrees with the edit distance")
    return out


def decompose(refs: Mapping[str, str], hyps: Mapping[str, str]) -> ErrorCounts:
    """Pooled error counts over the utterances of ``refs``; every one must have a hypothesis."""
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise ValueError(f"hyps: no hypothesis for {len(missing)} utterance(s), e.g. {missing[0]}")
    total = ErrorCounts()
    for utt, ref in refs.items():
        one = utterance_errors(ref, hyps[utt])
        total.n_ref += one.n_ref
        for c, n in one.counts.items():
            total.counts[c] += n
    return total


def per_utterance(refs: Mapping[str, str], hyps: Mapping[str, str]) -> Tuple[List[str], List[int], List[int]]:
    """Sorted utterance ids with their edit distances and reference lengths (for paired bootstrap)."""
    utts = sorted(refs)
    missing = [u for u in utts if u not in hyps]
    if missing:
        raise ValueError(f"hyps: no hypothesis for {len(missing)} utterance(s), e.g. {missing[0]}")
    return utts, [editdistance.eval(refs[u], hyps[u]) for u in utts], [len(refs[u]) for u in utts]


def homophone_classes(chars: Sequence[str]) -> Dict[str, List[str]]:
    """For each character, the other characters of ``chars`` sharing one of its syllables (any tone)."""
    by_syllable: Dict[str, List[str]] = collections.defaultdict(list)
    for c in chars:
        for s in syllables(c):
            by_syllable[s].append(c)
    out: Dict[str, List[str]] = {}
    for c in chars:
        others = sorted({o for s in syllables(c) for o in by_syllable[s] if o != c})
        out[c] = others
    return out
