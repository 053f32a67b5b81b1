"""`make demo`: the toy study with one seed: baseline, OT-BERT, TOT-CAKT and GM-OT on ESPnet, CER with CIs, couplings.

    python -m espnet_ot.bin.demo [--out exp/demo] [--cache exp/toy_world] [--seed 0] [--jobs 2] [--tiny]

Builds (or reuses) the toy world of `espnet_ot.toy.world` (corpus, then the PLM on every core),
trains the four systems of espnet_ot/toy/conf with ESPnet's asr_train (the settings chosen on dev by
`python -m espnet_ot.bin.sweep`), decodes dev and test (greedy CTC), and writes <out>/RESULTS.md: the
CER table with the paired-bootstrap 95% CI of each difference to the baseline and the error decomposition
(homophone / tone / other / deletion / insertion). Coupling pictures of a few dev utterances go to
<out>/coupling/. One seed shows the pipeline; the seed-level evidence is the study
(docs/results/toy_study.md). A rerun reuses everything that is finished.
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from espnet_ot.toy.jobs import Console, job_env, run_logged
from espnet_ot.toy.study import Study, run_or_exit
from espnet_ot.toy.world import CORPUS, PLM, TINY_CORPUS, TINY_PLM, TOY_CONF, build_corpus, build_plm

SYSTEMS = ("baseline", "ot_bert", "tot_cakt", "gm_ot")
TINY_TRAIN_ARGS = [
    "--encoder_conf",
    "output_size=32",
    "--encoder_conf",
    "linear_units=32",
    "--encoder_conf",
    "num_blocks=1",
    "--encoder_conf",
    "attention_heads=2",
    "--max_epoch",
    "1",
    "--keep_nbest_models",
    "1",
]


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    p.add_argument("--out", type=Path, default=Path("exp/demo"), help="data, dumps, experiments and RESULTS.md")
    p.add_argument(
        "--cache", type=Path, default=None, help="toy corpus and PLM (default exp/toy_world; tiny: <out>/cache)"
    )
    p.add_argument("--conf_dir", type=Path, default=TOY_CONF, help="the four systems' configs")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--jobs", type=int, default=2, help="jobs at once (each gets cores/jobs threads)")
    p.add_argument("--num_plots", type=int, default=3, help="dev utterances with a coupling picture")
    p.add_argument("--tiny", action="store_true", help="a very small, fast setting (for the test suite)")
    return p


def plot_couplings(study: Study, runs, num: int, console: Console) -> str:
    """OT | TOT | GM-OT couplings of the trained models on the first dev utterances (plot_coupling CLI)."""
    x = study.x
    out = x.out / "coupling"
    if num < 1:
        return "no coupling pictures (--num_plots 0)"
    cmd: List = [
        sys.executable,
        "-m",
        "espnet_ot.bin.plot_coupling",
        "--asr_train_config",
        *[x.run_dir(r) / "config.yaml" for r in runs],
        "--asr_model_file",
        *[x.model_file(r) for r in runs],
        "--labels",
        *[study.methods[r.name.split("/")[1]].title for r in runs],
        "--plm_feats",
        x.feats_scp("plm", "dev"),
        "--data_dir",
        x.data / "dev",
        "--num_utts",
        str(num),
        "--output_dir",
        out,
    ]
    run_logged(
        cmd,
        x.out / "coupling.log",
        console,
        job_env(x.threads),
        "coupling",
        echo=lambda line: line.startswith("plot_coupling:"),
    )
    return f"{len(list(out.glob('*.png')))} PNGs in {out}"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    args = get_parser().parse_args(argv)
    console = Console("demo")
    corpus_opts, plm_opts = (TINY_CORPUS, TINY_PLM) if args.tiny else (CORPUS, PLM)
    cache = (args.cache or (args.out / "cache" if args.tiny else Path("exp/toy_world"))).resolve()

    def go() -> None:
        corpus = cache / "corpus"
        study = Study(
            args.out,
            corpus,
            cache / "plm",
            plm_opts["hidden"],
            jobs=args.jobs,
            conf_dir=args.conf_dir,
            console=console,
            train_args=TINY_TRAIN_ARGS if args.tiny else (),
        )
        study.phase("corpus", lambda: str(build_corpus(corpus, corpus_opts, console)))()
        # the PLM on every core first, then the four trainings `jobs` at a time: faster than a one-thread PLM
        # beside the baseline, after which one core would idle until the PLM is done
        study.phase("plm", lambda: str(build_plm(cache / "plm", corpus, plm_opts, console)))()
        study.run_study([args.seed], SYSTEMS)
        runs = [study.study_runs([args.seed], [m])[m][0] for m in SYSTEMS if m != "baseline"]
        study.phase("coupling", lambda: plot_couplings(study, runs, args.num_plots, console))()
        console.line(
            f"finished: {study.x.out / 'RESULTS.md'}, {study.x.out / 'coupling'}; one seed only: the "
            "evidence over seeds, with controls, is docs/results/toy_study.md (python -m espnet_ot.bin.study)"
        )

    run_or_exit("demo", go)


if __name__ == "__main__":
    main()
