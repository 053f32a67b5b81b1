"""Adds `cakt_adapter` (postencoder), `espnet_ot` (model), the `plm_feats` and `plm_soft_labels` data keys, the
`plm_feats` check and the resume guard (espnet_ot.tasks.resume_guard) to espnet2.tasks.asr."""

import sys
from types import ModuleType
from typing import Optional, Tuple

ASR_TASK_MODULE = "espnet2.tasks.asr"
MODEL_NAME = "espnet_ot"  # `model:` of a training YAML
POSTENCODER_NAME = "cakt_adapter"
_MARK = "_espnet_ot_registered"


def _with_data_names(original, keys: Tuple[str, ...]):
    """Wrap ASRTask.optional_data_names so training data may carry `keys`."""

    def optional_data_names(cls, train: bool = True, inference: bool = False):
        names = tuple(original(cls, train, inference))
        if not inference:
            names = names + tuple(k for k in keys if k not in names)
        return names

    optional_data_names._espnet_ot_wrapped = True
    return optional_data_names


def _with_plm_feats_check(original):
    """Wrap ASRTask.build_iter_factory: data sets with `plm_feats` (the keys of plm_data.CHECKED_KEYS) are checked
    before training starts."""

    def build_iter_factory(cls, *args, **kwargs):
        factory = original(cls, *args, **kwargs)
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "train")
        dataset = getattr(factory, "dataset", None)
        if dataset is not None:
            import itertools

            from espnet_ot.asr.plm_data import check_plm_feats

            batches = getattr(factory, "batches", None)
            utts = set(itertools.chain(*batches)) if batches is not None else None
            check_plm_feats(dataset, mode, utts)
        return factory

    build_iter_factory._espnet_ot_wrapped = True
    return build_iter_factory


def register(asr_module: Optional[ModuleType] = None) -> None:
    """Register into an imported espnet2.tasks.asr (idempotent; imports it if not given)."""
    if asr_module is None:
        asr_module = sys.modules.get(ASR_TASK_MODULE)
        if asr_module is None:
            import importlib

            asr_module = importlib.import_module(ASR_TASK_MODULE)
    if getattr(asr_module, _MARK, False):
        return
    from espnet_ot.asr.espnet_ot_model import PLM_FEATS_KEY, SOFT_LABELS_KEY, ESPnetOTModel
    from espnet_ot.asr.postencoder.cakt_adapter import CAKTAdapter

    asr_module.postencoder_choices.classes[POSTENCODER_NAME] = CAKTAdapter
    asr_module.model_choices.classes[MODEL_NAME] = ESPnetOTModel
    task = asr_module.ASRTask
    current = task.optional_data_names.__func__
    if not getattr(current, "_espnet_ot_wrapped", False):
        task.optional_data_names = classmethod(_with_data_names(current, (PLM_FEATS_KEY, SOFT_LABELS_KEY)))
    current = task.build_iter_factory.__func__
    if not getattr(current, "_espnet_ot_wrapped", False):
        task.build_iter_factory = classmethod(_with_plm_feats_check(current))
    current = task.main_worker.__func__
    if not getattr(current, "_espnet_ot_wrapped", False):
        from espnet_ot.tasks.resume_guard import with_resume_guard

        task.main_worker = classmethod(with_resume_guard(current))
    setattr(asr_module, _MARK, True)
