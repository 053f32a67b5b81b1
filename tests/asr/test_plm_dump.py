"""Bad PLM inputs fail in one line and never lose data: dump_plm_feats, the PLM branch, and plm_feats in ESPnet's data."""

import os
import shutil
import time

import numpy as np
import pytest
import torch

from helpers import PLM_CHARS, char_token_list, make_tiny_bert, run_python, write_data_dir, write_token_list

pytest.importorskip("transformers", reason="needs transformers")
kaldiio = pytest.importorskip("kaldiio", reason="needs kaldiio")

from espnet_ot.asr import plm_dump  # noqa: E402
from espnet_ot.asr.plm import PLMTextBranch  # noqa: E402
from espnet_ot.asr.plm_config import PLMNotFoundError  # noqa: E402
from espnet_ot.bin import dump_plm_feats  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")
TEXTS = {"u1": "我们是中国人", "u2": "你好", "u3": "他说了"}


def write_text(path, texts=TEXTS):
    path.write_text("".join(f"{u} {t}\n" for u, t in texts.items()), encoding="utf-8")
    return path


def dump_error(argv) -> str:
    """The one-line message that dump_plm_feats exits with."""
    with pytest.raises(SystemExit) as err:
        dump_plm_feats.main([str(a) for a in argv])
    msg = str(err.value.code)
    assert "\n" not in msg and msg.startswith("dump_plm_feats: error: "), msg
    return msg[len("dump_plm_feats: error: ") :]


@pytest.fixture
def plm_without_tokenizer(tiny_plm_dir, tmp_path):
    d = tmp_path / "model_only"
    d.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_plm_dir / name, d / name)
    return d


@pytest.fixture
def nan_plm(tmp_path):
    """A tiny BERT whose embedding of 你 is NaN: utterances with 你 get NaN features, the others are finite."""
    from transformers import AutoModel

    d = make_tiny_bert(tmp_path / "nan_plm")
    model = AutoModel.from_pretrained(str(d))
    vocab = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[vocab.index("你")] = float("nan")
    model.save_pretrained(str(d))
    return d


# ------------------------------------------------------------------ item 1: tokenizer missing / not the model's


def test_plm_dir_without_tokenizer_fails_in_dump_and_in_the_model(plm_without_tokenizer, tmp_path):
    msg = dump_error(
        ["--text", write_text(tmp_path / "text"), "--plm", plm_without_tokenizer, "--output_dir", tmp_path / "out"]
    )
    assert msg.startswith(f"--plm={str(plm_without_tokenizer)!r}: the directory has no tokenizer file")
    assert "save_pretrained" in msg
    assert not (tmp_path / "out" / "feats.scp").exists()

    pytest.importorskip("espnet2", reason="needs ESPnet")
    from helpers import build_tiny_ot_model

    model = build_tiny_ot_model(char_token_list(), "tot", plm=str(plm_without_tokenizer))
    with pytest.raises(ValueError) as err:
        model._plm_features([[3, 4]], torch.device("cpu"))
    assert str(err.value).startswith(f"model_conf.plm={str(plm_without_tokenizer)!r}: the directory has no tokenizer")


def test_tokenizer_of_another_model_is_rejected(tiny_plm_dir, tmp_path):
    import string

    other = make_tiny_bert(tmp_path / "bigger", chars=PLM_CHARS + string.ascii_letters)  # 5 + 20 + 52 tokens
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in os.listdir(other):
        shutil.copy(other / name, mixed / name)
    for name in ("config.json", "model.safetensors"):  # the 25-token model with the 77-token tokenizer
        shutil.copy(tiny_plm_dir / name, mixed / name)
    with pytest.raises(ValueError) as err:
        PLMTextBranch(str(mixed)).load()
    assert str(err.value) == (
        f"model_conf.plm={str(mixed)!r}: the tokenizer has 77 tokens but the model's vocabulary has 25: the "
        "tokenizer does not belong to this model; save the model's own tokenizer into the same directory "
        "(tokenizer.save_pretrained)"
    )


