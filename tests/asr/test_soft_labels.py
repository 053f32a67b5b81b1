"""Soft labels and context-free Z_L of dump_plm_feats against direct masked-LM / PLM calls on a tiny BERT."""

import numpy as np
import pytest
import torch

from helpers import PLM_CHARS, char_token_list, write_token_list

kaldiio = pytest.importorskip("kaldiio", reason="needs kaldiio")

from espnet_ot.asr.plm import PLMTextBranch  # noqa: E402
from espnet_ot.bin import dump_plm_feats  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
TEXTS = {"u1": "我们是中国人", "u2": "你好", "u3": "他说了人们"}
K = 5


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory):
    """A random character BertForMaskedLM saved with its head (as bert-base-chinese is)."""
    from transformers import BertForMaskedLM

    from espnet_ot.toy.plm import SPECIAL_TOKENS, bert_config, save_char_bert

    vocab = list(SPECIAL_TOKENS) + list(PLM_CHARS)
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config(len(vocab), 32, 2, 2, intermediate=64, max_positions=24, dropout=0.1))
    return save_char_bert(tmp_path_factory.mktemp("tiny_mlm") / "plm", vocab, model, max_length=24)


def dump(tmp_path, plm, kind, *extra):
    text = tmp_path / "text"
    text.write_text("".join(f"{u} {t}\n" for u, t in TEXTS.items()), encoding="utf-8")
    tokens = write_token_list(tmp_path / "tokens.txt", char_token_list())
    out = tmp_path / kind
    dump_plm_feats.main(
        [
            "--text",
            str(text),
            "--plm",
            str(plm),
            "--token_list",
            str(tokens),
            "--output_dir",
            str(out),
            "--kind",
            kind,
            "--top_k",
            str(K),
            "--batch_size",
            "2",
            *map(str, extra),
        ]
    )
    return kaldiio.load_scp(str(out / "feats.scp"))


def test_mlm_soft_labels_are_the_masked_lm_distribution_over_the_ctc_tokens(tiny_mlm_dir, tmp_path):
    from transformers import BertForMaskedLM

    labels = dump(tmp_path, tiny_mlm_dir, "mlm_soft_labels")
    tokens = char_token_list()
    mlm = BertForMaskedLM.from_pretrained(str(tiny_mlm_dir)).eval()
    branch = PLMTextBranch(str(tiny_mlm_dir)).load()
    tok = branch.tokenizer
    mapped = [(i, tok.convert_tokens_to_ids(t)) for i, t in enumerate(tokens) if t in PLM_CHARS]
    ctc_ids = np.array([c for c, _ in mapped])
    plm_ids = [p for _, p in mapped]
    for utt, sentence in TEXTS.items():
        ids = torch.tensor([tok.convert_tokens_to_ids(["[CLS]", *sentence, "[SEP]"])])
        got = labels[utt]
        assert got.shape == (ids.size(1), 2 * K)
        assert not got[0].any() and not got[-1].any()  # [CLS], [SEP]: no target
        for j in range(1, ids.size(1) - 1):
            masked = ids.clone()
            masked[0, j] = tok.mask_token_id
            with torch.no_grad():
                p = torch.softmax(mlm(input_ids=masked).logits[0, j, plm_ids].double(), -1).numpy()
            top = np.argsort(-p)[:K]
            np.testing.assert_array_equal(got[j, :K].astype(int), ctc_ids[top])
            np.testing.assert_allclose(got[j, K:], p[top] / p[top].sum(), rtol=1e-4)


def test_identity_soft_labels_are_the_true_characters(tiny_mlm_dir, tmp_path):
    labels = dump(tmp_path, tiny_mlm_dir, "identity_soft_labels")
    tokens = char_token_list()
    for utt, sentence in TEXTS.items():
        got = labels[utt]
        known = np.array([c in PLM_CHARS for c in sentence])  # 说 is [UNK] for the tiny BERT: no target
        assert [tokens[int(i)] for i in got[1:-1, 0][known]] == [c for c in sentence if c in PLM_CHARS]
        np.testing.assert_array_equal(got[1:-1, K], known.astype(np.float32))
        assert not got[1:-1, 1:K].any() and not got[1:-1, K + 1 :].any() and not got[[0, -1]].any()
    assert not labels["u3"][2].any()  # 他说了人们: 说


def test_context_free_rows_are_each_tokens_mean_over_the_means_text(tiny_mlm_dir, tmp_path):
    means_text = tmp_path / "train_text"
    train = {"t1": "我们好", "t2": "你们是人", "t3": "他是中国人说了"}
    means_text.write_text("".join(f"{u} {t}\n" for u, t in train.items()), encoding="utf-8")
    rows = dump(tmp_path, tiny_mlm_dir, "context_free", "--means_text", means_text)
    branch = PLMTextBranch(str(tiny_mlm_dir)).load()
    per_token = {}
    for sentence in train.values():
        z, _ = branch.encode_texts([sentence])
        for j, t in enumerate(["[CLS]", *sentence, "[SEP]"]):
            per_token.setdefault(t, []).append(z[0, j].numpy())
    for utt, sentence in TEXTS.items():
        for j, t in enumerate(["[CLS]", *sentence, "[SEP]"]):
            if t in per_token:
                np.testing.assert_allclose(rows[utt][j], np.mean(per_token[t], 0), atol=1e-5)
    # the same character has the same row wherever it stands: no context left
    np.testing.assert_array_equal(rows["u1"][6], rows["u3"][4])  # 人 in both


def test_soft_labels_refuse_a_plm_without_its_masked_lm_head(tiny_plm_dir, tmp_path):
    with pytest.raises(SystemExit) as err:
        dump(tmp_path, tiny_plm_dir, "mlm_soft_labels")
    assert "no trained masked-LM head" in str(err.value.code)
    assert not (tmp_path / "mlm_soft_labels" / "feats.scp").exists()
