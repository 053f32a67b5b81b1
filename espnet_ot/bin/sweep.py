"""`python -m espnet_ot.bin.sweep`: the dev-only settings sweep of the toy study (run it before the study).

    python -m espnet_ot.bin.sweep [--out exp/study] [--cache exp/toy_world] [--methods ot_bert tot_cakt gm_ot]

Trains every variant of `espnet_ot.toy.study.SWEEP` once (one seed, ESPnet's asr_train, resumable), decodes the
dev set only (greedy CTC) and writes <out>/sweep.md, sweep.json and sweep.png with the lowest dev CER marked. Use
the same --out as the study: both share the data, the PLM features and the statistics.
"""

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_ot.toy.jobs import Console, JobFailed
from espnet_ot.toy.study import REPO_CONF, SWEEP, open_study


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("--out", type=Path, default=Path("exp/study"), help="data, dumps, experiments and reports")
    p.add_argument("--cache", type=Path, default=Path("exp/toy_world"), help="the toy corpus and PLM (built once)")
    p.add_argument("--conf_dir", type=Path, default=REPO_CONF, help="the base configs the variants patch (conf/demo)")
    p.add_argument("--methods", nargs="+", default=list(SWEEP), choices=list(SWEEP))
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (each gets cores/jobs threads)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    args = get_parser().parse_args(argv)
    console = Console("sweep")
    try:
        open_study(args.out, args.cache, args.conf_dir, args.jobs, console).run_sweep(args.methods)
    except (JobFailed, FileNotFoundError, ValueError) as e:
        print(f"sweep: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
