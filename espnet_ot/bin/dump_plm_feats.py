"""Dump frozen-PLM features Z_L ([CLS] y [SEP]) per utterance of a Kaldi `text` file into kaldiio ark/scp.

Usage:
    python -m espnet_ot.bin.dump_plm_feats --text data/train/text --plm bert-base-chinese \
        --token_list data/token_list/char/tokens.txt --token_type char --output_dir dump/plm/train

then train with
    --train_data_path_and_name_and_type dump/plm/train/feats.scp,plm_feats,kaldi_ark
and the model uses these features instead of running the PLM.

Bad input ends in one line naming the argument (missing --text, unwritable --output_dir, a PLM directory
without its tokenizer, non-finite features of an utterance); the ark/scp are written under temporary names
and renamed when complete, so a failed run leaves the previous <name>.ark/.scp as they were.

With --token_list the transcript goes through ESPnet's own text preprocessing (cleaner,
tokenizer, token ids, exactly as in training) and then through the model's ids -> text rule,
so the features equal those of the on-the-fly path. Without it, the raw transcript is used.
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from espnet2.utils.types import str2bool

from espnet_ot.asr.plm import PLMNotFoundError, PLMTextBranch
from espnet_ot.utils.progress import progress

PLM_FIELD = "--plm"


def read_text(path: Path) -> Iterator[Tuple[str, str]]:
    """(utt_id, transcript) pairs of a Kaldi text file; the transcript may be empty."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            yield parts[0], parts[1] if len(parts) > 1 else ""


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text", type=Path, required=True, help="Kaldi text file: <utt> <transcript>")
    p.add_argument("--plm", required=True, help="Hugging Face name or local PLM directory")
    p.add_argument("--output_dir", type=Path, required=True, help="writes feats.ark/feats.scp")
    p.add_argument("--name", default="feats", help="basename of the ark/scp files")
    p.add_argument("--token_list", type=Path, default=None, help="ESPnet token list of the CTC")
    p.add_argument(
        "--token_type", default="char", choices=["char", "bpe", "word", "hugging_face"]
    )
    p.add_argument("--bpemodel", default=None, help="sentencepiece model or HF tokenizer name")
    p.add_argument("--non_linguistic_symbols", default=None)
    p.add_argument("--cleaner", default=None)
    p.add_argument("--token_hf_model", default=None, help="as model_conf.token_hf_model")
    p.add_argument("--plm_layer", type=int, default=-1, help="as model_conf.plm_layer")
    p.add_argument("--plm_max_length", type=int, default=None, help="as model_conf.plm_max_length")
    p.add_argument("--masked", type=str2bool, default=False,
                   help="token j's Z_L with token j replaced by [MASK] (the PLM's expectation from context; "
                   "an extension, not in the papers)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    return p


def _none(value: Optional[str]) -> Optional[str]:
    return None if value in (None, "", "none", "None", "null") else value


def text_to_ids_fn(args: argparse.Namespace, token_list: List[str]):
    """ESPnet's training-time text preprocessing (CommonPreprocessor) as transcript -> ids."""
    from espnet2.train.preprocessor import CommonPreprocessor

    pre = CommonPreprocessor(
        train=False,
        token_type=args.token_type,
        token_list=token_list,
        bpemodel=_none(args.bpemodel),
        text_cleaner=_none(args.cleaner),
        non_linguistic_symbols=_none(args.non_linguistic_symbols),
    )
    return lambda utt, text: [int(i) for i in pre(utt, {"text": text})["text"]]


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DumpError(ValueError):
    """Bad input of the dump (one line naming the argument)."""


def check_paths(args: argparse.Namespace) -> None:
    """Input files exist and the output directory is writable, before the PLM is loaded."""
    for flag, path in (("--text", args.text), ("--token_list", args.token_list)):
        if path is not None and not path.is_file():
            raise DumpError(f"{flag} {path}: no such file")
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DumpError(f"--output_dir {args.output_dir}: cannot create it ({e.strerror or e})") from None
    if not os.access(args.output_dir, os.W_OK | os.X_OK):
        raise DumpError(f"--output_dir {args.output_dir}: not writable")


def finite_matrix(utt: str, z: np.ndarray, dtype: type, source: str) -> np.ndarray:
    """`z` as `dtype`; one-line error naming the utterance if it holds NaN or Inf."""
    if not np.isfinite(z).all():
        raise DumpError(
            f"utterance {utt}: the PLM gave non-finite features (NaN/Inf) for {source}; check the PLM's "
            "weights (e.g. load it with transformers and run it on this transcript)"
        )
    with np.errstate(over="ignore"):
        out = z.astype(dtype)
    if not np.isfinite(out).all():
        raise DumpError(f"utterance {utt}: features overflow {np.dtype(dtype).name}; use --dtype float32")
    return out


def _replace_ark_path(scp_tmp: Path, ark_tmp: Path, ark: Path, scp: Path) -> None:
    """Write `scp` from `scp_tmp`, pointing at `ark` instead of `ark_tmp` (atomically)."""
    prefix = f"{ark_tmp}:"
    lines = []
    with open(scp_tmp, encoding="utf-8") as f:
        for line in f:
            utt, loc = line.rstrip("\n").split(" ", 1)
            assert loc.startswith(prefix), loc
            lines.append(f"{utt} {ark}:{loc[len(prefix):]}\n")
    tmp = scp.with_name(scp.name + ".tmp2")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(ark_tmp, ark)
    os.replace(tmp, scp)
    os.remove(scp_tmp)


def dump(args: argparse.Namespace) -> Tuple[int, Path]:
    """Write <output_dir>/<name>.ark and .scp; returns the number of utterances and the scp path."""
    import kaldiio

    check_paths(args)
    branch = PLMTextBranch(
        args.plm, layer=args.plm_layer, max_length=args.plm_max_length, field=PLM_FIELD
    ).load()
    utts = list(read_text(args.text))
    if args.token_list is not None:
        token_list = [t.rstrip("\n") for t in open(args.token_list, encoding="utf-8")]
        to_ids = text_to_ids_fn(args, token_list)
        detok = branch.detokenizer(token_list, args.token_type, _none(args.token_hf_model))
        texts = [detok(to_ids(u, t)) for u, t in utts]
    else:
        texts = [" ".join(t.split()) for _, t in utts]

    ark = args.output_dir / f"{args.name}.ark"
    scp = args.output_dir / f"{args.name}.scp"
    ark_tmp, scp_tmp = ark.with_name(ark.name + ".tmp"), scp.with_name(scp.name + ".tmp")
    dtype = np.float16 if args.dtype == "float16" else np.float32
    write_fn = "numpy" if args.dtype == "float16" else None  # None: Kaldi float matrix
    n = 0
    try:
        with torch.no_grad(), kaldiio.WriteHelper(
            f"ark,scp:{ark_tmp},{scp_tmp}", write_function=write_fn
        ) as writer:
            chunks = batches(list(zip(utts, texts)), args.batch_size)
            encode = branch.encode_texts_masked if args.masked else branch.encode_texts
            for chunk in progress(chunks, total=len(utts), desc="dump_plm_feats", unit="utt", weight=len):
                z, lengths = encode([t for _, t in chunk], torch.device(args.device))
                z = z.cpu().numpy()
                for b, ((utt, _), text) in enumerate(chunk):
                    mat = finite_matrix(utt, z[b, : int(lengths[b])], dtype, f"{text!r} in {args.text}")
                    writer(utt, mat)
                    n += 1
        _replace_ark_path(scp_tmp, ark_tmp, ark, scp)
    finally:
        for tmp in (ark_tmp, scp_tmp):
            if tmp.exists():
                tmp.unlink()
    logging.info(f"Wrote Z_L of {n} utterances (width {branch.hidden_size}) to {scp}")
    return n, scp


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Write <output_dir>/<name>.ark and .scp with one (Lt, d_t) matrix per utterance."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        dump(args)
    except (DumpError, PLMNotFoundError, ValueError) as e:
        sys.exit(f"dump_plm_feats: error: {' '.join(str(e).split())}")


if __name__ == "__main__":
    main(sys.argv[1:])
