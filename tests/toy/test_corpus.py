"""Tests of the toy corpus: news sentence selection, eSpeak NG synthesis and the AISHELL-1 layout writer."""

import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from espnet_ot.bin import make_toy_corpus
from espnet_ot.toy import speech, text

SPLITS = ("train", "dev", "test")
TINY = ["--num_train", "6", "--num_dev", "2", "--num_test", "3", "--speakers", "2", "1", "1", "--seed", "7"]


def _wavs(root: Path):
    return sorted((root / "data_aishell" / "wav").glob("*/*/*.wav"))


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """Build the same tiny corpus twice: in-process and through `python -m` (a separate process)."""
    first = tmp_path_factory.mktemp("toy_a")
    second = tmp_path_factory.mktemp("toy_b")
    make_toy_corpus.main(["--out", str(first)] + TINY)
    subprocess.run(
        [sys.executable, "-m", "espnet_ot.bin.make_toy_corpus", "--out", str(second), "--num-workers", "1"] + TINY,
        check=True,
        capture_output=True,
        text=True,
    )
    return first, second


def test_select_corpus_sentences_deterministic_distinct_limited():
    sizes = {"train": 40, "dev": 5, "test": 5}
    a = text.select_corpus_sentences(sizes, seed=3, max_chars=300, min_len=6, max_len=12)
    b = text.select_corpus_sentences(sizes, seed=3, max_chars=300, min_len=6, max_len=12)
    c = text.select_corpus_sentences(sizes, seed=4, max_chars=300, min_len=6, max_len=12)
    assert a == b
    assert a != c
    inventory = set(text.top_characters(text.load_news_sentences(6, 12), 300))
    everything = [s for split in SPLITS for s in a[split]]
    assert [len(a[split]) for split in SPLITS] == [40, 5, 5]
    assert len(set(everything)) == len(everything)
    for s in everything:
        assert 6 <= len(s) <= 12 and text.is_cjk_sentence(s)
        assert set(s) <= inventory


def test_select_corpus_sentences_errors():
    with pytest.raises(ValueError, match="max-chars"):
        text.select_corpus_sentences((10**7, 0, 0), max_chars=50)
    with pytest.raises(ValueError, match="one count per split"):
        text.select_corpus_sentences((1, 2))


def test_split_clauses_and_cjk_filter():
    clauses = text.split_clauses("今天天气很好，我们去公园。 明天下雨！")
    assert clauses == ["今天天气很好", "我们去公园", "明天下雨"]
    assert text.is_cjk_sentence("中央路红星")
    assert not text.is_cjk_sentence("7月18日")
    assert not text.is_cjk_sentence("“爱木”狂购")


def test_synthesize_16k_int16():
    samples = speech.synthesize("今天天气很好", speech.SpeakerProfile(variant="f2", rate=170, pitch=60))
    assert samples.dtype == np.int16 and samples.ndim == 1
    seconds = len(samples) / 16000
    assert 0.5 < seconds < 5.0, seconds
    assert np.abs(samples.astype(np.int32)).max() > 1000  # not silence
    with pytest.raises(ValueError, match="text"):
        speech.synthesize("  ")


def test_speaker_profiles_distinct():
    profiles = speech.make_speaker_profiles(20, seed=1)
    assert len(set(profiles)) == 20
    assert profiles == speech.make_speaker_profiles(20, seed=1)
    assert {p.voice.split("+")[0] for p in profiles} == {"cmn"}


def test_layout_audio_and_transcript(tiny_corpus):
    root, _ = tiny_corpus
    data = root / "data_aishell"
    wavs = _wavs(root)
    assert len(wavs) == 6 + 2 + 3
    spk_by_split = {split: set() for split in SPLITS}
    for path in wavs:
        rel = path.relative_to(data / "wav").parts
        assert len(rel) == 3 and rel[0] in SPLITS
        split, spk, name = rel
        assert re.fullmatch(r"S\d{4}", spk), spk
        assert re.fullmatch(rf"BAC009{spk}W\d{{4}}\.wav", name), name
        spk_by_split[split].add(spk)
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            assert w.getnframes() > 8000
    assert [len(spk_by_split[s]) for s in SPLITS] == [2, 1, 1]
    assert not (spk_by_split["train"] & spk_by_split["dev"])
    assert not (spk_by_split["train"] & spk_by_split["test"])
    assert not (spk_by_split["dev"] & spk_by_split["test"])

    lines = (data / "transcript" / "aishell_transcript_v0.8.txt").read_text(encoding="utf-8").splitlines()
    utts = [line.split(" ", 1)[0] for line in lines]
    assert utts == sorted(p.stem for p in wavs)
    for line in lines:
        words = line.split(" ")[1:]
        assert all(len(w) == 1 for w in words) and text.is_cjk_sentence("".join(words))
    assert (data / ".complete").is_file()
    assert (root / "resource_aishell" / ".complete").is_file()

    splits = text.read_aishell_split_sentences(root)
    assert [len(splits[s]) for s in SPLITS] == [6, 2, 3]
    assert len({s for split in SPLITS for s in splits[split]}) == 11


def test_same_seed_same_corpus(tiny_corpus):
    first, second = tiny_corpus
    files_a = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_cache_reuse_and_option_change(tiny_corpus, capsys):
    root, _ = tiny_corpus
    transcript = root / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt"
    before = transcript.stat().st_mtime_ns
    capsys.readouterr()
    make_toy_corpus.main(["--out", str(root)] + TINY)
    assert "reusing" in capsys.readouterr().out
    assert transcript.stat().st_mtime_ns == before
    with pytest.raises(SystemExit, match="--force"):
        make_toy_corpus.main(["--out", str(root)] + TINY[:-1] + ["8"])


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "data_aishell").mkdir()
    with pytest.raises(SystemExit, match="not made by make_toy_corpus"):
        make_toy_corpus.main(["--out", str(tmp_path)] + TINY)
