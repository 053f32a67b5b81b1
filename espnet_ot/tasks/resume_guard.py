"""Refuse to resume an espnet_ot training whose model or alignment settings changed, before ESPnet touches its files.

ESPnet's trainer rewrites ``<output_dir>/config.yaml`` before it loads ``checkpoint.pth``, so a resume with another
``plm_dim`` leaves a directory whose config no longer describes its checkpoints, and a resume with another
``alignment`` or ``eps`` silently mixes two methods in one run. ``ASRTask.main_worker`` is wrapped (see
:mod:`espnet_ot.tasks.registration`): a training of the ``espnet_ot`` model records the settings that shape its
model and its OT branch in ``<output_dir>/espnet_ot_settings.json``; a resume (``--resume true`` with a checkpoint
there) whose settings differ fails with one line naming the changed fields, before anything is written.
"""

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List

SETTINGS_FILE = "espnet_ot_settings.json"
# what shapes the parameters or the training objective of an espnet_ot model, and the data it is trained on
GUARDED = (
    "model",
    "model_conf",
    "frontend",
    "frontend_conf",
    "specaug",
    "specaug_conf",
    "normalize",
    "preencoder",
    "preencoder_conf",
    "encoder",
    "encoder_conf",
    "postencoder",
    "postencoder_conf",
    "token_type",
    "train_data_path_and_name_and_type",
)
MODEL_NAME = "espnet_ot"


def settings_of(args: argparse.Namespace) -> Dict[str, Any]:
    """The guarded settings of a parsed asr_train command line, JSON-normalised."""
    return json.loads(json.dumps({k: getattr(args, k, None) for k in GUARDED}, default=str))


def changed_fields(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted names of the fields whose values differ (recursing into mappings)."""
    out: List[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def check_and_record(args: argparse.Namespace) -> None:
    """Raise a one-line RuntimeError if this is a resume with other settings; else record them (rank 0)."""
    if getattr(args, "model", None) != MODEL_NAME or getattr(args, "collect_stats", False):
        return
    out = Path(args.output_dir)
    path = out / SETTINGS_FILE
    new = settings_of(args)
    if getattr(args, "resume", False) and (out / "checkpoint.pth").is_file() and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        fields = changed_fields(old, new)
        if fields:
            raise RuntimeError(
                f"--resume true: {out} was trained with other settings ({', '.join(fields[:6])}"
                f"{', ...' if len(fields) > 6 else ''} changed; recorded in {path}); resuming would mix two "
                "models: train into a new --output_dir, or restore those settings"
            )
    if getattr(args, "dist_rank", None) in (None, 0):
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(new, indent=1, sort_keys=True), encoding="utf-8")


def with_resume_guard(original):
    """Wrap ASRTask.main_worker with :func:`check_and_record`."""

    def main_worker(cls, args: argparse.Namespace):
        check_and_record(args)
        return original(cls, args)

    main_worker._espnet_ot_wrapped = True
    return main_worker
