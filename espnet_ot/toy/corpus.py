"""The offline toy corpus in the AISHELL-1 layout: short news sentences spoken by eSpeak NG Mandarin voices.

CLI: ``python -m espnet_ot.bin.make_toy_corpus``; the recipe's ``local/data.sh`` and
:func:`espnet_ot.toy.kaldi_data.prepare_aishell` read it as they read AISHELL-1.
"""

import json
import shutil
import time
import wave
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from espnet_ot.toy.kaldi_data import TRANSCRIPT_REL
from espnet_ot.toy.speech import (
    ESPEAK_SAMPLE_RATE,
    SpeakerProfile,
    make_speaker_profiles,
    pad_and_dither,
    resample_int16,
    synthesize_groups,
)
from espnet_ot.toy.text import SPLITS, load_news_sentences, select_corpus_sentences, top_characters
from espnet_ot.utils.progress import progress

FORMAT_VERSION = 1
SAMPLE_RATE = 16000
MANIFEST_NAME = "toy_corpus.json"
# AISHELL-1 numbers its speakers from S0002 and its utterances BAC009<SPK>W<NNNN>.
FIRST_SPEAKER_NUMBER = 2


def speaker_id(number: int) -> str:
    """AISHELL-style speaker id, e.g. S0002."""
    return f"S{number:04d}"


def utterance_id(spk: str, index: int) -> str:
    """AISHELL-style utterance id, e.g. BAC009S0002W0001."""
    return f"BAC009{spk}W{index:04d}"


def _utt_seed(seed: int, utt: str) -> int:
    return zlib.crc32(f"{seed}/{utt}".encode()) & 0x7FFFFFFF


def _write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())


def plan_corpus(
    sentences: Dict[str, List[str]], speakers: Sequence[int], seed: int, pitch_range: Optional[int] = None
) -> Tuple[Dict[str, Tuple[str, SpeakerProfile]], List[Tuple[str, str, str, str]]]:
    """Assign speakers and utterance ids.

    Returns ({spk: (split, profile)}, [(split, spk, utt, sentence), ...]); speakers are disjoint across splits
    and each split's sentences go round-robin over its speakers.
    """
    profiles = make_speaker_profiles(sum(speakers), seed, pitch_range)
    spk_info: Dict[str, Tuple[str, SpeakerProfile]] = {}
    utts: List[Tuple[str, str, str, str]] = []
    number = FIRST_SPEAKER_NUMBER
    offset = 0
    for split, n_spk in zip(SPLITS, speakers):
        split_spks = [speaker_id(number + i) for i in range(n_spk)]
        for i, spk in enumerate(split_spks):
            spk_info[spk] = (split, profiles[offset + i])
        number += n_spk
        offset += n_spk
        counts = {spk: 0 for spk in split_spks}
        for j, sentence in enumerate(sentences[split]):
            spk = split_spks[j % n_spk]
            counts[spk] += 1
            utts.append((split, spk, utterance_id(spk, counts[spk]), sentence))
    return spk_info, utts