def test_cli_error_is_one_line_without_traceback(plm_without_tokenizer, tmp_path):
    """The issue's reproduction, as a user runs it: exit status 1 and one line on stderr."""
    proc = run_python(
        [
            "-m",
            "espnet_ot.bin.dump_plm_feats",
            "--text",
            str(write_text(tmp_path / "text")),
            "--plm",
            str(plm_without_tokenizer),
            "--output_dir",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        timeout=300,
    )
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("dump_plm_feats: error: --plm=") and "no tokenizer file" in lines[0]


# ------------------------------------------------------------------ item 10: local paths and offline hub names


def test_relative_path_is_local_and_offline_hub_name_fails_at_once(tiny_plm_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_plm_dir, tmp_path / "models" / "bert")
    assert PLMTextBranch("models/bert").load().hidden_size == 32  # relative path without ./
    import transformers

    def no_hub(*args, **kwargs):
        raise AssertionError("a local-looking name must not go to the hub")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    with pytest.raises(PLMNotFoundError) as err:  # models/ exists, models/berta does not: a typo, not a hub id
        PLMTextBranch("models/berta").load()
    assert str(err.value).startswith("model_conf.plm='models/berta': cannot load the PLM (no such directory")
    monkeypatch.undo()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PLMNotFoundError) as err:
        PLMTextBranch("no-such-org-xyz/bert-xyz").load()
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache" in msg
    assert "huggingface-cli download no-such-org-xyz/bert-xyz" in msg


# ------------------------------------------------------------------ item 13: missing --text, unwritable --output_dir


def test_missing_text_and_unwritable_output_dir_name_the_path(tiny_plm_dir, tmp_path):
    text = write_text(tmp_path / "text")
    assert dump_error(["--text", tmp_path / "nope", "--plm", tiny_plm_dir, "--output_dir", tmp_path / "o"]) == (
        f"--text {tmp_path / 'nope'}: no such file"
    )
    assert (
        dump_error(
            [
                "--text",
                text,
                "--plm",
                tiny_plm_dir,
                "--output_dir",
                tmp_path / "o",
                "--token_list",
                tmp_path / "tokens.txt",
            ]
        )
        == f"--token_list {tmp_path / 'tokens.txt'}: no such file"
    )
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    msg = dump_error(["--text", text, "--plm", tiny_plm_dir, "--output_dir", blocker / "out"])
    assert msg.startswith(f"--output_dir {blocker / 'out'}: cannot create it")


# ------------------------------------------------------------------ items 2 and 12: atomic writes, non-finite features


