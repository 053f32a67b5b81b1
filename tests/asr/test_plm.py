"""Tests of the frozen PLM text branch, its documented rules, and precomputed (dumped) PLM features."""

import logging

import pytest
import torch
import transformers  # noqa: F401  (a required dependency: a broken install fails here)

from espnet_ot.asr.plm import PLMTextBranch, TokenDetokenizer  # noqa: E402
from espnet_ot.asr.plm_config import PLMNotFoundError  # noqa: E402
from helpers import CHARS, PLM_CHARS, char_token_list, write_token_list

pytestmark = pytest.mark.usefixtures("single_thread")
TOKENS = char_token_list()


def ids(tokens, token_list=TOKENS):
    return [token_list.index(t) for t in tokens]


def test_detokenize_char_and_bpe_rules():
    detok = TokenDetokenizer(TOKENS, "char", unk_text="[UNK]")
    seq = ids(["<blank>", "我", "们", "<space>", "<unk>", "好", "<sos/eos>"]) + [-1, -1]
    assert detok(seq) == "我们 [UNK]好"
    bpe_list = ["<blank>", "<unk>", "\u2581he", "llo", "\u2581wor", "ld", "<sos/eos>"]
    bpe = TokenDetokenizer(bpe_list, "bpe", unk_text="[UNK]")
    assert bpe([2, 3, 4, 5, 1]) == "hello world[UNK]"
    word = TokenDetokenizer(["<blank>", "<unk>", "hello", "world"], "word", unk_text="<?>")
    assert word([2, 0, 3, 1]) == "hello world <?>"
    assert detok([]) == ""
    with pytest.raises(ValueError, match="model_conf.token_type"):
        TokenDetokenizer(TOKENS, "phn")


