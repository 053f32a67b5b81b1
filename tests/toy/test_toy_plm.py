"""Tests of the toy PLM pretrainer: masking, accuracy and baseline, exclusion of toy dev/test text, saved model."""

import os

import pytest
import torch

from espnet_ot.bin import pretrain_toy_plm as plm_cli
from espnet_ot.toy import plm, text


def _tiny_bert(vocab_size: int = 40):
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    config = plm.bert_config(vocab_size, hidden=16, layers=1, heads=2, intermediate=32, max_positions=32, dropout=0.1)
    return BertForMaskedLM(config).eval()


def test_build_vocab_and_encode():
    vocab = plm.build_vocab(["天好好", "天气好", "好"], vocab_size=7)
    assert vocab == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好", "天"]
    ids = plm.encode(["天好气"], vocab)[0].tolist()
    assert ids == [plm.CLS_ID, 6, 5, plm.UNK_ID, plm.SEP_ID]
    with pytest.raises(ValueError, match="vocab_size"):
        plm.build_vocab(["天"], vocab_size=5)


def test_mask_tokens_targets_only_characters():
    gen = torch.Generator().manual_seed(0)
    ids = plm.pad_batch([torch.tensor([2, 7, 8, 9, 3]), torch.tensor([2, 10, 3])])
    for replace in (False, True):
        for _ in range(20):
            inputs, labels = plm.mask_tokens(ids, 12, gen, mask_prob=0.3, replace=replace)
            masked = labels != -100
            assert masked.sum(dim=1).min() >= 1  # at least one target per sentence
            special = (ids == plm.CLS_ID) | (ids == plm.SEP_ID) | (ids == plm.PAD_ID)
            assert not (masked & special).any()
            assert torch.equal(labels[masked], ids[masked])
            assert torch.equal(inputs[~masked], ids[~masked])
            if not replace:
                assert (inputs[masked] == plm.MASK_ID).all()


def test_masked_accuracy_matches_full_forward():
    model = _tiny_bert()
    ids = [torch.tensor([2] + list(range(5 + i, 10 + i)) + [3]) for i in range(6)]
    res = plm.masked_accuracy(model, ids, 40, seed=3, batch_size=4)
    # recompute with the standard full-vocabulary forward of BertForMaskedLM on the same masking
    gen = torch.Generator().manual_seed(3)
    hits = total = 0
    ordered = sorted(ids, key=len)
    for start in range(0, len(ordered), 4):
        batch = plm.pad_batch(ordered[start : start + 4])
        inputs, labels = plm.mask_tokens(batch, 40, gen, mask_prob=plm.EVAL_MASK_PROB, replace=False)
        with torch.no_grad():
            logits = model(input_ids=inputs, attention_mask=(inputs != plm.PAD_ID).long()).logits
        where = labels != -100
        hits += int((logits[where].argmax(-1) == labels[where]).sum())
        total += int(where.sum())
    assert res["targets"] == total
    assert res["accuracy"] == pytest.approx(hits / total)


def test_unigram_baseline():
    train = [torch.tensor([2, 7, 7, 8, 3]), torch.tensor([2, 7, 9, 3])]
    best, acc = plm.unigram_baseline(train, torch.tensor([7, 8, 7, 9]))
    assert best == 7 and acc == pytest.approx(0.5)


def test_lr_schedule():
    assert plm.lr_scale(0, 100, 0.1) == pytest.approx(0.1)
    assert plm.lr_scale(9, 100, 0.1) == pytest.approx(1.0)
    assert plm.lr_scale(55, 100, 0.1) == pytest.approx(0.5)
    assert plm.lr_scale(100, 100, 0.1) == 0.0


def test_length_batches_cover_epoch_without_padding():
    gen = torch.Generator().manual_seed(0)
    ids = [torch.full((n,), 5 + i) for i, n in enumerate([3, 3, 3, 4, 4, 5, 3])]
    batches = plm.length_batches(ids, batch_tokens=7, generator=gen)
    assert all((b != plm.PAD_ID).all() for b in batches)
    assert all(b.numel() <= 7 or b.size(0) == 1 for b in batches)
    seen = sorted(int(row[0]) for b in batches for row in b)
    assert seen == list(range(5, 12))


def _fake_aishell(root, split_sentences):
    """AISHELL-layout tree with empty wavs (only names and the transcript matter to the pretrainer)."""
    data = root / "data_aishell"
    lines = []
    for split, sentences in split_sentences.items():
        spk_dir = data / "wav" / split / f"S{len(split):04d}"
        spk_dir.mkdir(parents=True)
        for i, s in enumerate(sentences):
            utt = f"BAC009S{len(split):04d}W{i + 1:04d}"
            (spk_dir / f"{utt}.wav").touch()
            lines.append(f"{utt} {' '.join(s)}\n")
    (data / "transcript").mkdir(parents=True)
    (data / "transcript" / "aishell_transcript_v0.8.txt").write_text("".join(sorted(lines)), encoding="utf-8")


