"""`python -m espnet_ot.bin.greedy_ctc_decode`: greedy CTC decoding of wav.scp files into Kaldi text files."""

import argparse
from pathlib import Path
from typing import Optional, Sequence

from espnet2.fileio.read_text import read_2columns_text

from espnet_ot.toy.decode import greedy_ctc_decode, load_asr_model


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the training config.yaml of the model")
    p.add_argument("--model_file", required=True, help="the checkpoint (.pth)")
    p.add_argument("--wav_scp", action="append", required=True, help="a wav.scp to decode (repeatable)")
    p.add_argument("--output", action="append", required=True, help="the text file of each --wav_scp")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    args = get_parser().parse_args(argv)
    if len(args.wav_scp) != len(args.output):
        raise SystemExit("greedy_ctc_decode: error: give one --output per --wav_scp")
    model = load_asr_model(args.config, args.model_file)
    for scp, output in zip(args.wav_scp, args.output):
        hyps = greedy_ctc_decode(model, read_2columns_text(Path(scp)))
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(f"{u} {hyps[u]}\n" for u in sorted(hyps)), encoding="utf-8")
        tmp.rename(out)
        print(f"greedy_ctc_decode: {len(hyps)} utterances of {scp} -> {out}", flush=True)


if __name__ == "__main__":
    main()
