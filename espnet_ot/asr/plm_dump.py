"""Frozen-PLM data of the transcripts of a Kaldi `text` file, dumped into kaldiio ark/scp: Z_L or soft labels.

CLI: ``python -m espnet_ot.bin.dump_plm_feats``. Kinds (``--kind``): ``contextual`` (the papers' Z_L of
[CLS] y [SEP]), ``masked`` (row j with token j replaced by [MASK]), ``context_free`` (row j = the mean Z_L of
token j's PLM token over the ``--means_text`` transcripts: identity without context), ``mlm_soft_labels`` (the
PLM's masked-LM prediction at each token over the CTC tokens, top k: :mod:`espnet_ot.asr.soft_labels`) and
``identity_soft_labels`` (its one-hot control). With a token list the transcript goes through ESPnet's own text
preprocessing (cleaner, tokenizer, token ids, exactly as in training) and then through the model's ids -> text
rule, so the features equal those of the on-the-fly path; without it, the raw transcript is used. Bad input
ends in :class:`DumpError` (one line naming the argument); the ark/scp are written under temporary names and
renamed when complete, so a failed dump leaves the previous <name>.ark/.scp as they were.
"""

import logging
import os
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from espnet_ot.asr.plm import PLMTextBranch
from espnet_ot.asr.soft_labels import CTCVocabMap, identity_soft_labels, masked_lm_soft_labels
from espnet_ot.utils.progress import progress

PLM_FIELD = "--plm"
Z_L_KINDS = ("contextual", "masked", "context_free")
SOFT_LABEL_KINDS = ("mlm_soft_labels", "identity_soft_labels")
KINDS = Z_L_KINDS + SOFT_LABEL_KINDS
# default share of a text's tokens that may be <unk> in the CTC token list before the dump refuses it: a few
# characters unseen in training are normal in a dev set (training maps them to <unk> too); more means the wrong list
MAX_UNK_SHARE = 0.05


class DumpError(ValueError):
    """Bad input of the dump (one line naming the argument)."""


