"""`python -m espnet_ot.bin.demo --tiny` end to end (CER table + coupling PNGs), plot_coupling CLI, Kaldi data prep."""

import argparse
import json
import re
import time
from pathlib import Path

import editdistance
import numpy as np
import pytest
import soundfile
from espnet2.fileio.read_text import read_2columns_text

from espnet_ot.asr import plot_coupling
from espnet_ot.bin import demo as demo_mod
from espnet_ot.bin import plot_coupling as plot_mod
from espnet_ot.toy import kaldi_data
from helpers import run_python


# ------------------------------------------------------------------------------------------ Kaldi data prep
def _fake_aishell(root: Path) -> Path:
    """AISHELL-1 layout with 2 train, 1 dev, 1 test speaker; one train wav without transcript."""
    texts = {
        "BAC009S0002W0001": "今天 天气 很好",
        "BAC009S0002W0002": "我们 是 学生",
        "BAC009S0003W0001": "他 说 好",
        "BAC009S0004W0001": "大家 好",
        "BAC009S0005W0001": "来 了",
        "BAC009S0009W0001": "",  # empty transcript: dropped
    }
    layout = {"train": ["S0002", "S0003"], "dev": ["S0004"], "test": ["S0005"]}
    for split, spks in layout.items():
        for spk in spks:
            d = root / "data_aishell" / "wav" / split / spk
            d.mkdir(parents=True)
            for utt in texts:
                if spk in utt:
                    soundfile.write(str(d / f"{utt}.wav"), np.zeros(1600, dtype=np.float32), 16000)
    # a train wav with no transcript line at all
    soundfile.write(str(root / "data_aishell/wav/train/S0003/BAC009S0003W0002.wav"), np.zeros(1600), 16000)
    tdir = root / "data_aishell" / "transcript"
    tdir.mkdir(parents=True)
    lines = [f"{u} {t}" for u, t in texts.items()] + ["BAC009S0002W0001 duplicate line is ignored"]
    (tdir / "aishell_transcript_v0.8.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_prepare_aishell_writes_kaldi_dirs(tmp_path):
    corpus = _fake_aishell(tmp_path / "corpus")
    dirs = kaldi_data.prepare_aishell(corpus, tmp_path / "data", prefix="toy_")
    assert sorted(dirs) == ["dev", "test", "train"]
    train = tmp_path / "data" / "toy_train"
    text = read_2columns_text(train / "text")
    assert text == {"BAC009S0002W0001": "今天天气很好", "BAC009S0002W0002": "我们是学生", "BAC009S0003W0001": "他说好"}
    wav = read_2columns_text(train / "wav.scp")
    assert sorted(wav) == sorted(text) and all(Path(p).is_file() for p in wav.values())
    assert read_2columns_text(train / "utt2spk")["BAC009S0003W0001"] == "S0003"
    assert (train / "spk2utt").read_text(encoding="utf-8").splitlines() == [
        "S0002 BAC009S0002W0001 BAC009S0002W0002",
        "S0003 BAC009S0003W0001",
    ]
    assert list(read_2columns_text(tmp_path / "data/toy_dev/text")) == ["BAC009S0004W0001"]

    tokens = kaldi_data.write_char_token_list(train / "text", tmp_path / "tokens.txt")
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert tokens[2:4] == ["天", "好"]  # the most frequent (twice each), ties in code-point order
    assert sorted(tokens[2:-1]) == sorted(set("今天天气很好我们是学生他说好"))
    assert (tmp_path / "tokens.txt").read_text(encoding="utf-8").split("\n")[:-1] == tokens


def test_prepare_aishell_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_toy_corpus"):
        kaldi_data.prepare_aishell(tmp_path, tmp_path / "data")
    corpus = _fake_aishell(tmp_path / "c")
    (corpus / "data_aishell/transcript/aishell_transcript_v0.8.txt").write_text("X 好\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has a transcript"):
        kaldi_data.prepare_aishell(corpus, tmp_path / "data")


# ------------------------------------------------------------------------------------------ demo helpers
def test_plot_coupling_rejects_inconsistent_arguments(capsys):
    parser = plot_mod.get_parser()
    args = parser.parse_args(
        [
            "--asr_train_config",
            "a.yaml",
            "b.yaml",
            "--asr_model_file",
            "a.pth",
            "--wav",
            "x.wav",
            "--text",
            "好",
            "--output",
            "x.png",
        ]
    )
    with pytest.raises(ValueError, match="one model file per config"):
        plot_coupling.plot_couplings(**vars(args))
    args = parser.parse_args(
        ["--asr_train_config", "a.yaml", "--asr_model_file", "a.pth", "--wav", "x.wav", "--text", "好"]
    )
    with pytest.raises(ValueError, match="--output"):
        plot_coupling.plot_couplings(**vars(args))
    assert plot_coupling.feats_tokens("今天 好", 5) == ["[CLS]", "今", "天", "好", "[SEP]"]
    assert plot_coupling.feats_tokens("今天", 5) == ["0", "1", "2", "3", "4"]
    assert plot_coupling.display_tokens(["[CLS]", "好"], False) == ["[CLS]", "U+597D"]


# ------------------------------------------------------------------------------------------ end to end
SYSTEMS = demo_mod.SYSTEMS
TABLE_ROW = re.compile(r"^\| (.+?) \| ([0-9.]+) ± ([0-9.]+) \| ([0-9.]+) ± ([0-9.]+) \|")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """One run of the Python front door on the tiny setting (a few minutes on 2 cores)."""
    root = tmp_path_factory.mktemp("demo")
    out, work = root / "out", root / "work"
    t0 = time.time()
    proc = run_python(
        ["-m", "espnet_ot.bin.demo", "--tiny", "--out", str(out), "--cache", str(work)], cwd=root, timeout=1200
    )
    elapsed = time.time() - t0
    assert proc.returncode == 0, f"demo failed after {elapsed:.0f}s:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return argparse.Namespace(out=out, work=work, stdout=proc.stdout, elapsed=elapsed)


def _run_dir(out: Path, system: str) -> Path:
    return out / "exp" / "study" / system / "seed0"


def test_demo_writes_cer_table_matching_the_decodings(tiny_demo):
    out = tiny_demo.out
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert list(summary) == list(SYSTEMS)
    rows = {}
    for line in (out / "RESULTS.md").read_text(encoding="utf-8").splitlines():
        m = TABLE_ROW.match(line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(4)))
    assert list(rows) == [summary[s]["title"] for s in SYSTEMS]
    for system in SYSTEMS:
        exp = _run_dir(out, system)
        assert (exp / "valid.cer_ctc.ave.pth").exists(), system
        cers = []
        for split in ("test", "dev"):
            refs = read_2columns_text(out / "data" / split / "text")
            hyps = read_2columns_text(exp / "decode_greedy" / split / "text")
            assert sorted(hyps) == sorted(refs)
            errs = sum(editdistance.eval(refs[u], "".join(hyps[u].split())) for u in refs)
            cers.append(100.0 * errs / sum(len(r) for r in refs.values()))
        assert rows[summary[system]["title"]] == pytest.approx(tuple(cers), abs=0.006), system
        assert summary[system]["test_cer_mean"] == pytest.approx(cers[0])
        points = summary[system]["test_error_points"]
        assert sum(points.values()) == pytest.approx(cers[0])  # the decomposition adds up to the CER
        if system != "baseline":
            lo, hi = summary[system]["diff_vs_baseline_ci95"]
            diff = summary[system]["diff_vs_baseline"]
            assert lo <= diff <= hi
            assert diff == pytest.approx(cers[0] - summary["baseline"]["test_cer_mean"])
    text = (out / "RESULTS.md").read_text(encoding="utf-8")
    assert "homophone probe" in text and "docs/results/toy_study.md" in text
    for phase in (
        "corpus",
        "plm",
        "data",
        "plm_feats train",
        "stats",
        "train study/baseline/seed0",
        "train study/gm_ot/seed0",
        "decode study/tot_cakt/seed0",
        "coupling",
    ):
        assert re.search(rf"\] {re.escape(phase)}: done in \d+s", tiny_demo.stdout), phase
    assert "epoch 1:" in tiny_demo.stdout  # ESPnet's epoch results are echoed


