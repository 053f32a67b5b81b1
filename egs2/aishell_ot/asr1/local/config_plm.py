#!/usr/bin/env python3
"""The training config of asr.sh stage 11 for the PLM-feature stage: the YAML plus the PLM and its dumped features."""

import argparse
import contextlib
import hashlib
import inspect
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import yaml
from espnet2.utils.types import str2bool

from espnet_ot.asr.model_config import as_model_conf, check_model_conf
from espnet_ot.asr.plm import PLM_FEATS_KEY as PLM_DATA_KEY
from espnet_ot.asr.plm_config import PLM_CONF_KEY
from espnet_ot.asr.postencoder.cakt_adapter import CAKTAdapter
from espnet_ot.asr.soft_labels import SOFT_LABELS_KEY
from espnet_ot.ot.config import DEFAULT_METHOD
from espnet_ot.ot.config import NO_ALIGNMENT as NO_OT_ALIGNMENT
from espnet_ot.tasks.registration import MODEL_NAME, POSTENCODER_NAME
from espnet_ot.utils.config_files import plm_width, write_variant


def plm_options(config: dict, override: str = "") -> dict:
    """PLM, layer and max length that training with this config needs (plm "" when it needs no PLM).

    The whole model_conf is checked first, by the model's own checks (espnet_ot/asr/model_config.py): unknown
    keys, numbers, ranges, the OT options, and the PLM's config.json against plm_layer, plm_max_length and the
    adapter's width; a local PLM directory must exist. Errors are one line naming the field.
    """
    if config.get("model") != MODEL_NAME:
        return dict(plm="", plm_layer=-1, plm_max_length=None)
    conf = as_model_conf(config.get("model_conf"))
    if override:
        conf[PLM_CONF_KEY] = override
    conf = check_model_conf(conf, plm_dim=adapter_width(config, conf.get(PLM_CONF_KEY)), plm_required=True)
    if conf.get("alignment", DEFAULT_METHOD) == NO_OT_ALIGNMENT:
        return dict(plm="", plm_layer=-1, plm_max_length=None)
    name = str(conf.get(PLM_CONF_KEY) or "")
    if not name:
        raise ValueError(f"model_conf.{PLM_CONF_KEY} is empty: set it in the YAML or pass --plm NAME_OR_DIR")
    if any(c.isspace() for c in name):
        raise ValueError(f"model_conf.{PLM_CONF_KEY}={name!r} contains whitespace; use a path without spaces")
    return dict(
        plm=name,
        plm_layer=conf.get("plm_layer", -1),
        plm_max_length=conf.get("plm_max_length"),
        distill=float(conf.get("distill_weight", 0.0)) > 0.0,
    )


def adapter_width(config: dict, plm: Optional[str]) -> Optional[int]:
    """The adapter's plm_dim that stage 11 will train with (None: not a cakt_adapter, or set from the PLM's own
    config.json by :func:`stage_config`, so it matches by construction)."""
    if config.get("postencoder") != POSTENCODER_NAME:
        return None
    post = config.get("postencoder_conf")
    if isinstance(post, dict) and plm and (Path(plm) / "config.json").is_file():
        return None
    width = (post if isinstance(post, dict) else {}).get(
        "plm_dim", inspect.signature(CAKTAdapter.__init__).parameters["plm_dim"].default
    )
    return width if isinstance(width, int) and not isinstance(width, bool) else None


def feats_dir(root: Path, opts: dict) -> Path:
    """One directory per PLM identity (name or path, layer, max length): no two PLMs share one."""
    key = f"{opts['plm']}|{opts['plm_layer']}|{opts['plm_max_length']}"
    return root / f"{Path(opts['plm'].rstrip('/')).name}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def read_config(path: Path) -> dict:
    """The training YAML as a dict (empty file: {}); ValueError unless it is a mapping."""
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if not isinstance(config, dict):
        raise ValueError(f"the YAML must be a mapping of option: value, got {type(config).__name__}")
    return config