def test_corpus_dev_test_excluded(tmp_path):
    news = text.load_news_sentences(6, 20)
    splits = {"train": news[:2], "dev": news[2:5], "test": news[5:8]}
    _fake_aishell(tmp_path, splits)
    read = text.read_aishell_split_sentences(tmp_path)
    assert {k: sorted(v) for k, v in read.items()} == {k: sorted(v) for k, v in splits.items()}
    exclude = set(read["dev"]) | set(read["test"])
    train, held = plm.split_news_sentences(6, 20, exclude, heldout=100, seed=0)
    assert not exclude & set(train) and not exclude & set(held)
    assert set(news[:2]) <= set(train) | set(held)
    assert len(train) + len(held) == len(news) - 6


def test_pretrain_saves_loadable_model_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    news = text.load_news_sentences(6, 20)
    _fake_aishell(tmp_path / "corpus", {"train": news[:3], "dev": news[3:5], "test": news[5:7]})
    out = tmp_path / "plm"
    lines = []
    kwargs = dict(
        corpus=str(tmp_path / "corpus"),
        steps=8,
        hidden=32,
        heads=2,
        vocab_size=600,
        batch_tokens=256,
        heldout=200,
        threads=1,
        log=lines.append,
    )
    summary = plm.pretrain_toy_plm(str(out), **kwargs)
    report = "\n".join(lines)
    assert "held-out masked-character accuracy" in report and "unigram baseline" in report
    assert "toy corpus dev+test" in report
    res = summary["results"]
    assert 0.0 < res["baseline_accuracy"] < 1.0
    # the reported accuracy is the saved model's: recomputed from the saved weights on the same held-out split
    # (default min_len/max_len, heldout=200, seed 0; the evaluation masks with seed + 12345)
    from transformers import BertForMaskedLM

    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    splits = text.read_aishell_split_sentences(tmp_path / "corpus")
    _, held = plm.split_news_sentences(4, 32, set(splits["dev"]) | set(splits["test"]), 200, 0)
    again_res = plm.masked_accuracy(
        BertForMaskedLM.from_pretrained(str(out)), plm.encode(held, vocab), len(vocab), 12345
    )
    assert res["eval_targets"] == again_res["targets"] > 0
    assert res["accuracy"] == pytest.approx(again_res["accuracy"], abs=1e-12)
    assert res["baseline_token"] == "的"  # the most frequent character of the news text
    assert (out / ".complete").is_file()

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    sentence = "今天天气很好"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(sentence)["input_ids"])
    assert tokens == ["[CLS]"] + list(sentence) + ["[SEP]"]
    model = AutoModel.from_pretrained(str(out))
    assert type(model).__name__ == "BertModel"
    assert model.pooler is not None
    enc = tokenizer([sentence, "天气"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    assert hidden.shape == (2, len(sentence) + 2, 32)
    assert torch.isfinite(hidden).all()

    # same options: reused without training; other options: refused unless forced
    lines.clear()
    again = plm.pretrain_toy_plm(str(out), **kwargs)
    assert "reusing" in lines[0] and again["results"] == res
    with pytest.raises(FileExistsError, match="--force"):
        plm.pretrain_toy_plm(str(out), **{**kwargs, "steps": 9})


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit, match="corpus"):
        plm_cli.main(["--out", str(tmp_path / "x"), "--corpus", str(tmp_path / "missing"), "--steps", "1"])
    with pytest.raises(SystemExit, match="heads"):
        plm_cli.main(["--out", str(tmp_path / "y"), "--hidden", "30", "--heads", "4", "--steps", "1"])
    assert not os.path.exists(tmp_path / "y")


def test_cli_missing_corpus_names_the_path_given(tmp_path):
    """--corpus DIR that is not a corpus: the one line names DIR as given, not a path derived from it."""
    given = tmp_path / "x" / "nope"
    with pytest.raises(SystemExit) as err:
        plm_cli.main(["--out", str(tmp_path / "out"), "--corpus", str(given), "--steps", "1"])
    msg = str(err.value.code)
    assert "\n" not in msg and msg.startswith(f"pretrain_toy_plm: error: --corpus {given}: "), msg
    assert str(tmp_path / "x" / "data_aishell") not in msg and "make_toy_corpus" in msg
    (given / "data_aishell").mkdir(parents=True)  # a data_aishell/ without transcript: named in full
    with pytest.raises(SystemExit) as err:
        plm_cli.main(["--out", str(tmp_path / "out"), "--corpus", str(given), "--steps", "1"])
    assert f"--corpus {given}: has no data_aishell/transcript/aishell_transcript_v0.8.txt" in str(err.value.code)
    assert not (tmp_path / "out").exists()
