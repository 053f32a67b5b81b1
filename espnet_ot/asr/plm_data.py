"""Checks of precomputed PLM features (`plm_feats`) in ESPnet's data pipeline: coverage before training, finite values.

`espnet_ot.tasks.registration` wraps ``ASRTask.build_iter_factory`` so that every data set built for training or
validation goes through :func:`check_plm_feats`: an scp missing an utterance fails before the first batch with one
line naming the utterance and the scp, and each loaded matrix is checked for NaN/Inf (naming the utterance).
"""

from typing import Any, Iterable, Optional

import numpy as np

from espnet_ot.asr.plm import PLM_FEATS_KEY

REMEDY = "re-run the PLM-feature stage (python -m espnet_ot.bin.dump_plm_feats) for this data set"


class FinitePLMFeats:
    """Wraps a dataset's `plm_feats` loader: every loaded matrix must be finite (else one line with the utterance)."""

    def __init__(self, loader: Any, path: str) -> None:
        self.loader = loader
        self.path = path

    def __getitem__(self, uid: str):
        value = self.loader[uid]
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


def _keys(loader: Any) -> Optional[set]:
    try:
        return set(loader.keys())
    except (AttributeError, TypeError):
        return None


def check_plm_feats(dataset: Any, mode: str = "train", utts: Optional[Iterable[str]] = None) -> None:
    """Check the `plm_feats` of an ESPnetDataset before training (no-op without it).

    Every utterance of `utts` (the iterator's batches; default: the keys of the dataset's first data file,
    the speech) must have features; raises a one-line ``ValueError`` naming the missing utterance and the
    scp. The loader is then wrapped by :class:`FinitePLMFeats`.
    """
    loaders = getattr(dataset, "loader_dict", None)
    if not loaders or PLM_FEATS_KEY not in loaders or isinstance(loaders[PLM_FEATS_KEY], FinitePLMFeats):
        return
    info = getattr(dataset, "debug_info", {})
    path, _type = info.get(PLM_FEATS_KEY, ("?", "?"))
    first = next(iter(loaders))
    feats_keys = _keys(loaders[PLM_FEATS_KEY])
    utt_keys = set(utts) if utts is not None else _keys(loaders[first])
    if feats_keys is not None and utt_keys is not None:
        missing = sorted(utt_keys - feats_keys)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise ValueError(
                f"--{mode}_data_path_and_name_and_type {path},{PLM_FEATS_KEY},{_type}: no entry for utterance "
                f"{missing[0]}{more} of {info.get(first, ('?',))[0]}; {REMEDY}"
            )
    loaders[PLM_FEATS_KEY] = FinitePLMFeats(loaders[PLM_FEATS_KEY], path)
