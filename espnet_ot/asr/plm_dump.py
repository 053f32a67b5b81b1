"""Frozen-PLM features Z_L ([CLS] y [SEP]) of the transcripts of a Kaldi `text` file, dumped into kaldiio ark/scp.

CLI: ``python -m espnet_ot.bin.dump_plm_feats``. With a token list the transcript goes through ESPnet's own text
preprocessing (cleaner, tokenizer, token ids, exactly as in training) and then through the model's ids -> text
rule, so the features equal those of the on-the-fly path; without it, the raw transcript is used. Bad input
ends in :class:`DumpError` (one line naming the argument); the ark/scp are written under temporary names and
renamed when complete, so a failed dump leaves the previous <name>.ark/.scp as they were.
"""

import logging
import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_ot.asr.plm import PLMTextBranch
from espnet_ot.toy.kaldi_data import read_kaldi_text
from espnet_ot.utils.progress import progress

PLM_FIELD = "--plm"


class DumpError(ValueError):
    """Bad input of the dump (one line naming the argument)."""


def text_to_ids_fn(token_list: List[str], token_type: str = "char", bpemodel: Optional[str] = None,
                   cleaner: Optional[str] = None, non_linguistic_symbols: Optional[str] = None
                   ) -> Callable[[str, str], List[int]]:
    """ESPnet's training-time text preprocessing (CommonPreprocessor) as (utt, transcript) -> ids."""
    from espnet2.train.preprocessor import CommonPreprocessor

    pre = CommonPreprocessor(
        train=False,
        token_type=token_type,
        token_list=token_list,
        bpemodel=bpemodel or None,
        text_cleaner=cleaner or None,
        non_linguistic_symbols=non_linguistic_symbols or None,
    )
    return lambda utt, text: [int(i) for i in pre(utt, {"text": text})["text"]]


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_paths(text: Path, output_dir: Path, token_list: Optional[Path] = None) -> None:
    """Input files exist and the output directory is writable, before the PLM is loaded."""
    for flag, path in (("--text", text), ("--token_list", token_list)):
        if path is not None and not Path(path).is_file():
            raise DumpError(f"{flag} {path}: no such file")
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DumpError(f"--output_dir {output_dir}: cannot create it ({e.strerror or e})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise DumpError(f"--output_dir {output_dir}: not writable")


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


def dump_plm_feats(
    text: Path, plm: str, output_dir: Path, name: str = "feats", token_list: Optional[Path] = None,
    token_type: str = "char", bpemodel: Optional[str] = None, non_linguistic_symbols: Optional[str] = None,
    cleaner: Optional[str] = None, token_hf_model: Optional[str] = None, plm_layer: int = -1,
    plm_max_length: Optional[int] = None, masked: bool = False, batch_size: int = 32, device: str = "cpu",
    dtype: str = "float32",
) -> Tuple[int, Path]:
    """Write <output_dir>/<name>.ark and .scp, one (Lt, d_t) matrix per utterance of ``text``.

    ``plm``, ``plm_layer``, ``plm_max_length`` and ``token_hf_model`` are the model_conf options of the same
    names; ``token_list``, ``token_type``, ``bpemodel``, ``cleaner`` and ``non_linguistic_symbols`` those of
    training's text preprocessing. ``masked``: row j is the PLM's state with token j replaced by [MASK] (its
    expectation from context; an extension, not in the papers). Returns the number of utterances and the scp path.
    """
    import kaldiio

    output_dir = Path(output_dir)
    check_paths(text, output_dir, token_list)
    branch = PLMTextBranch(plm, layer=plm_layer, max_length=plm_max_length, field=PLM_FIELD).load()
    utts = list(read_kaldi_text(text).items())
    if token_list is not None:
        tokens = [t.rstrip("\n") for t in open(token_list, encoding="utf-8")]
        to_ids = text_to_ids_fn(tokens, token_type, bpemodel, cleaner, non_linguistic_symbols)
        detok = branch.detokenizer(tokens, token_type, token_hf_model or None)
        texts = [detok(to_ids(u, t)) for u, t in utts]
    else:
        texts = [" ".join(t.split()) for _, t in utts]

    ark = output_dir / f"{name}.ark"
    scp = output_dir / f"{name}.scp"
    ark_tmp, scp_tmp = ark.with_name(ark.name + ".tmp"), scp.with_name(scp.name + ".tmp")
    np_dtype = np.float16 if dtype == "float16" else np.float32
    write_fn = "numpy" if dtype == "float16" else None  # None: Kaldi float matrix
    n = 0
    try:
        with torch.no_grad(), kaldiio.WriteHelper(
            f"ark,scp:{ark_tmp},{scp_tmp}", write_function=write_fn
        ) as writer:
            chunks = batches(list(zip(utts, texts)), batch_size)
            encode = branch.encode_texts_masked if masked else branch.encode_texts
            for chunk in progress(chunks, total=len(utts), desc="dump_plm_feats", unit="utt", weight=len):
                z, lengths = encode([t for _, t in chunk], torch.device(device))
                z = z.cpu().numpy()
                for b, ((utt, _), sentence) in enumerate(chunk):
                    mat = finite_matrix(utt, z[b, : int(lengths[b])], np_dtype, f"{sentence!r} in {text}")
                    writer(utt, mat)
                    n += 1
        _replace_ark_path(scp_tmp, ark_tmp, ark, scp)
    finally:
        for tmp in (ark_tmp, scp_tmp):
            if tmp.exists():
                tmp.unlink()
    logging.info(f"Wrote Z_L of {n} utterances (width {branch.hidden_size}) to {scp}")
    return n, scp
