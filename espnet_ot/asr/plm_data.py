"""Checks of precomputed PLM data (`plm_feats`, ...) in ESPnet's data pipeline: coverage and arks before training.

`espnet_ot.tasks.registration` wraps ``ASRTask.build_iter_factory`` so that every data set built for training or
validation goes through :func:`check_plm_feats`, for each data key of :data:`CHECKED_KEYS` that it carries: an scp
missing an utterance, an ark it names that does not exist, an offset beyond the end of its ark, or an ark whose
last matrix cannot be read (a truncated file) fails before the first batch with one line naming the utterance and
the file. Each matrix loaded during training is then checked: one that cannot be read names the utterance and its
ark, one with NaN/Inf names the utterance.
"""

import os
import re
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from espnet_ot.asr.plm import PLM_FEATS_KEY
from espnet_ot.asr.soft_labels import SOFT_LABELS_KEY

REMEDY = "re-run the PLM-feature stage (python -m espnet_ot.bin.dump_plm_feats) for this data set"
# data keys of kaldi_ark scps written by the PLM-feature stage; each goes through the same checks
CHECKED_KEYS: Tuple[str, ...] = (PLM_FEATS_KEY, SOFT_LABELS_KEY)
_SLICE = re.compile(r"\[[^\]]*\]$")


def ark_location(value: str) -> Optional[Tuple[str, Optional[int]]]:
    """(file, byte offset or None) of one kaldi_ark scp value `file.ark:123[...]`; None for a pipe (`cmd |`)."""
    value = value.strip()
    if not value or value.endswith("|") or value.startswith("|"):
        return None
    value = _SLICE.sub("", value)
    if ":" in value:
        path, offset = value.rsplit(":", 1)
        if offset.isdigit():
            return path, int(offset)
    return value, None


def scp_entries(path: str) -> Iterator[Tuple[str, str]]:
    """(utterance, value) of each line of a Kaldi scp, split as kaldiio.load_scp does."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split(None, 1)
            if len(parts) == 2:
                yield parts[0], parts[1].rstrip()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class CheckedArkData:
    """Wraps a dataset's loader of one checked key: a matrix that cannot be read names the utterance and its ark,
    a non-finite one names the utterance (one line each)."""

    def __init__(self, loader: Any, path: str, key: str = PLM_FEATS_KEY) -> None:
        self.loader = loader
        self.path = path
        self.key = key

    def __getitem__(self, uid: str):
        try:
            value = self.loader[uid]
        except KeyError:
            raise
        except Exception as e:
            where = next((v for u, v in _safe_entries(self.path) if u == uid), "?")
            raise ValueError(
                f"{self.path}: utterance {uid}: cannot read its {self.key} matrix at {where} ({_one_line(e)}): "
                f"the ark is truncated or damaged; {REMEDY}"
            ) from e
        if not np.isfinite(np.asarray(value, dtype=np.float32)).all():
            raise ValueError(
                f"{self.path}: utterance {uid} has non-finite PLM features (NaN/Inf), which would make the batch "
                f"loss NaN; {REMEDY}"
            )
        return value

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "loader":  # unpickling (DataLoader workers) sets attributes first
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __contains__(self, uid: str) -> bool:
        return uid in self.loader

    def __iter__(self):
        return iter(self.loader)


def _safe_entries(path: str) -> Iterator[Tuple[str, str]]:
    try:
        yield from scp_entries(path)
    except OSError:
        return


def _keys(loader: Any) -> Optional[set]:
    try:
        return set(loader.keys())
    except (AttributeError, TypeError):
        return None


def _more(items: List[Any]) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def check_arks(loader: Any, path: str, utts: Optional[set], field: str) -> None:
    """The arks that a kaldi_ark scp names for `utts` (default: every line): each exists, each offset lies inside
    its file, and the matrix at each ark's largest offset reads (so the file is not cut short). Raises a one-line
    ``ValueError`` starting with `field` and naming the utterance and the file."""
    sizes: Dict[str, Optional[int]] = {}
    missing: Dict[str, List[str]] = {}
    beyond: List[Tuple[str, str, int, int]] = []
    last: Dict[str, Tuple[int, str]] = {}
    for uid, value in _safe_entries(path):
        if utts is not None and uid not in utts:
            continue
        loc = ark_location(value)
        if loc is None:
            continue
        ark, offset = loc
        if ark not in sizes:
            sizes[ark] = os.path.getsize(ark) if os.path.isfile(ark) else None
        size = sizes[ark]
        if size is None:
            missing.setdefault(ark, []).append(uid)
        elif offset is not None and offset >= size:
            beyond.append((uid, ark, offset, size))
        elif offset is not None and (ark not in last or offset > last[ark][0]):
            last[ark] = (offset, uid)
    if missing:
        ark, uids = next(iter(missing.items()))
        n_utts = sum(len(u) for u in missing.values())
        raise ValueError(
            f"{field}: utterance {uids[0]} points to {ark}, which does not exist ({n_utts} utterances point to "
            f"{len(missing)} missing ark file(s)); {REMEDY}"
        )
    if beyond:
        uid, ark, offset, size = beyond[0]
        raise ValueError(
            f"{field}: utterance {uid} points to {ark}:{offset}, beyond the end of that file ({size} bytes: "
            f"truncated?){_more(beyond)}; {REMEDY}"
        )
    for ark, (offset, uid) in last.items():
        try:
            loader[uid]
        except Exception as e:
            raise ValueError(
                f"{field}: utterance {uid}: cannot read its matrix at {ark}:{offset} ({_one_line(e)}): the file "
                f"is truncated or damaged; {REMEDY}"
            ) from e


def check_data_key(dataset: Any, key: str, mode: str = "train", utts: Optional[Iterable[str]] = None) -> None:
    """Check one data key of an ESPnetDataset before training (no-op when the dataset does not carry it).

    Every utterance of `utts` (the iterator's batches; default: the keys of the dataset's first data file, the
    speech) must have an entry; for a kaldi_ark scp, the arks of these entries are checked by :func:`check_arks`.
    Raises a one-line ``ValueError`` naming the utterance and the file. The loader is then wrapped by
    :class:`CheckedArkData`.
    """
    loaders = getattr(dataset, "loader_dict", None)
    if not loaders or key not in loaders or isinstance(loaders[key], CheckedArkData):
        return
    info = getattr(dataset, "debug_info", {})
    path, _type = info.get(key, ("?", "?"))
    field = f"--{mode}_data_path_and_name_and_type {path},{key},{_type}"
    first = next(iter(loaders))
    feats_keys = _keys(loaders[key])
    utt_keys = set(utts) if utts is not None else _keys(loaders[first])
    if feats_keys is not None and utt_keys is not None:
        missing = sorted(utt_keys - feats_keys)
        if missing:
            raise ValueError(
                f"{field}: no entry for utterance {missing[0]}{_more(missing)} of {info.get(first, ('?',))[0]}; "
                f"{REMEDY}"
            )
    if _type == "kaldi_ark":
        check_arks(loaders[key], path, utt_keys, field)
    loaders[key] = CheckedArkData(loaders[key], path, key)


def check_plm_feats(dataset: Any, mode: str = "train", utts: Optional[Iterable[str]] = None) -> None:
    """Check every data key of :data:`CHECKED_KEYS` that an ESPnetDataset carries (:func:`check_data_key`)."""
    utts = set(utts) if utts is not None else None
    for key in CHECKED_KEYS:
        check_data_key(dataset, key, mode, utts)
