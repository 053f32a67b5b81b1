"""Dump frozen-PLM features Z_L ([CLS] y [SEP]) or soft labels per utterance of a Kaldi `text` file into ark/scp.

Usage:
    python -m espnet_ot.bin.dump_plm_feats --text data/train/text --plm bert-base-chinese \
        --token_list data/token_list/char/tokens.txt --token_type char --output_dir dump/plm/train

then train with
    --train_data_path_and_name_and_type dump/plm/train/feats.scp,plm_feats,kaldi_ark
and the model uses these features instead of running the PLM. The soft labels of the distillation
(model_conf.distill_weight) come from `--kind mlm_soft_labels --token_list ...` and are read as
    --train_data_path_and_name_and_type dump/soft_labels/train/feats.scp,plm_soft_labels,kaldi_ark

Bad input ends in one line naming the argument (missing --text, unwritable --output_dir, a PLM directory
without its tokenizer, non-finite features of an utterance); the ark/scp are written under temporary names
and renamed when complete, so a failed run leaves the previous <name>.ark/.scp as they were.

With --token_list the transcript goes through ESPnet's own text preprocessing, as in training
(espnet_ot.asr.plm_dump.dump_plm_feats does the work).
"""

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet2.utils.types import str_or_none

from espnet_ot.asr.plm_config import PLMNotFoundError
from espnet_ot.asr.plm_dump import KINDS, MAX_UNK_SHARE, DumpError, dump_plm_feats


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text", type=Path, required=True, help="Kaldi text file: <utt> <transcript>")
    p.add_argument("--plm", required=True, help="Hugging Face name or local PLM directory")
    p.add_argument("--output_dir", type=Path, required=True, help="writes feats.ark/feats.scp")
    p.add_argument("--name", default="feats", help="basename of the ark/scp files")
    p.add_argument("--token_list", type=Path, default=None, help="ESPnet token list of the CTC")
    p.add_argument("--token_type", default="char", choices=["char", "bpe", "word", "hugging_face"])
    p.add_argument("--bpemodel", type=str_or_none, default=None, help="sentencepiece model or HF tokenizer name")
    p.add_argument("--non_linguistic_symbols", type=str_or_none, default=None)
    p.add_argument("--cleaner", type=str_or_none, default=None)
    p.add_argument("--token_hf_model", type=str_or_none, default=None, help="as model_conf.token_hf_model")
    p.add_argument("--plm_layer", type=int, default=-1, help="as model_conf.plm_layer")
    p.add_argument("--plm_max_length", type=int, default=None, help="as model_conf.plm_max_length")
    p.add_argument(
        "--kind",
        default="contextual",
        choices=KINDS,
        help="contextual: the papers' Z_L; masked: token j's row with token j replaced by [MASK]; "
        "context_free: each row = its token's mean Z_L over --means_text; mlm_soft_labels: the PLM's "
        "masked-LM prediction at each token over the CTC tokens (top --top_k; data key plm_soft_labels); "
        "identity_soft_labels: its one-hot control (the true token)",
    )
    p.add_argument(
        "--means_text",
        type=Path,
        default=None,
        help="with --kind context_free: the transcripts (training set) whose mean Z_L per token is used",
    )
    p.add_argument("--top_k", type=int, default=16, help="with the soft-label kinds: tokens kept per position")
    p.add_argument(
        "--max_unk_share",
        type=float,
        default=MAX_UNK_SHARE,
        help="with --token_list: the share of the text's tokens that may be missing from it (become <unk>, "
        "as in training) before the dump refuses the token list as the wrong one",
    )
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Write <output_dir>/<name>.ark and .scp with one (Lt, d_t) matrix per utterance."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # SIGTERM / SIGHUP (a killed job, a closed terminal) end the dump like Ctrl-C: its temporary files are removed
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        dump_plm_feats(**vars(args))
    except (DumpError, PLMNotFoundError, ValueError) as e:
        sys.exit(f"dump_plm_feats: error: {' '.join(str(e).split())}")
    except _Signalled as e:
        sys.exit(f"dump_plm_feats: stopped by signal {e.signum}; the previous dump (if any) is kept")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Signalled(BaseException):
    """A termination signal, raised where the dump is so that its cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame) -> None:
    raise _Signalled(signum)


if __name__ == "__main__":
    main(sys.argv[1:])
