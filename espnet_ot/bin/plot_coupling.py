"""Plot OT / TOT / GM-OT couplings between a trained espnet_ot model's H_A and the PLM's Z_L (PNG, as TOT-CAKT Fig. 2).

One model, one panel per method (default ot, tot, gmot; its alignment_conf gives eps, beta, alpha, edges):

    python -m espnet_ot.bin.plot_coupling \\
        --asr_train_config exp/asr_x/config.yaml --asr_model_file exp/asr_x/valid.cer_ctc.ave.pth \\
        --wav a.wav --text 今天天气很好 --output coupling.png

Several models, one panel each (method: the model's own alignment unless --methods names one per model):

    python -m espnet_ot.bin.plot_coupling \\
        --asr_train_config exp/ot/config.yaml exp/tot/config.yaml exp/gmot/config.yaml \\
        --asr_model_file exp/ot/valid.cer_ctc.ave.pth exp/tot/valid.cer_ctc.ave.pth exp/gmot/valid.cer_ctc.ave.pth \\
        --labels OT-BERT TOT-CAKT GM-OT --data_dir data/dev --num_utts 3 --output_dir exp/coupling

Utterances come from --wav/--text or from an ESPnet/Kaldi data dir (wav.scp + text; --utt_ids or the first
--num_utts). Z_L comes from the PLM (--plm, default the config's model_conf.plm) or from precomputed features
(--plm_feats feats.scp of python -m espnet_ot.bin.dump_plm_feats). Only the encoder and the cakt_adapter run.
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from espnet_ot.asr.plot_coupling import plot_couplings
from espnet_ot.ot.config import METHODS


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def get_parser() -> argparse.ArgumentParser:
    """Command-line options (the keyword arguments of :func:`espnet_ot.asr.plot_coupling.plot_couplings`)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    p.add_argument("--asr_train_config", nargs="+", required=True, help="config.yaml of each trained model")
    p.add_argument("--asr_model_file", nargs="+", required=True, help="model .pth of each (same order)")
    p.add_argument("--labels", nargs="+", default=None, help="panel titles of the models")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=list(METHODS),
        help="one model: the panels' methods (default: ot tot gmot); several models: one method per model "
        "(default: each model's own model_conf.alignment)",
    )
    src = p.add_argument_group("utterances (either --wav/--text or --data_dir)")
    src.add_argument("--wav", type=Path, default=None, help="a 16 kHz wav file")
    src.add_argument("--text", default=None, help="its transcript (with --wav)")
    src.add_argument("--utt_id", default=None, help="name of the --wav utterance (default: the file stem)")
    src.add_argument("--data_dir", type=Path, default=None, help="ESPnet/Kaldi data dir with wav.scp and text")
    src.add_argument("--utt_ids", nargs="+", default=None, help="utterances of --data_dir to plot")
    src.add_argument("--num_utts", type=int, default=3, help="without --utt_ids: the first N of --data_dir")
    plm = p.add_argument_group("linguistic features Z_L")
    plm.add_argument("--plm", default=None, help="PLM name or directory (default: the config's model_conf.plm)")
    plm.add_argument("--plm_feats", type=Path, default=None, help="feats.scp written by dump_plm_feats")
    p.add_argument("--eps", type=_positive_float, default=None, help="override the models' alignment_conf eps")
    out = p.add_argument_group("output")
    out.add_argument("--output", type=Path, default=None, help="PNG path (one utterance only)")
    out.add_argument("--output_dir", type=Path, default=None, help="writes <utt_id>.png per utterance")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dpi", type=int, default=120)
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Write the PNGs; bad input ends in one line naming the argument."""
    from espnet_ot.asr.plm_config import PLMNotFoundError

    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        plot_couplings(**vars(args))
    except (ValueError, FileNotFoundError, KeyError, PLMNotFoundError) as e:
        print(f"plot_coupling: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