def test_demo_models_differ_only_in_ot_settings(tiny_demo):
    import yaml

    configs = {
        s: yaml.safe_load((_run_dir(tiny_demo.out, s) / "config.yaml").read_text(encoding="utf-8")) for s in SYSTEMS
    }
    assert {n: c["model_conf"].get("alignment") for n, c in configs.items()} == {
        "baseline": "none",
        "ot_bert": "ot",
        "tot_cakt": "tot",
        "gm_ot": "gmot",
    }
    ignore = {
        "model_conf",
        "config",
        "output_dir",
        "train_data_path_and_name_and_type",
        "valid_data_path_and_name_and_type",
        "allow_variable_data_keys",
    }
    base = {k: v for k, v in configs["baseline"].items() if k not in ignore}
    for name, c in configs.items():
        assert {k: v for k, v in c.items() if k not in ignore} == base, name
    counts = {
        s: re.findall(
            r"Total Number of model parameters: (\S+)",
            (_run_dir(tiny_demo.out, s) / "train.log").read_text(encoding="utf-8"),
        )[-1]
        for s in SYSTEMS
    }
    assert len(set(counts.values())) == 1, counts  # identical sizes


def test_greedy_decoding_is_the_best_ctc_path_and_reproducible(tiny_demo):
    import numpy as np
    import torch

    from espnet_ot.toy.decode import greedy_ctc_decode, load_asr_model

    exp = _run_dir(tiny_demo.out, "tot_cakt")
    model = load_asr_model(exp / "config.yaml", exp / "valid.cer_ctc.ave.pth")
    wavs = read_2columns_text(tiny_demo.out / "data" / "test" / "wav.scp")
    # what the demo wrote is what the decoder gives (deterministic batches)
    written = read_2columns_text(exp / "decode_greedy" / "test" / "text")
    assert {u: "".join(t.split()) for u, t in written.items()} == greedy_ctc_decode(model, wavs)
    # one utterance at a time: the argmax path of the CTC posteriors, repeats merged, blanks dropped
    single = greedy_ctc_decode(model, wavs, batch_seconds=0)
    tokens = list(model.token_list)
    for utt, path in wavs.items():
        speech = torch.from_numpy(soundfile.read(path, dtype="float32")[0])[None]
        with torch.no_grad():
            enc, _ = model.encode(speech, torch.tensor([speech.size(1)]))
            best = model.ctc.log_softmax(enc)[0].argmax(-1).numpy()
        ids = [t for k, t in enumerate(best) if (k == 0 or t != best[k - 1]) and t != model.blank_id]
        assert single[utt] == "".join(tokens[t] for t in ids if not tokens[t].startswith("<")), utt
        assert np.all(np.isfinite(best))


