"""`python -m espnet_ot.bin.study`: seeds x {baseline, OT-BERT, TOT-CAKT, GM-OT} + controls on the toy, with CIs.

    python -m espnet_ot.bin.study [--out exp/study] [--cache exp/toy_world] [--seeds 1 2 3] [--jobs 2]

Builds (or reuses) the toy corpus and PLM, trains every system of espnet_ot/toy/conf (settings chosen on dev by
`python -m espnet_ot.bin.sweep` with the same --out) with ESPnet's asr_train for every seed (a rerun
skips finished trainings and resumes unfinished ones), decodes dev and test once per model (greedy CTC) and
writes <out>/RESULTS.md, <out>/summary.json and <out>/cer.png.
"""

import argparse
from typing import Optional, Sequence

from espnet_ot.toy.jobs import Console
from espnet_ot.toy.study import METHOD_NAMES, add_study_arguments, open_study, run_or_exit


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    add_study_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="training seeds")
    p.add_argument(
        "--control_seeds", type=int, nargs="+", default=None, help="seeds of the controls (default: --seeds)"
    )
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES), choices=METHOD_NAMES)
    p.add_argument(
        "--report_only",
        action="store_true",
        help="train nothing: report the finished runs (and say which seeds are missing)",
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    args = get_parser().parse_args(argv)
    console = Console("study")

    def go():
        study = open_study(args.out, args.cache, args.conf_dir, args.jobs, console)
        if args.report_only:
            study.report_finished(args.seeds, args.methods, control_seeds=args.control_seeds)
        else:
            study.run_study(args.seeds, args.methods, control_seeds=args.control_seeds)

    run_or_exit("study", go)


if __name__ == "__main__":
    main()
