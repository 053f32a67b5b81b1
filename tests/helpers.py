"""Shared test helpers: a tiny random BERT directory, tiny wav/Kaldi data dirs, tiny ESPnet models."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# Characters of the toy transcripts; the tiny BERT knows all but the last one (-> [UNK]).
CHARS = "我们你他好是的不了在人有这中大来上国个到说"
PLM_CHARS = CHARS[:-1]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
# CI sets CI=true: there every prerequisite must be present (tests/conftest.py turns skips into failures).
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def offline_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for subprocesses: offline HF, no user site, one math thread unless set."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env["PYTHONNOUSERSITE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models; 2 threads crawl on a loaded 2-core box
    if extra:
        env.update(extra)
    return env


def make_tiny_bert(
    out_dir: Path,
    chars: str = PLM_CHARS,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 24,
    seed: int = 0,
) -> Path:
    """Save a random character BERT (the toy PLM's builder and saver, untrained) via save_pretrained."""
    import torch
    from transformers import BertModel

    from espnet_ot.toy.plm import SPECIAL_TOKENS, bert_config, save_char_bert

    vocab = list(SPECIAL_TOKENS) + list(chars)
    config = bert_config(
        len(vocab), hidden, layers, heads, intermediate=2 * hidden, max_positions=max_positions, dropout=0.1
    )
    torch.manual_seed(seed)
    return save_char_bert(out_dir, vocab, BertModel(config), max_length=max_positions)


def char_token_list(chars: str = CHARS) -> List[str]:
    """ESPnet char token list: <blank>, <unk>, <space>, the characters, <sos/eos>."""
    return ["<blank>", "<unk>", "<space>"] + list(chars) + ["<sos/eos>"]


def write_token_list(path: Path, tokens: Sequence[str]) -> Path:
    """One token per line, as ESPnet's token_list file."""
    Path(path).write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return Path(path)


def toy_transcripts(n: int, seed: int = 0, min_len: int = 2, max_len: int = 6) -> List[str]:
    """Random short transcripts over CHARS."""
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(CHARS), size=int(rng.integers(min_len, max_len + 1)))) for _ in range(n)]


def write_data_dir(
    out_dir: Path,
    texts: Dict[str, str],
    fs: int = 16000,
    seconds: float = 0.6,
    seed: int = 0,
) -> Path:
    """Kaldi-style dir (wav.scp, text, utt2spk, spk2utt) with one noisy-sine wav per utterance."""
    import soundfile

    out_dir = Path(out_dir)
    wav_dir = out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    wav_scp, text, utt2spk = [], [], []
    for i, (utt, transcript) in enumerate(sorted(texts.items())):
        n = int(fs * seconds * (1.0 + 0.25 * (i % 3)))
        t = np.arange(n) / fs
        freqs = rng.uniform(150, 1200, size=3)
        x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 6 + 0.05 * rng.standard_normal(n)
        path = wav_dir / f"{utt}.wav"
        soundfile.write(str(path), x.astype(np.float32), fs, subtype="PCM_16")
        wav_scp.append(f"{utt} {path}")
        text.append(f"{utt} {transcript}")
        utt2spk.append(f"{utt} {utt.split('_')[0]}")
    (out_dir / "wav.scp").write_text("\n".join(wav_scp) + "\n", encoding="utf-8")
    (out_dir / "text").write_text("\n".join(text) + "\n", encoding="utf-8")
    (out_dir / "utt2spk").write_text("\n".join(utt2spk) + "\n", encoding="utf-8")
    spk: Dict[str, List[str]] = {}
    for line in utt2spk:
        u, s = line.split()
        spk.setdefault(s, []).append(u)
    (out_dir / "spk2utt").write_text(
        "".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk.items())), encoding="utf-8"
    )
    return out_dir