def text_to_ids_fn(
    token_list: List[str],
    token_type: str = "char",
    bpemodel: Optional[str] = None,
    cleaner: Optional[str] = None,
    non_linguistic_symbols: Optional[str] = None,
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
            lines.append(f"{utt} {ark}:{loc[len(prefix) :]}\n")
    tmp = scp.with_name(scp.name + ".tmp2")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(ark_tmp, ark)
    os.replace(tmp, scp)
    os.remove(scp_tmp)


def read_text(path: Path, flag: str = "--text") -> List[Tuple[str, str]]:
    """(utt, transcript) pairs of a Kaldi text file (ESPnet's reader: a duplicated utterance id is an error)."""
    from espnet2.fileio.read_text import read_2columns_text

    try:
        pairs = list(read_2columns_text(path).items())
    except RuntimeError as e:  # ESPnet's "<utt> is duplicated (<path>:<line>)"
        raise DumpError(f"{flag} {path}: utterance {e}; keep one line per utterance id") from None
    except UnicodeDecodeError as e:
        raise DumpError(f"{flag} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not pairs:
        raise DumpError(f"{flag} {path}: no utterance in it; nothing to dump (the previous dump is kept)")
    return pairs


class _TokenMeans:
    """Mean Z_L row of every PLM token id over a set of transcripts (the context-free code of each token)."""

    def __init__(self, branch: PLMTextBranch, texts: Sequence[str], batch_size: int, device: str):
        sums: Dict[int, torch.Tensor] = {}
        counts: Dict[int, int] = {}
        for chunk in progress(
            batches(list(texts), batch_size), total=len(texts), desc="token means", unit="utt", weight=len
        ):
            z, lengths = branch.encode_texts(chunk, torch.device(device))
            ids, _ = branch.tokenize(chunk)
            for b in range(len(chunk)):
                for j in range(int(lengths[b])):
                    t = int(ids[b, j])
                    sums[t] = sums[t] + z[b, j].cpu() if t in sums else z[b, j].cpu().clone()
                    counts[t] = counts.get(t, 0) + 1
        self.means = {t: sums[t] / counts[t] for t in sums}
        self.fallback = torch.stack(list(sums.values())).sum(0) / sum(counts.values())
        self.unseen: Dict[int, int] = {}

    def rows(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(ids.size(0), ids.size(1), self.fallback.numel())
        for b in range(ids.size(0)):
            for j in range(int(lengths[b])):
                t = int(ids[b, j])
                if t not in self.means:
                    self.unseen[t] = self.unseen.get(t, 0) + 1
                out[b, j] = self.means.get(t, self.fallback)
        return out


def dump_plm_feats(
    text: Path,
    plm: str,
    output_dir: Path,
    name: str = "feats",
    token_list: Optional[Path] = None,
    token_type: str = "char",
    bpemodel: Optional[str] = None,
    non_linguistic_symbols: Optional[str] = None,
    cleaner: Optional[str] = None,
    token_hf_model: Optional[str] = None,
    plm_layer: int = -1,
    plm_max_length: Optional[int] = None,
    kind: str = "contextual",
    means_text: Optional[Path] = None,
    top_k: int = 16,
    batch_size: int = 32,
    device: str = "cpu",
    dtype: str = "float32",
    max_unk_share: float = MAX_UNK_SHARE,
) -> Tuple[int, Path]:
    """Write <output_dir>/<name>.ark and .scp, one matrix per utterance of ``text`` (rows: [CLS] y [SEP]).

    ``plm``, ``plm_layer``, ``plm_max_length`` and ``token_hf_model`` are the model_conf options of the same
    names; ``token_list``, ``token_type``, ``bpemodel``, ``cleaner`` and ``non_linguistic_symbols`` those of
    training's text preprocessing. ``kind`` (module docstring): the Z_L kinds give (L_t, d_t) matrices, the
    soft-label kinds (L_t, 2 top_k) ones (they need ``token_list``); ``context_free`` needs ``means_text``
    (the training transcripts). Returns the number of utterances and the scp path.
    """
    import kaldiio

    output_dir = Path(output_dir)
    if kind not in KINDS:
        raise DumpError(f"--kind {kind}: use one of {', '.join(KINDS)}")
    if batch_size < 1:
        raise DumpError(f"--batch_size {batch_size}: must be a positive number of utterances")
    if kind in SOFT_LABEL_KINDS and (token_list is None or top_k < 1):
        raise DumpError(f"--kind {kind}: needs --token_list (the CTC tokens the labels are over) and --top_k >= 1")
    if kind == "context_free" and means_text is None:
        raise DumpError(
            "--kind context_free: needs --means_text (the training transcripts whose mean Z_L per "
            "token replaces each row)"
        )
    if "/" in name or name in ("", ".", ".."):
        raise DumpError(f"--name {name!r}: a file name without '/' (the files go into --output_dir)")
    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise DumpError(f"--device {device}: not a torch device; use cpu or cuda (cuda:N)") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise DumpError(f"--device {device}: no CUDA GPU is visible to torch here; use --device cpu")
    check_paths(text, output_dir, token_list)
    utts = read_text(text)
    means_utts = read_text(means_text, "--means_text") if kind == "context_free" else []
    branch = PLMTextBranch(plm, layer=plm_layer, max_length=plm_max_length, field=PLM_FIELD).load()

    def to_plm_text(utt: str, t: str) -> str:
        return " ".join(t.split())

    tokens: List[str] = []
    if token_list is not None:
        tokens = [t.rstrip("\n") for t in open(token_list, encoding="utf-8")]
        if not any(t.strip() for t in tokens):
            raise DumpError(f"--token_list {token_list}: empty; give the CTC token list of training")
        to_ids = text_to_ids_fn(tokens, token_type, bpemodel, cleaner, non_linguistic_symbols)
        detok = branch.detokenizer(tokens, token_type, token_hf_model or None)
        check_unknown(utts, to_ids, tokens, token_list, token_type, max_unk_share)
        to_plm_text = lambda utt, t: detok(to_ids(utt, t))  # noqa: E731
    texts = [to_plm_text(u, t) for u, t in utts]

    encode = _encoder(branch, kind, tokens, top_k, batch_size, device, [to_plm_text(u, t) for u, t in means_utts])
    ark = output_dir / f"{name}.ark"
    scp = output_dir / f"{name}.scp"
    ark_tmp, scp_tmp = ark.with_name(ark.name + ".tmp"), scp.with_name(scp.name + ".tmp")
    np_dtype = np.float16 if dtype == "float16" and kind in Z_L_KINDS else np.float32
    write_fn = "numpy" if np_dtype == np.float16 else None  # None: Kaldi float matrix
    n = 0
    try:
        with _disk_errors(output_dir):
            with (
                torch.no_grad(),
                kaldiio.WriteHelper(f"ark,scp:{ark_tmp},{scp_tmp}", write_function=write_fn) as writer,
            ):
                chunks = batches(list(zip(utts, texts)), batch_size)
                for chunk in progress(chunks, total=len(utts), desc=f"dump_plm_feats {kind}", unit="utt", weight=len):
                    z, lengths = encode([t for _, t in chunk])
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
    logging.info(f"Wrote {kind} data of {n} utterances to {scp}")
    return n, scp


def check_unknown(
    utts: Sequence[Tuple[str, str]],
    to_ids: Callable[[str, str], List[int]],
    tokens: List[str],
    token_list: Path,
    token_type: str = "char",
    max_share: float = MAX_UNK_SHARE,
) -> None:
    """Refuse a token list that lacks more than ``max_share`` of the text's tokens (naming them); warn below.

    With a char token list the missing characters are named, otherwise the utterances with an <unk>.
    """
    if "<unk>" not in tokens:
        return
    unk = tokens.index("<unk>")
    known = set(tokens)
    missing: Dict[str, int] = {}
    n_tokens = 0
    for utt, text in utts:
        ids = to_ids(utt, text)
        n_tokens += len(ids)
        if unk in ids:
            names = [c for c in "".join(text.split()) if c not in known] if token_type == "char" else []
            for name in names or [utt] * ids.count(unk):
                missing[name] = missing.get(name, 0) + 1
    if not missing:
        return
    share = sum(missing.values()) / max(1, n_tokens)
    names = " ".join(sorted(missing, key=lambda c: -missing[c])[:10])
    if share > max_share:
        raise DumpError(
            f"--token_list {token_list}: lacks {len(missing)} tokens of the text ({names} ...; {100 * share:.1f}% "
            "of its tokens would become <unk>); give the token list the model is trained with (or raise "
            "--max_unk_share for a held-out set with many unseen characters)"
        )
    logging.warning(
        f"{len(missing)} tokens of the text are not in {token_list} and become <unk> as in training: {names}"
    )


class _disk_errors:
    """OSError while writing (disk full, permissions) -> one-line DumpError; the previous files are kept."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if kind is not None and issubclass(kind, OSError):
            raise DumpError(
                f"--output_dir {self.output_dir}: cannot write ({err.strerror or err}); the previous dump is kept"
            ) from None
        return False


def _encoder(
    branch: PLMTextBranch,
    kind: str,
    tokens: List[str],
    top_k: int,
    batch_size: int,
    device: str,
    means_texts: Sequence[str],
) -> Callable[[Sequence[str]], Tuple[torch.Tensor, torch.Tensor]]:
    """texts -> (matrices (B, L, width), lengths) of the given kind."""
    dev = torch.device(device)
    if kind == "contextual":
        return lambda texts: branch.encode_texts(texts, dev)
    if kind == "masked":
        return lambda texts: branch.encode_texts_masked(texts, dev)
    if kind == "context_free":
        means = _TokenMeans(branch, means_texts, batch_size, device)

        def context_free(texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
            ids, lengths = branch.tokenize(texts)
            return means.rows(ids, lengths), lengths

        return context_free
    vocab = CTCVocabMap(branch.tokenizer, tokens)
    logging.info(f"soft labels over {len(vocab)} of the {len(tokens)} CTC tokens (those that are PLM tokens)")
    if kind == "identity_soft_labels":

        def identity(texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
            ids, lengths = branch.tokenize(texts)
            return identity_soft_labels(ids, lengths, vocab, top_k), lengths

        return identity
    mlm = branch.masked_lm()
    mask_id = branch.tokenizer.mask_token_id
    if mask_id is None:
        raise DumpError(f"--plm {branch.name_or_path}: its tokenizer has no [MASK] token; soft labels need one")

    def soft(texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        ids, lengths = branch.tokenize(texts)
        ids, lengths = ids.to(mlm.device), lengths.to(mlm.device)
        return masked_lm_soft_labels(mlm, ids, lengths, mask_id, vocab, top_k), lengths.cpu()

    return soft
