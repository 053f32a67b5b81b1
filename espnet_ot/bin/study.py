"""`python -m espnet_ot.bin.study`: seeds x {baseline, OT-BERT, TOT-CAKT, GM-OT} + controls on the toy, with CIs.

    python -m espnet_ot.bin.study [--out exp/study] [--cache exp/toy_world] [--seeds 1 2 3] [--jobs 2]

Builds (or reuses) the toy corpus and PLM, trains every system of conf/demo (settings chosen on dev by
`python -m espnet_ot.bin.sweep` with the same --out) with ESPnet's asr_train for every seed (a rerun
skips finished trainings and resumes unfinished ones), decodes dev and test once per model (greedy CTC) and
writes <out>/RESULTS.md, <out>/summary.json and <out>/cer.png.
"""

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_ot.toy.jobs import Console, JobFailed
from espnet_ot.toy.study import METHOD_NAMES, REPO_CONF, open_study


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("--out", type=Path, default=Path("exp/study"), help="data, dumps, experiments and reports")
    p.add_argument("--cache", type=Path, default=Path("exp/toy_world"), help="the toy corpus and PLM (built once)")
    p.add_argument("--conf_dir", type=Path, default=REPO_CONF, help="the systems' base configs (conf/demo)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds")
    p.add_argument("--control_seeds", type=int, nargs="+", default=None, help="seeds of the controls (default: --seeds)")
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (each gets cores/jobs threads)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    args = get_parser().parse_args(argv)
    console = Console("study")
    try:
        study = open_study(args.out, args.cache, args.conf_dir, args.jobs, console)
        study.run_study(args.seeds, args.methods, control_seeds=args.control_seeds)
    except (JobFailed, FileNotFoundError, ValueError) as e:
        print(f"study: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