def build_toy_corpus(
    out: str,
    num_train: int = 1000,
    num_dev: int = 100,
    num_test: int = 100,
    speakers: Sequence[int] = (8, 2, 2),
    seed: int = 0,
    max_chars: int = 400,
    min_len: int = 6,
    max_len: int = 20,
    pitch_range: Optional[int] = None,
    num_workers: int = 2,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Write (or reuse) the toy corpus under out/data_aishell and return that directory.

    Args:
        out: corpus root; gets data_aishell/{wav,transcript} and resource_aishell/ like AISHELL-1.
        num_train: training utterances (one distinct sentence each).
        num_dev: development utterances.
        num_test: test utterances.
        speakers: number of speakers of train, dev and test (disjoint).
        seed: seed for sentence choice, speaker voices and dither; the same seed gives the same corpus.
        max_chars: character inventory size (the most frequent news characters).
        min_len: shortest sentence in characters.
        max_len: longest sentence in characters.
        pitch_range: eSpeak pitch range of every speaker (0: monotone, tones not in the pitch); None: drawn.
        num_workers: synthesis processes.
        force: rebuild even if out holds a finished toy corpus made with other options.
        log: progress printer.
    """
    t0 = time.time()
    speakers = tuple(int(s) for s in speakers)
    sizes = (int(num_train), int(num_dev), int(num_test))
    if len(speakers) != len(SPLITS):
        raise ValueError(f"speakers: give three counts (train dev test), got {list(speakers)}")
    for split, n_utt, n_spk in zip(SPLITS, sizes, speakers):
        if n_utt < 0:
            raise ValueError(f"num_{split}: must be >= 0, got {n_utt}")
        if n_spk < 1:
            raise ValueError(f"speakers: the {split} split needs at least one speaker, got {n_spk}")
    options = dict(
        format_version=FORMAT_VERSION,
        num_train=sizes[0],
        num_dev=sizes[1],
        num_test=sizes[2],
        speakers=list(speakers),
        seed=int(seed),
        max_chars=int(max_chars),
        min_len=int(min_len),
        max_len=int(max_len),
        sample_rate=SAMPLE_RATE,
    )
    if pitch_range is not None:  # absent from the key when unset, so older caches stay valid
        options["pitch_range"] = int(pitch_range)
    root = Path(out)
    data_dir = root / "data_aishell"
    resource_dir = root / "resource_aishell"
    manifest_path = data_dir / MANIFEST_NAME
    if data_dir.exists():
        if not manifest_path.is_file():
            raise FileExistsError(f"out: {data_dir} exists and was not made by make_toy_corpus; choose another --out")
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        complete = (data_dir / ".complete").is_file()
        if complete and old.get("options") == options:
            log(f"make_toy_corpus: reusing the toy corpus in {data_dir} (same options; delete it to rebuild)")
            return data_dir
        if complete and not force:
            raise FileExistsError(
                f"out: {data_dir} holds a toy corpus built with other options {old.get('options')}; "
                "pass --force to rebuild it or choose another --out"
            )
        log(f"make_toy_corpus: removing the {'old' if complete else 'unfinished'} toy corpus in {data_dir}")
        shutil.rmtree(data_dir)
        if resource_dir.is_dir():
            shutil.rmtree(resource_dir)

    # phase 1: sentences
    chosen = select_corpus_sentences(sizes, seed=seed, max_chars=max_chars, min_len=min_len, max_len=max_len)
    inventory = top_characters(load_news_sentences(min_len, max_len), max_chars)
    used = sorted(set("".join(s for split in SPLITS for s in chosen[split])))
    log(
        f"make_toy_corpus: selected {sizes[0]}/{sizes[1]}/{sizes[2]} train/dev/test sentences of {min_len}-{max_len} "
        f"characters from the top-{len(inventory)} character inventory ({len(used)} characters used) "
        f"[{time.time() - t0:.1f}s]"
    )

    spk_info, utts = plan_corpus(chosen, speakers, seed, pitch_range)
    data_dir.mkdir(parents=True)
    manifest = dict(
        options=options,
        speakers={spk: dict(split=split, voice=p.voice, **asdict(p)) for spk, (split, p) in spk_info.items()},
        characters="".join(used),
    )
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    # phase 2: speech, one fresh synthesis process per speaker (reproducible audio)
    t1 = time.time()
    by_spk: Dict[str, List[Tuple[str, str, str]]] = {}
    for split, spk, utt, sentence in utts:
        by_spk.setdefault(spk, []).append((split, utt, sentence))
    spk_order = [spk for spk in spk_info if spk in by_spk]
    groups = [
        [(sentence, spk_info[spk][1], _utt_seed(seed, utt)) for _, utt, sentence in by_spk[spk]] for spk in spk_order
    ]
    log(
        f"make_toy_corpus: synthesizing {len(utts)} utterances with {len(spk_order)} eSpeak NG cmn speakers "
        f"({num_workers} processes)"
    )
    total_samples = 0
    synthesized = zip(spk_order, synthesize_groups(groups, num_workers))
    for spk, raw_list in progress(synthesized, len(utts), "make_toy_corpus: synthesis", "utt", lambda x: len(x[1])):
        split = spk_info[spk][0]
        spk_dir = data_dir / "wav" / split / spk
        spk_dir.mkdir(parents=True, exist_ok=True)
        for (_, utt, _), raw in zip(by_spk[spk], raw_list):
            samples = resample_int16(raw, ESPEAK_SAMPLE_RATE, SAMPLE_RATE)
            samples = pad_and_dither(samples, SAMPLE_RATE, seed=_utt_seed(seed + 1, utt))
            _write_wav(spk_dir / f"{utt}.wav", samples, SAMPLE_RATE)
            total_samples += len(samples)
    hours = total_samples / SAMPLE_RATE / 3600
    log(
        f"make_toy_corpus: wrote {len(utts)} wavs, {hours * 60:.1f} min of 16 kHz audio "
        f"({total_samples / SAMPLE_RATE / max(1, len(utts)):.2f} s per utterance) [{time.time() - t1:.1f}s]"
    )

    # phase 3: transcript (characters separated by spaces, like AISHELL's segmented words) and resources
    transcript_dir = data_dir / "transcript"
    transcript_dir.mkdir(parents=True)
    lines = sorted(f"{utt} {' '.join(sentence)}\n" for _, _, utt, sentence in utts)
    with open(root / TRANSCRIPT_REL, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    resource_dir.mkdir(parents=True, exist_ok=True)
    with open(resource_dir / "speaker.info", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{spk[1:]} {p.gender}\n" for spk, (_, p) in spk_info.items())
    (resource_dir / ".complete").touch()
    # the marker AISHELL's download_and_untar.sh checks: the recipe will not try to download over it
    (data_dir / ".complete").touch()
    log(f"make_toy_corpus: wrote {root / TRANSCRIPT_REL}; done [{time.time() - t0:.1f}s]")
    return data_dir