def test_failed_rerun_keeps_the_previous_features(tiny_plm_dir, plm_without_tokenizer, nan_plm, tmp_path):
    text = write_text(tmp_path / "text")
    out = tmp_path / "out"
    dump_plm_feats.main(["--text", str(text), "--plm", str(tiny_plm_dir), "--output_dir", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"feats.ark", "feats.scp"} and len(before["feats.ark"]) > 0
    feats = kaldiio.load_scp(str(out / "feats.scp"))
    assert sorted(feats) == sorted(TEXTS) and all(np.isfinite(feats[u]).all() for u in feats)

    # the PLM fails to load / fails on the second utterance after the first one was written
    msg = dump_error(["--text", text, "--plm", plm_without_tokenizer, "--output_dir", out])
    assert "no tokenizer file" in msg
    msg = dump_error(["--text", text, "--plm", nan_plm, "--output_dir", out, "--batch_size", "1"])
    assert msg.startswith("utterance u2: the PLM gave non-finite features (NaN/Inf) for '你好'"), msg
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # no truncation, no leftover temporary files


def test_float16_overflow_is_reported(tiny_plm_dir, tmp_path):
    big = plm_dump.finite_matrix("u9", np.full((2, 3), 1e6, dtype=np.float32), np.float32, "x")
    assert big.dtype == np.float32
    with pytest.raises(plm_dump.DumpError, match="utterance u9: features overflow float16; use --dtype float32"):
        plm_dump.finite_matrix("u9", np.full((2, 3), 1e6, dtype=np.float32), np.float16, "x")


# ------------------------------------------------------------------ items 11 and 12 in ESPnet's data pipeline


def _feats_scp(tmp_path, mats, name="f"):
    ark, scp = tmp_path / f"{name}.ark", tmp_path / f"{name}.scp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as w:
        for u, m in mats.items():
            w(u, m)
    return scp


def test_dataset_check_names_missing_utterance_and_non_finite_features(tmp_path):
    pytest.importorskip("espnet2", reason="needs ESPnet")
    from espnet2.train.dataset import ESPnetDataset

    from espnet_ot.asr.plm_data import check_plm_feats

    speech = _feats_scp(tmp_path, {u: np.zeros((10, 2), dtype=np.float32) for u in TEXTS}, "speech")
    good = np.ones((4, 8), dtype=np.float32)
    bad = good.copy()
    bad[1, 2] = np.nan
    scp = _feats_scp(tmp_path, {"u1": good, "u3": bad})
    ds = ESPnetDataset([(str(speech), "speech", "kaldi_ark"), (str(scp), "plm_feats", "kaldi_ark")])
    with pytest.raises(ValueError) as err:
        check_plm_feats(ds, "train")
    assert str(err.value) == (
        f"--train_data_path_and_name_and_type {scp},plm_feats,kaldi_ark: no entry for utterance u2 of {speech}; "
        "re-run the PLM-feature stage (python -m espnet_ot.bin.dump_plm_feats) for this data set"
    )
    check_plm_feats(ds, "valid", utts=["u1", "u3"])  # only these are in the batches: covered
    assert ds["u1"][1]["plm_feats"].shape == (4, 8)
    import pickle

    ds = pickle.loads(pickle.dumps(ds))  # as DataLoader workers (num_workers > 0) receive it
    assert ds["u1"][1]["plm_feats"].shape == (4, 8)
    with pytest.raises(ValueError, match=rf"^{scp}: utterance u3 has non-finite PLM features \(NaN/Inf\)"):
        ds["u3"]


def _arks_dataset(tmp_path, key="plm_feats"):
    """speech + `key` (three 12 x 192 float32 matrices in one ark) for u1, u2, u3; returns (dataset, scp, ark)."""
    from espnet2.train.dataset import ESPnetDataset

    tmp_path.mkdir(exist_ok=True)
    speech = _feats_scp(tmp_path, {u: np.zeros((10, 2), dtype=np.float32) for u in TEXTS}, "speech")
    scp = _feats_scp(tmp_path, {u: np.ones((12, 192), dtype=np.float32) for u in TEXTS}, key)
    ds = ESPnetDataset([(str(speech), "speech", "kaldi_ark"), (str(scp), key, "kaldi_ark")])
    return ds, scp, tmp_path / f"{key}.ark"


def _offsets(scp):
    return {line.split()[0]: int(line.rsplit(":", 1)[1]) for line in scp.read_text().splitlines()}


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def _ark_error(ds, mode="train"):
    from espnet_ot.asr.plm_data import check_plm_feats

    with pytest.raises(ValueError) as err:
        check_plm_feats(ds, mode)
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith(REMEDY), msg
    return msg


REMEDY = "; re-run the PLM-feature stage (python -m espnet_ot.bin.dump_plm_feats) for this data set"


def test_dataset_check_names_missing_and_truncated_arks(tmp_path):
    """Before the first batch: an ark the scp names is missing, cut before an offset, or cut inside its last matrix."""
    pytest.importorskip("espnet2", reason="needs ESPnet")
    ds, scp, ark = _arks_dataset(tmp_path / "missing")
    ark.rename(ark.with_name("elsewhere.ark"))
    field = f"--train_data_path_and_name_and_type {scp},plm_feats,kaldi_ark"
    assert _ark_error(ds) == (
        f"{field}: utterance u1 points to {ark}, which does not exist (3 utterances point to 1 missing ark file(s))"
        + REMEDY
    )

    ds, scp, ark = _arks_dataset(tmp_path / "short")
    off = _offsets(scp)
    _truncate(ark, off["u3"] - 10)  # u3's matrix and its key gone: its offset lies beyond the end
    assert _ark_error(ds, "valid") == (
        f"--valid_data_path_and_name_and_type {scp},plm_feats,kaldi_ark: utterance u3 points to {ark}:{off['u3']}, "
        f"beyond the end of that file ({off['u3'] - 10} bytes: truncated?)" + REMEDY
    )

    ds, scp, ark = _arks_dataset(tmp_path / "cut")
    off = _offsets(scp)
    _truncate(ark, ark.stat().st_size - 300)  # the last matrix cut short: its offset still lies inside the file
    msg = _ark_error(ds)
    assert msg.startswith(
        f"--train_data_path_and_name_and_type {scp},plm_feats,kaldi_ark: utterance u3: "
        f"cannot read its matrix at {ark}:{off['u3']} (ValueError: cannot reshape"
    ), msg
    assert msg.endswith("): the file is truncated or damaged" + REMEDY)


def test_dataset_names_the_utterance_and_ark_of_a_matrix_that_cannot_be_read(tmp_path):
    """An ark damaged after the check (or a bad matrix before the last): the batch's error names utterance and ark."""
    pytest.importorskip("espnet2", reason="needs ESPnet")
    from espnet_ot.asr.plm_data import check_plm_feats

    ds, scp, ark = _arks_dataset(tmp_path)
    check_plm_feats(ds, "train")
    off = _offsets(scp)
    _truncate(ark, off["u3"] - 300)  # inside u2's matrix
    assert ds["u1"][1]["plm_feats"].shape == (12, 192)
    with pytest.raises(ValueError) as err:
        ds["u2"]
    msg = str(err.value)
    assert msg.startswith(f"{scp}: utterance u2: cannot read its plm_feats matrix at {ark}:{off['u2']} ("), msg
    assert msg.endswith("): the ark is truncated or damaged" + REMEDY) and "\n" not in msg


def test_dataset_checks_are_generic_over_the_data_key(tmp_path, monkeypatch):
    """A second kaldi_ark key in CHECKED_KEYS (e.g. plm_soft_labels) goes through the same checks."""
    pytest.importorskip("espnet2", reason="needs ESPnet")
    from espnet_ot.asr import plm_data

    monkeypatch.setattr(plm_data, "CHECKED_KEYS", plm_data.CHECKED_KEYS + ("plm_soft_labels",))
    ds, scp, ark = _arks_dataset(tmp_path, "plm_soft_labels")
    ark.unlink()
    assert _ark_error(ds).startswith(
        f"--train_data_path_and_name_and_type {scp},plm_soft_labels,kaldi_ark: utterance u1 points to {ark}, "
        "which does not exist"
    )


@pytest.mark.parametrize("damage", ["incomplete_scp", "missing_ark", "truncated_ark"])
def test_asr_train_stops_before_training_on_a_bad_scp(damage, tiny_plm_dir, tmp_path):
    """ESPnet's own entry point: the check runs when the iterator is built, before the first batch."""
    pytest.importorskip("espnet2", reason="needs ESPnet")
    texts = {"spk0_a": "我们", "spk0_b": "你好", "spk1_c": "他说"}
    data = write_data_dir(tmp_path / "data", texts)
    tokens = write_token_list(tmp_path / "tokens.txt", char_token_list())
    have = ("spk0_a", "spk1_c") if damage == "incomplete_scp" else sorted(texts)
    scp = _feats_scp(tmp_path, {u: np.ones((4, 32), dtype=np.float32) for u in have})
    ark = tmp_path / "f.ark"
    if damage == "missing_ark":
        ark.unlink()
    elif damage == "truncated_ark":
        _truncate(ark, ark.stat().st_size - 300)
    (tmp_path / "speech_shape").write_text("".join(f"{u} 9600\n" for u in texts))
    (tmp_path / "text_shape").write_text("".join(f"{u} 2,{len(char_token_list())}\n" for u in texts))
    conf = tmp_path / "conf.yaml"
    conf.write_text(
        "encoder: conformer\nencoder_conf: {output_size: 32, attention_heads: 2, linear_units: 32, num_blocks: 1}\n"
        "postencoder: cakt_adapter\npostencoder_conf: {plm_dim: 32}\n"
        f"model: espnet_ot\nmodel_conf: {{alignment: tot, plm: {tiny_plm_dir}}}\n",
        encoding="utf-8",
    )
    data_args = []
    for split in ("train", "valid"):
        data_args += [
            f"--{split}_data_path_and_name_and_type",
            f"{data}/wav.scp,speech,sound",
            f"--{split}_data_path_and_name_and_type",
            f"{data}/text,text,text",
            f"--{split}_shape_file",
            str(tmp_path / "speech_shape"),
            f"--{split}_shape_file",
            str(tmp_path / "text_shape"),
        ]
    proc = run_python(
        [
            "-m",
            "espnet2.bin.asr_train",
            "--config",
            str(conf),
            "--token_type",
            "char",
            "--token_list",
            str(tokens),
            "--use_preprocessor",
            "true",
            "--ngpu",
            "0",
            "--num_workers",
            "0",
            "--batch_size",
            "2",
            "--batch_type",
            "unsorted",
            "--max_epoch",
            "1",
            "--output_dir",
            str(tmp_path / "exp"),
            "--allow_variable_data_keys",
            "true",
            *data_args,
            "--train_data_path_and_name_and_type",
            f"{scp},plm_feats,kaldi_ark",
        ],
        cwd=tmp_path,
        timeout=900,  # ~25 s alone; minutes on a loaded 2-core box
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    field = f"ValueError: --train_data_path_and_name_and_type {scp},plm_feats,kaldi_ark: "
    expected = {
        "incomplete_scp": f"no entry for utterance spk0_b of {data}/wav.scp",
        "missing_ark": f"utterance spk0_a points to {ark}, which does not exist (3 utterances point to 1 missing "
        "ark file(s))",
        "truncated_ark": f"utterance spk1_c: cannot read its matrix at {ark}:{_offsets(scp)['spk1_c']} (",
    }[damage]
    assert last.startswith(field + expected) and last.endswith(REMEDY), proc.stderr[-3000:]
    assert "KeyError" not in proc.stderr and not (tmp_path / "exp" / "1epoch.pth").exists()


def test_masked_features_are_the_plm_state_of_each_token_masked_one_at_a_time(tiny_plm_dir, tmp_path):
    """--kind masked: row j is the PLM's last state at j with only token j replaced by [MASK] (one pass per token,
    checked against separate single-sequence passes); [CLS]/[SEP] rows are the unmasked ones."""
    text = write_text(tmp_path / "text")
    dump_plm_feats.main(["--text", str(text), "--plm", str(tiny_plm_dir), "--output_dir", str(tmp_path / "plain")])
    dump_plm_feats.main(
        [
            "--text",
            str(text),
            "--plm",
            str(tiny_plm_dir),
            "--output_dir",
            str(tmp_path / "masked"),
            "--kind",
            "masked",
            "--batch_size",
            "2",
        ]
    )
    plain = kaldiio.load_scp(str(tmp_path / "plain" / "feats.scp"))
    masked = kaldiio.load_scp(str(tmp_path / "masked" / "feats.scp"))
    branch = PLMTextBranch(str(tiny_plm_dir)).load()
    for utt, sentence in TEXTS.items():
        ids, _ = branch.tokenize([sentence])
        assert masked[utt].shape == plain[utt].shape == (ids.size(1), branch.hidden_size)
        for j in (0, ids.size(1) - 1):
            np.testing.assert_allclose(masked[utt][j], plain[utt][j], atol=1e-5)
        for j in range(1, ids.size(1) - 1):
            one = ids.clone()
            one[0, j] = branch.tokenizer.mask_token_id
            with torch.no_grad():
                want = branch.model(input_ids=one).last_hidden_state[0, j].numpy()
            np.testing.assert_allclose(masked[utt][j], want, atol=1e-5)
            assert np.abs(masked[utt][j] - plain[utt][j]).max() > 1e-3  # masking changed what the row says


def test_bad_dump_arguments_fail_in_one_line_before_the_plm_loads(tiny_plm_dir, tmp_path):
    text = write_text(tmp_path / "text")
    base = ["--text", text, "--plm", tiny_plm_dir, "--output_dir", tmp_path / "out"]
    assert dump_error([*base, "--batch_size", "0"]).startswith("--batch_size 0")
    assert dump_error([*base, "--batch_size", "-1"]).startswith("--batch_size -1")
    assert dump_error([*base, "--name", "sub/feats"]).startswith("--name 'sub/feats'")
    assert dump_error([*base, "--device", "gpu"]).startswith("--device gpu")
    if not torch.cuda.is_available():
        assert dump_error([*base, "--device", "cuda"]).startswith("--device cuda: no CUDA GPU")
    empty_tokens = tmp_path / "empty_tokens.txt"
    empty_tokens.write_text("", encoding="utf-8")
    assert dump_error([*base, "--token_list", empty_tokens]).startswith(f"--token_list {empty_tokens}: empty")
    latin1 = tmp_path / "latin1"
    latin1.write_bytes("u1 caf\xe9\n".encode("latin-1"))
    assert dump_error(["--text", latin1, *base[2:]]).startswith(f"--text {latin1}: not UTF-8")


def test_empty_or_duplicated_text_keeps_the_previous_dump(tiny_plm_dir, tmp_path):
    out = tmp_path / "out"
    dump_plm_feats.main(
        ["--text", str(write_text(tmp_path / "text")), "--plm", str(tiny_plm_dir), "--output_dir", str(out)]
    )
    before = (out / "feats.scp").read_text(encoding="utf-8")
    empty = tmp_path / "empty"
    empty.write_text("", encoding="utf-8")
    assert "no utterance in it" in dump_error(["--text", empty, "--plm", tiny_plm_dir, "--output_dir", out])
    dup = tmp_path / "dup"
    dup.write_text("u1 我们\nu2 你好\nu1 他说\n", encoding="utf-8")
    assert "u1 is duplicated" in dump_error(["--text", dup, "--plm", tiny_plm_dir, "--output_dir", out])
    assert (out / "feats.scp").read_text(encoding="utf-8") == before


def test_a_token_list_lacking_the_texts_characters_is_refused(tiny_plm_dir, tmp_path):
    text = write_text(tmp_path / "text")
    tokens = write_token_list(tmp_path / "tokens.txt", char_token_list("我们是中国人你好"))  # lacks 他说了
    msg = dump_error(["--text", text, "--plm", tiny_plm_dir, "--output_dir", tmp_path / "out", "--token_list", tokens])
    assert msg.startswith(f"--token_list {tokens}: lacks 3 tokens") and "他" in msg and "说" in msg
    assert not (tmp_path / "out" / "feats.scp").exists()


def test_sigterm_during_a_dump_leaves_no_temporary_file_and_keeps_the_previous_dump(tiny_plm_dir, tmp_path):
    import signal
    import subprocess

    from helpers import PYTHON, offline_env

    out = tmp_path / "out"
    dump_plm_feats.main(
        ["--text", str(write_text(tmp_path / "text")), "--plm", str(tiny_plm_dir), "--output_dir", str(out)]
    )
    before = (out / "feats.scp").read_text(encoding="utf-8")
    many = write_text(tmp_path / "many", {f"u{i:05d}": "我们是中国人你好" for i in range(20000)})
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "espnet_ot.bin.dump_plm_feats",
            "--text",
            str(many),
            "--plm",
            str(tiny_plm_dir),
            "--output_dir",
            str(out),
            "--batch_size",
            "1",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=offline_env(),
    )
    deadline = time.time() + 120
    while not (out / "feats.ark.tmp").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert (out / "feats.ark.tmp").exists(), "the dump never started writing"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "stopped by signal" in err
    assert not list(out.glob("*.tmp*")) and (out / "feats.scp").read_text(encoding="utf-8") == before


# ------------------------------------------------------------------ item 17: plm_max_length in the PLM branch


def test_plm_max_length_below_cls_token_sep_is_named(tiny_plm_dir):
    # plm_max_length 1 blamed the tokenizer's wrapping ([CLS] was cut)
    for value in (1, 2, 0, -2):
        with pytest.raises(ValueError, match=rf"^model_conf\.plm_max_length={value} must be an integer >= 3") as e:
            PLMTextBranch(str(tiny_plm_dir), max_length=value)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"^--plm_max_length=1 must be an integer >= 3"):
        PLMTextBranch(str(tiny_plm_dir), max_length=1, field="--plm")


def test_dump_with_plm_max_length_beyond_the_plm_is_named(tiny_plm_dir, tmp_path):
    # a 41-token text and plm_max_length 1000 on a 24-position PLM: an "expanded size" RuntimeError of BERT
    text = tmp_path / "text"
    text.write_text("u1 " + "我们是中国人你好他说了大来" * 3 + "\n", encoding="utf-8")
    argv = [
        "--text",
        text,
        "--plm",
        tiny_plm_dir,
        "--output_dir",
        tmp_path / "out",
        "--plm_max_length",
        "1000",
        "--token_list",
        write_token_list(tmp_path / "tokens.txt", char_token_list()),
    ]
    msg = dump_error(argv)
    assert msg.startswith("--plm_max_length=1000 exceeds the 24 input positions of --plm="), msg
    assert not (tmp_path / "out" / "feats.scp").exists()