# The tests' conformer encoder (in-process models and the YAML configs of the ESPnet runs), without dropout.
TINY_ENCODER_CONF: Dict = dict(
    output_size=32,
    attention_heads=2,
    linear_units=64,
    num_blocks=1,
    input_layer="conv2d",
    cnn_module_kernel=7,
    dropout_rate=0.0,
    positional_dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
TINY_ENCODER_YAML = "encoder: conformer\nencoder_conf: " + json.dumps(TINY_ENCODER_CONF) + "\n"


def tiny_model_kwargs(
    token_list: Sequence[str],
    input_size: int = 20,
    d_model: int = 32,
    plm_dim: Optional[int] = 32,
    blocks: int = 1,
    seed: int = 0,
) -> Dict:
    """Constructor kwargs shared by ESPnetASRModel and ESPnetOTModel: a seeded tiny conformer-CTC
    on features (no frontend), with the cakt_adapter postencoder unless plm_dim is None."""
    from espnet_ot.asr.model_parts import conformer_ctc_kwargs

    encoder_conf = dict(TINY_ENCODER_CONF, output_size=d_model, num_blocks=blocks)
    return conformer_ctc_kwargs(token_list, input_size, encoder_conf, plm_dim=plm_dim, seed=seed)


def build_tiny_ot_model(token_list: Sequence[str], alignment: str = "tot", adapter: bool = True, seed: int = 0, **conf):
    """A tiny ESPnetOTModel; `conf` is its model_conf (plm, alignment_conf, ...)."""
    from espnet_ot.asr.espnet_ot_model import ESPnetOTModel

    parts = tiny_model_kwargs(token_list, plm_dim=32 if adapter else None, seed=seed)
    return ESPnetOTModel(alignment=alignment, **parts, **conf)


def start_python(args: Sequence[str], cwd: Path, env=None) -> subprocess.Popen:
    """Start `python <args>` in a fresh interpreter (stdout/stderr captured as text)."""
    return subprocess.Popen(
        [PYTHON, *args],
        cwd=str(cwd),
        env=env or offline_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# seconds a spawned interpreter may run; ESPNET_OT_TEST_TIMEOUT raises it on a heavily loaded machine
SUBPROCESS_TIMEOUT = int(os.environ.get("ESPNET_OT_TEST_TIMEOUT", "600"))


def wait(proc: subprocess.Popen, timeout: int = SUBPROCESS_TIMEOUT) -> subprocess.CompletedProcess:
    """Wait for a started interpreter; CompletedProcess with its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\nKILLED after {timeout} s (timeout; ESPNET_OT_TEST_TIMEOUT=<seconds> raises it)\n"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_python(args: Sequence[str], cwd: Path, timeout: int = SUBPROCESS_TIMEOUT, env=None):
    """Run `python <args>` in a fresh interpreter; return the CompletedProcess (text mode)."""
    return wait(start_python(args, cwd, env), timeout)


# ------------------------------------------------------------------ OT inputs
def random_batch(la, lt, D=16, dtype=torch.float64, seed=0, La=None, Lt=None):
    """Random features padded to (B, La, D) / (B, Lt, D) (default: the longest) with prefix masks for the true
    lengths la / lt; one seeded generator draws x, then y."""
    g = torch.Generator().manual_seed(seed)
    La, Lt = La or max(la), Lt or max(lt)
    x = torch.randn(len(la), La, D, generator=g, dtype=dtype)
    y = torch.randn(len(lt), Lt, D, generator=g, dtype=dtype)
    mx = torch.arange(La)[None] < torch.tensor(la)[:, None]
    my = torch.arange(Lt)[None] < torch.tensor(lt)[:, None]
    return x, y, mx, my


def assert_marginals(P, mx, my, atol):
    """Rows of the coupling sum to 1/l_a, columns to 1/l_t on the real positions, and padding holds exactly 0."""
    la, lt = mx.sum(-1), my.sum(-1)
    rows, cols = P.sum(2), P.sum(1)
    assert torch.allclose(rows, mx.to(P.dtype) / la[:, None], atol=atol)
    assert torch.allclose(cols, my.to(P.dtype) / lt[:, None], atol=atol)
    pad = ~(mx.unsqueeze(2) & my.unsqueeze(1))
    assert P[pad].abs().max() == 0 if pad.any() else True