def test_demo_coupling_pngs_parse(tiny_demo):
    import matplotlib.image

    pngs = sorted((tiny_demo.out / "coupling").glob("*.png"))
    dev = sorted(read_2columns_text(tiny_demo.out / "data" / "dev" / "text"))
    assert [p.stem for p in pngs] == dev[:3]
    for p in pngs:
        img = matplotlib.image.imread(str(p))
        assert img.ndim == 3 and img.shape[1] > 2 * img.shape[0] > 300  # three panels side by side
        assert float(img[..., :3].std()) > 0.05


def test_plot_coupling_cli_single_model_from_wav_and_plm(tiny_demo, tmp_path):
    exp = _run_dir(tiny_demo.out, "tot_cakt")
    wavs = read_2columns_text(tiny_demo.out / "data" / "test" / "wav.scp")
    texts = read_2columns_text(tiny_demo.out / "data" / "test" / "text")
    utt = sorted(wavs)[0]
    png = tmp_path / "one.png"
    proc = run_python(
        [
            "-m",
            "espnet_ot.bin.plot_coupling",
            "--asr_train_config",
            str(exp / "config.yaml"),
            "--asr_model_file",
            str(exp / "valid.cer_ctc.ave.pth"),
            "--wav",
            wavs[utt],
            "--text",
            texts[utt],
            "--plm",
            str(tiny_demo.work / "plm"),
            "--output",
            str(png),
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    assert img.shape[1] > 2 * img.shape[0]

    # an utterance id that the data dir lacks: one-line error, exit 1
    proc = run_python(
        [
            "-m",
            "espnet_ot.bin.plot_coupling",
            "--asr_train_config",
            str(exp / "config.yaml"),
            "--asr_model_file",
            str(exp / "valid.cer_ctc.ave.pth"),
            "--methods",
            "tot",
            "--data_dir",
            str(tiny_demo.out / "data" / "dev"),
            "--utt_ids",
            "NOPE",
            "--plm_feats",
            str(tiny_demo.out / "dump" / "plm" / "dev" / "feats.scp"),
            "--output_dir",
            str(tmp_path / "d"),
        ],
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1 and "NOPE" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_second_run_reuses_corpus_plm_training_and_decoding(tiny_demo):
    proc = run_python(
        ["-m", "espnet_ot.bin.demo", "--tiny", "--out", str(tiny_demo.out), "--cache", str(tiny_demo.work)],
        cwd=tiny_demo.out.parent,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "make_toy_corpus: reusing" in proc.stdout and "pretrain_toy_plm: reusing" in proc.stdout
    for system in SYSTEMS:
        assert f"train study/{system}/seed0: done" in proc.stdout
        assert re.search(rf"train study/{system}/seed0: done in \d+s - reusing", proc.stdout), system
