"""`python -m espnet_ot.bin.sweep`: the dev-only settings sweep of the toy study (run it before the study).

    python -m espnet_ot.bin.sweep [--out exp/study] [--cache exp/toy_world] [--methods ot_bert tot_cakt gm_ot ...]

Trains every variant of `espnet_ot.toy.study.SWEEP` once (one seed, ESPnet's asr_train, resumable), decodes the
dev set only (greedy CTC) and writes <out>/sweep.md, sweep.json and sweep.png with the lowest dev CER marked. Use
the same --out as the study: both share the data, the PLM features and the statistics.
"""

import argparse
from typing import Optional, Sequence

from espnet_ot.toy.jobs import Console
from espnet_ot.toy.study import SWEEP, add_study_arguments, open_study, run_or_exit


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    add_study_arguments(p)
    p.add_argument("--methods", nargs="+", default=list(SWEEP), choices=list(SWEEP))
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    args = get_parser().parse_args(argv)
    console = Console("sweep")
    run_or_exit(
        "sweep", lambda: open_study(args.out, args.cache, args.conf_dir, args.jobs, console).run_sweep(args.methods)
    )


if __name__ == "__main__":
    main()
