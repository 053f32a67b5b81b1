"""AISHELL-1 layout -> Kaldi-style data dirs (wav.scp, text, utt2spk, spk2utt) and an ESPnet char token list, in Python."""

import collections
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from espnet2.fileio.read_text import read_2columns_text

SPLITS = ("train", "dev", "test")
TRANSCRIPT_REL = Path("data_aishell") / "transcript" / "aishell_transcript_v0.8.txt"
WAV_REL = Path("data_aishell") / "wav"
# ESPnet's char token list: <blank> first, <unk> second, the characters, <sos/eos> last.
BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"


def read_transcripts(path: Path) -> Dict[str, str]:
    """utt -> transcript with every space removed; the first line wins for a repeated id; empty ones dropped."""
    out: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split(maxsplit=1)
            if not parts:
                continue
            utt = parts[0]
            text = "".join(parts[1].split()) if len(parts) > 1 else ""
            if text and utt not in out:
                out[utt] = text
    return out


def find_wavs(split_dir: Path) -> Dict[str, Tuple[str, Path]]:
    """utt -> (speaker, path) for <split_dir>/<SPK>/<UTT>.wav (case-insensitive suffix)."""
    out: Dict[str, Tuple[str, Path]] = {}
    for path in sorted(split_dir.rglob("*")):
        if path.suffix.lower() == ".wav" and path.is_file():
            out[path.stem] = (path.parent.name, path.resolve())
    return out


def write_data_dir(out_dir: Path, utts: Dict[str, Tuple[str, Path, str]]) -> Path:
    """Write wav.scp, text, utt2spk, spk2utt (sorted by utterance id) for utt -> (spk, wav, text)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted(utts)
    spk2utt: Dict[str, List[str]] = collections.defaultdict(list)
    for u in keys:
        spk2utt[utts[u][0]].append(u)
    files = {
        "wav.scp": "".join(f"{u} {utts[u][1]}\n" for u in keys),
        "text": "".join(f"{u} {utts[u][2]}\n" for u in keys),
        "utt2spk": "".join(f"{u} {utts[u][0]}\n" for u in keys),
        "spk2utt": "".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())),
    }
    for name, content in files.items():
        (out_dir / name).write_text(content, encoding="utf-8")
    return out_dir


def prepare_aishell(corpus: Path, out_dir: Path, splits: Sequence[str] = SPLITS, prefix: str = "") -> Dict[str, Path]:
    """Write <out_dir>/<prefix><split> data dirs from an AISHELL-1-layout corpus root (holding data_aishell/).

    Only utterances that have both a wav and a non-empty transcript are kept, like local/data.sh.
    Returns {split: data dir}.
    """
    corpus = Path(corpus)
    transcript = corpus / TRANSCRIPT_REL
    if not transcript.is_file():
        raise FileNotFoundError(
            f"corpus: no {TRANSCRIPT_REL} under {corpus}; pass the directory that holds data_aishell/ "
            "(python -m espnet_ot.bin.make_toy_corpus --out DIR writes one)"
        )
    texts = read_transcripts(transcript)
    result: Dict[str, Path] = {}
    for split in splits:
        split_dir = corpus / WAV_REL / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"corpus: no {WAV_REL / split} under {corpus}")
        wavs = find_wavs(split_dir)
        utts = {u: (spk, path, texts[u]) for u, (spk, path) in wavs.items() if u in texts}
        if not utts:
            raise ValueError(
                f"corpus: none of the {len(wavs)} wav files under {split_dir} has a transcript in {transcript}"
            )
        result[split] = write_data_dir(Path(out_dir) / f"{prefix}{split}", utts)
    return result


def char_token_list(texts: Iterable[str], min_count: int = 1) -> List[str]:
    """ESPnet char token list: <blank>, <unk>, characters by decreasing count (ties by code point), <sos/eos>.

    Spaces become ESPnet's <space> token, as espnet2's char tokenizer does.
    """
    counts: collections.Counter = collections.Counter()
    for t in texts:
        counts.update("<space>" if c == " " else c for c in t)
    chars = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
    return [BLANK, UNK] + chars + [SOS_EOS]


def write_token_list(path: Path, tokens: Sequence[str]) -> Path:
    """One token per line, as ESPnet's --token_list file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
    return path


def write_char_token_list(train_text: Path, path: Path, min_count: int = 1) -> List[str]:
    """Char token list of a training `text` file written to `path`; returns the tokens."""
    tokens = char_token_list(read_2columns_text(train_text).values(), min_count=min_count)
    write_token_list(path, tokens)
    return tokens