def test_detokenize_hugging_face_tokens(tiny_plm_dir):
    branch = PLMTextBranch(str(tiny_plm_dir))
    vocab = [t for t, _ in sorted(branch.tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    detok = branch.detokenizer(vocab, "hugging_face")
    seq = [vocab.index(t) for t in ["[CLS]", "我", "们", "[UNK]", "好", "[SEP]", "[PAD]"]]
    text = detok(seq)
    assert branch.tokenizer(text)["input_ids"] == [
        vocab.index(t) for t in ["[CLS]", "我", "们", "[UNK]", "好", "[SEP]"]
    ]


def test_plm_is_lazy_frozen_and_wraps_cls_sep(tiny_plm_dir):
    branch = PLMTextBranch(str(tiny_plm_dir))
    assert not branch.loaded
    z, lengths = branch.encode_texts(["我们", "", "中国人" + CHARS[-1]])
    assert branch.loaded and not branch.model.training
    assert all(not p.requires_grad for p in branch.model.parameters())
    assert lengths.tolist() == [4, 2, 6]  # [CLS] y [SEP]; empty -> [CLS][SEP]
    assert z.shape == (3, 6, branch.hidden_size) and z.dtype == torch.float32
    assert torch.all(z[0, 4:] == 0) and torch.all(z[1, 2:] == 0)
    tok = branch.tokenizer
    input_ids, _ = branch.tokenize(["我们"])
    assert input_ids[0, 0] == tok.cls_token_id and input_ids[0, -1] == tok.sep_token_id
    # Padding does not change an utterance's features.
    alone, _ = branch.encode_texts(["我们"])
    torch.testing.assert_close(z[0, :4], alone[0], rtol=1e-5, atol=1e-5)


def test_plm_layer_selection(tiny_plm_dir):
    last, _ = PLMTextBranch(str(tiny_plm_dir)).encode_texts(["我们"])
    explicit, _ = PLMTextBranch(str(tiny_plm_dir), layer=2).encode_texts(["我们"])
    embeddings, _ = PLMTextBranch(str(tiny_plm_dir), layer=0).encode_texts(["我们"])
    torch.testing.assert_close(last, explicit)
    assert not torch.allclose(last, embeddings)
    bad = PLMTextBranch(str(tiny_plm_dir), layer=3)
    with pytest.raises(ValueError, match="plm_layer=3 is out of range"):
        bad.load()
    assert not bad.loaded


def test_long_transcripts_are_truncated_keeping_cls_and_sep(tiny_plm_dir, caplog):
    branch = PLMTextBranch(str(tiny_plm_dir))  # max_position_embeddings = 24
    long_text = (PLM_CHARS * 3)[:40]
    exact = (PLM_CHARS * 3)[:22]  # 22 characters + [CLS] + [SEP] = 24 positions: fits, not cut
    with caplog.at_level(logging.WARNING):
        assert branch.tokenize([exact])[1].tolist() == [24] and not caplog.records
        input_ids, lengths = branch.tokenize([long_text, "你好", exact])
        branch.tokenize([long_text])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("1 transcript(s) exceed the PLM's 24 positions"), (
        messages
    )  # counted right, warned once
    assert branch.max_length == 24 and lengths.tolist() == [24, 4, 24]
    tok = branch.tokenizer
    row = input_ids[0].tolist()
    assert row[0] == tok.cls_token_id and row[-1] == tok.sep_token_id
    assert tok.convert_ids_to_tokens(row[1:-1]) == list(long_text[:22])  # the tail is cut
    z, z_lens = branch.encode_texts([long_text])
    assert z.shape[1] == 24 and torch.isfinite(z).all()
    capped = PLMTextBranch(str(tiny_plm_dir), max_length=8)
    assert capped.tokenize([long_text])[1].tolist() == [8]


def test_missing_plm_gives_one_line_error_naming_field_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in (str(tmp_path / "no_such_plm"), "no-such-org-xyz/no-such-bert-xyz"):
        with pytest.raises(PLMNotFoundError) as err:
            PLMTextBranch(name).load()
        msg = str(err.value)
        assert "\n" not in msg
        assert msg.startswith(f"model_conf.plm={name!r}")
        assert "save_pretrained" in msg and "dump_plm_feats" in msg


def _model(plm, tokens):
    from helpers import build_tiny_ot_model

    return build_tiny_ot_model(tokens, "tot", seed=5, plm=plm)


def test_dumped_features_match_on_the_fly_path(tiny_plm_dir, tmp_path):
    import kaldiio

    from espnet_ot.bin import dump_plm_feats

    texts = {"u1": "我们是 中国人", "u2": "你好猫" + CHARS[-1], "u3": "", "u4": "他说了"}
    text_file = tmp_path / "text"
    text_file.write_text("".join(f"{u} {t}\n" for u, t in texts.items()), encoding="utf-8")
    token_file = write_token_list(tmp_path / "tokens.txt", TOKENS)
    out = tmp_path / "dump"
    dump_plm_feats.main(
        [
            "--max_unk_share",  # 猫 is not in the token list on purpose: its <unk> must match the on-the-fly path
            "1",
            "--text",
            str(text_file),
            "--plm",
            str(tiny_plm_dir),
            "--output_dir",
            str(out),
            "--token_list",
            str(token_file),
            "--token_type",
            "char",
            "--batch_size",
            "3",
        ]
    )
    feats = kaldiio.load_scp(str(out / "feats.scp"))
    assert sorted(feats) == sorted(texts)
    assert feats["u3"].shape == (2, 32)  # empty transcript -> [CLS][SEP]

    # The ESPnet preprocessing of the same transcripts gives these ids (<space> and <unk>).
    from espnet2.train.preprocessor import CommonPreprocessor

    pre = CommonPreprocessor(train=False, token_type="char", token_list=TOKENS)
    utts = ["u1", "u2", "u4", "u3"]
    rows = [pre(u, {"text": texts[u]})["text"].tolist() for u in utts]
    assert TOKENS.index("<space>") in rows[0] and TOKENS.index("<unk>") in rows[1]
    text = torch.full((4, max(map(len, rows))), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        text[b, : len(r)] = torch.tensor(r)
    g = torch.Generator().manual_seed(0)
    batch = dict(
        speech=torch.randn(4, 64, 20, generator=g),
        speech_lengths=torch.tensor([64, 60, 56, 52]),
        text=text,
        text_lengths=torch.tensor([len(r) for r in rows]),
    )
    on_the_fly = _model(str(tiny_plm_dir), TOKENS)
    z, z_lens = on_the_fly._plm_features([r for r in rows], torch.device("cpu"))
    for b, u in enumerate(utts):
        torch.testing.assert_close(z[b, : int(z_lens[b])], torch.tensor(feats[u]), rtol=1e-5, atol=1e-5)

    cached = _model(str(tmp_path / "plm_is_not_here"), TOKENS)
    mats = [torch.tensor(feats[u]) for u in utts]
    batch_cached = dict(
        {k: v.clone() for k, v in batch.items()},
        plm_feats=torch.nn.utils.rnn.pad_sequence(mats, batch_first=True),
        plm_feats_lengths=torch.tensor([m.shape[0] for m in mats]),
    )
    for model in (on_the_fly, cached):
        model.eval()
    with torch.no_grad():
        _, s1, _ = on_the_fly(**{k: v.clone() for k, v in batch.items()})
        _, s2, _ = cached(**batch_cached)
    assert not cached.plm_branch.loaded  # never ran (nor found) the PLM
    for key in ("loss", "loss_ot", "loss_align", "band_mass", "coupling_entropy"):
        torch.testing.assert_close(s1[key], s2[key], rtol=1e-5, atol=1e-5)

    # float16 storage reads back (ESPnet casts it to float32 in the data loader).
    dump_plm_feats.main(
        [
            "--text",
            str(text_file),
            "--plm",
            str(tiny_plm_dir),
            "--output_dir",
            str(out),
            "--name",
            "half",
            "--dtype",
            "float16",
        ]
    )
    half = kaldiio.load_scp(str(out / "half.scp"))
    assert half["u4"].dtype.name == "float16" and half["u4"].shape == feats["u4"].shape
