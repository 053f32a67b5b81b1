"""`python -m espnet_ot.bin.transfer_study`: the pre-registered transfer study on the toy (warm starts, arms A-E0).

    python -m espnet_ot.bin.transfer_study --out EXP --cache exp/toy_world --replicates 2      # the pilot (dev)
    python -m espnet_ot.bin.transfer_study --out EXP --cache exp/toy_world --replicates 12     # the study (dev)
    python -m espnet_ot.bin.transfer_study --out EXP --cache exp/toy_world --replicates 12 --final   # test, once

Follows docs/results/transfer_protocol.md: two warm starts (the baseline trained 12 epochs), then every arm
fine-tuned from each warm start with data-order seeds; a replicate (warm start, seed) is shared by all arms.
Resumable: a rerun skips finished trainings and resumes the others. Dev is decoded as trainings finish; test
only with --final, after every training. Writes EXP/transfer_study.json, .md and .png (and EXP/records.json, one
entry per finished run). Keep EXP outside the work tree and run from a git worktree of its own.
"""

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from espnet_ot.toy.jobs import Console
from espnet_ot.toy.study import add_study_arguments, open_study, run_or_exit
from espnet_ot.toy.transfer import ARM_KEYS, TransferStudy
from espnet_ot.toy.transfer_report import conclusions, transfer_figure, transfer_markdown


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    add_study_arguments(p)
    p.add_argument("--replicates", type=int, default=2, help="the first N replicates of the protocol's order")
    p.add_argument("--arms", nargs="+", default=list(ARM_KEYS), choices=ARM_KEYS)
    p.add_argument("--final", action="store_true", help="decode test once per model (after every training)")
    p.add_argument("--report_only", action="store_true", help="train nothing: report what is finished")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    args = get_parser().parse_args(argv)
    console = Console("transfer")

    def go():
        study = open_study(args.out, args.cache, args.conf_dir, args.jobs, console)
        transfer = TransferStudy(study.x, study.conf_dir, args.jobs, console)
        if args.final:
            transfer.final(args.arms, args.replicates)
        elif not args.report_only:
            transfer.train(args.arms, args.replicates)
        summary = transfer.report(args.arms, args.replicates)
        summary["conclusions"] = conclusions(summary)
        out = Path(args.out)
        (out / "transfer_study.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (out / "transfer_study.md").write_text(transfer_markdown(summary), encoding="utf-8")
        transfer_figure(summary, out / "transfer_study.png", "test" if summary["comparisons"] else "dev")
        console.raw(transfer_markdown(summary))

    run_or_exit("transfer_study", go)


if __name__ == "__main__":
    main()