def stage_config(args: argparse.Namespace) -> List[List[str]]:
    """Write args.output; return the options of local/dump_plm_feats.sh for each dump the training reads.

    The first names the PLM and the out_dir of Z_L; with model_conf.distill_weight > 0 a second one, starting with
    ``--kind mlm_soft_labels`` (an option of dump_plm_feats, for --dump_opts), dumps the soft labels. [] when none.
    """
    config = read_config(args.config)
    opts = plm_options(config, args.plm)
    patch: dict = {}
    dumps: List[List[str]] = []
    if opts["plm"]:
        patch["model_conf"] = {PLM_CONF_KEY: opts["plm"], "token_type": args.token_type}
        if isinstance(config.get("postencoder_conf"), dict) and (Path(opts["plm"]) / "config.json").is_file():
            # a local PLM (e.g. a toy PLM of any width): the adapter's output follows its hidden size
            patch["postencoder_conf"] = {"plm_dim": plm_width(Path(opts["plm"]))}
        if opts["distill"] and not args.plm_feats:
            raise ValueError("model_conf.distill_weight > 0 reads dumped soft labels: use --plm_feats true")
        if args.plm_feats:
            out = feats_dir(args.feats_root, opts)
            plm_args = ["--plm", opts["plm"], "--plm_layer", str(opts["plm_layer"])]
            if opts["plm_max_length"] is not None:
                plm_args += ["--plm_max_length", str(int(opts["plm_max_length"]))]
            keys = [(out, PLM_DATA_KEY)]
            dumps.append(plm_args + [str(out)])
            if opts["distill"]:
                soft = out.with_name(out.name + "_soft_labels")
                keys.append((soft, SOFT_LABELS_KEY))
                dumps.append(["--kind", "mlm_soft_labels"] + plm_args + [str(soft)])
            patch["allow_variable_data_keys"] = True
            for mode, data in (("train", args.train_dir), ("valid", args.valid_dir)):
                patch[f"{mode}_data_path_and_name_and_type"] = [
                    [str(d / data.name / "feats.scp"), key, "kaldi_ark"] for d, key in keys
                ]
    write_variant(args.config, patch, args.output, note="local/config_plm.py")
    return dumps


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Write --output; print the options of each dump, one line each (nothing: no dump)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", type=Path, required=True, help="training YAML given to run.sh --asr_config")
    p.add_argument("--output", type=Path, help="the YAML for asr.sh stage 11 (same file name)")
    p.add_argument("--plm", default="", help="PLM given on the command line (overrides model_conf.plm)")
    p.add_argument("--plm_feats", type=str2bool, default=True, help="false: the model runs the PLM in training")
    p.add_argument("--token_type", default="char", help="asr.sh --token_type (the PLM branch's detokenizer)")
    p.add_argument("--feats_root", type=Path, default=Path("dump/plm"), help="where the PLM dumps live")
    p.add_argument("--train_dir", type=Path, default=Path("train"), help="asr.sh's dumped training set")
    p.add_argument("--valid_dir", type=Path, default=Path("dev"), help="asr.sh's dumped validation set")
    p.add_argument(
        "--check_only",
        type=str2bool,
        default=False,
        help="only check the config's model_conf (run.sh, before stage 1); writes nothing",
    )
    args = p.parse_args(argv)
    if args.output is None and not args.check_only:
        p.error("--output is required (unless --check_only true)")
    try:
        if args.check_only:
            plm_options(read_config(args.config), args.plm)
            return
        # stdout carries the dump lines alone: what ESPnet prints while the model's checks import it goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            dumps = stage_config(args)
        for dump in dumps:  # one line per dump (local/plm_stage.sh reads them)
            print(" ".join(dump))
    except (OSError, yaml.YAMLError, ValueError, TypeError) as e:
        sys.exit(f"{sys.argv[0]}: --config {args.config}: {e}")


if __name__ == "__main__":
    main()
