"""The toy world shared by the demo, the sweep and the study: its corpus and PLM options, built once and cached."""

import os
import sys
from pathlib import Path
from typing import Any, Dict

from espnet_ot.toy.jobs import Console, job_env, run_logged
from espnet_ot.utils.config_files import plm_width  # noqa: F401 (re-exported: local/config_plm.py)

# The systems' training configs (baseline, OT-BERT, TOT-CAKT, GM-OT) of the demo, the sweep, the study and the
# recipe's run_toy.sh: package data (setup.py), so that a non-editable install has them too.
TOY_CONF = Path(__file__).resolve().parent / "conf"
# Monotone speakers (eSpeak pitch range 0): the lexical tones are not in the pitch, so telling same-syllable
# characters apart takes context, which is what a language model knows. Sentences of 8-20 characters (AISHELL-1
# averages about 14) over the 500 most frequent news characters, so that most characters have homophones.
CORPUS: Dict[str, Any] = dict(
    num_train=3000,
    num_dev=500,
    num_test=500,
    speakers=(12, 4, 4),
    max_chars=500,
    min_len=8,
    max_len=20,
    pitch_range=0,
    seed=0,
)
# A 3-layer, 192-wide BERT trained with masked LM on the news text (the toy dev/test sentences excluded).
PLM: Dict[str, Any] = dict(
    layers=3, hidden=192, heads=4, mask_prob=0.25, lr=1.5e-3, batch_tokens=4096, steps=1200, seed=0
)
TINY_CORPUS: Dict[str, Any] = dict(
    num_train=24, num_dev=4, num_test=4, speakers=(2, 1, 1), max_chars=200, min_len=4, max_len=8, pitch_range=0, seed=0
)
TINY_PLM: Dict[str, Any] = dict(
    layers=1, hidden=32, heads=2, mask_prob=0.25, lr=1.5e-3, batch_tokens=512, steps=3, seed=0, heldout=200
)


def _flags(options: Dict[str, Any]) -> list:
    out = []
    for key, value in options.items():
        flag = f"--{key}"
        out += [flag, *map(str, value)] if isinstance(value, (tuple, list)) else [flag, str(value)]
    return out


def build_corpus(dst: Path, options: Dict[str, Any], console: Console, threads: int = 2) -> Path:
    """python -m espnet_ot.bin.make_toy_corpus (reused when dst holds one made with the same options)."""
    cmd = [
        sys.executable,
        "-m",
        "espnet_ot.bin.make_toy_corpus",
        "--out",
        dst,
        *_flags(options),
        "--num_workers",
        str(max(1, threads)),
        "--force",
    ]
    run_logged(
        cmd,
        dst.parent / "log" / "corpus.log",
        console,
        job_env(threads),
        "corpus",
        echo=lambda line: line.startswith("make_toy_corpus:"),
    )
    return dst


def build_plm(dst: Path, corpus: Path, options: Dict[str, Any], console: Console, threads: int = 0) -> Path:
    """python -m espnet_ot.bin.pretrain_toy_plm (reused when dst holds one trained with the same options).

    threads: torch threads of the training (0: every core; it runs alone, before the trainings that need it).
    """
    threads = threads or os.cpu_count() or 1
    cmd = [
        sys.executable,
        "-m",
        "espnet_ot.bin.pretrain_toy_plm",
        "--out",
        dst,
        "--corpus",
        corpus,
        *_flags(options),
        "--threads",
        str(threads),
        "--force",
    ]
    run_logged(
        cmd,
        dst.parent / "log" / "plm.log",
        console,
        job_env(threads),
        "plm",
        echo=lambda line: (
            line.startswith("pretrain_toy_plm:") and any(k in line for k in ("accuracy", "reusing", " step "))
        ),
    )
    return dst
