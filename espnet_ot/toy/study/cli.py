"""What the toy study's command-line tools (demo, sweep, study, transfer_study) share: options, the Study of the cached
toy world, and one-line errors."""

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from espnet_ot.toy.extra import PACKAGES, ToyExtraMissing, require
from espnet_ot.toy.jobs import Console, JobFailed
from espnet_ot.toy.study.runner import Study
from espnet_ot.toy.world import CORPUS, PLM, TOY_CONF, build_corpus, build_plm
from espnet_ot.utils.config_files import plm_width


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    """The options the sweep and the study CLIs share: where they write, the toy world's cache, configs, jobs."""
    p.add_argument("--out", type=Path, default=Path("exp/study"), help="data, dumps, experiments and reports")
    p.add_argument("--cache", type=Path, default=Path("exp/toy_world"), help="the toy corpus and PLM (built once)")
    p.add_argument("--conf_dir", type=Path, default=TOY_CONF, help="the systems' base configs (espnet_ot/toy/conf)")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (each gets cores/jobs threads)")


def run_or_exit(prog: str, fn: Callable[[], Any]) -> None:
    """fn() once the toy extra is found; a missing package of the extra, a failed job or a bad path/option ends the
    program with one line ``<prog>: error: ...``."""
    try:
        require(*PACKAGES)  # corpus, PLM and report need all of them: fail before hours of work, not after
        fn()
    except (JobFailed, FileNotFoundError, ValueError, ToyExtraMissing) as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def open_study(
    out: Path, cache: Path, conf_dir: Path = TOY_CONF, jobs: int = 2, console: Optional[Console] = None
) -> Study:
    """The Study of the toy world cached in ``cache`` (corpus and PLM built there first if missing)."""
    console = console or Console("study")
    corpus = build_corpus(Path(cache).resolve() / "corpus", CORPUS, console)
    plm = build_plm(Path(cache).resolve() / "plm", corpus, PLM, console)
    return Study(out, corpus, plm, plm_width(plm), jobs=jobs, conf_dir=conf_dir, console=console)
