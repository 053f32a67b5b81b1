#!/usr/bin/env python3
"""The training config of asr.sh stage 11 for the PLM-feature stage: the YAML plus the PLM and its dumped features."""

import argparse
import hashlib
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import yaml
from espnet2.utils.types import str2bool

from espnet_ot.asr.plm import PLM_CONF_KEY
from espnet_ot.asr.plm import PLM_FEATS_KEY as PLM_DATA_KEY
from espnet_ot.ot.config import DEFAULT_METHOD
from espnet_ot.ot.config import NO_ALIGNMENT as NO_OT_ALIGNMENT
from espnet_ot.ot.config import AlignmentConfig
from espnet_ot.tasks.registration import MODEL_NAME
from espnet_ot.toy.experiment import write_variant
from espnet_ot.toy.world import plm_width


def plm_options(config: dict, override: str = "") -> dict:
    """PLM, layer and max length that training with this config needs (plm "" when it needs no PLM)."""
    if config.get("model") != MODEL_NAME:
        return dict(plm="", plm_layer=-1, plm_max_length=None)
    conf = config.get("model_conf") or {}
    alignment = conf.get("alignment", DEFAULT_METHOD)
    if alignment == NO_OT_ALIGNMENT:
        return dict(plm="", plm_layer=-1, plm_max_length=None)
    AlignmentConfig.from_conf(alignment, conf.get("alignment_conf"))  # fail now, not at the first batch
    name = str(override or conf.get(PLM_CONF_KEY) or "")
    if not name:
        raise ValueError(f"model_conf.{PLM_CONF_KEY} is empty: set it in the YAML or pass --plm NAME_OR_DIR")
    if any(c.isspace() for c in name):
        raise ValueError(f"model_conf.{PLM_CONF_KEY}={name!r} contains whitespace; use a path without spaces")
    return dict(
        plm=name,
        plm_layer=int(conf.get("plm_layer", -1)),
        plm_max_length=conf.get("plm_max_length"),
    )


def feats_dir(root: Path, opts: dict) -> Path:
    """One directory per PLM identity (name or path, layer, max length): no two PLMs share one."""
    key = f"{opts['plm']}|{opts['plm_layer']}|{opts['plm_max_length']}"
    return root / f"{Path(opts['plm'].rstrip('/')).name}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def stage_config(args: argparse.Namespace) -> List[str]:
    """Write args.output; return the options of local/dump_plm_feats.sh naming the PLM and its out_dir ([]: none)."""
    with open(args.config, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    opts = plm_options(config, args.plm)
    patch: dict = {}
    dump_args: List[str] = []
    if opts["plm"]:
        patch["model_conf"] = {PLM_CONF_KEY: opts["plm"], "token_type": args.token_type}
        if isinstance(config.get("postencoder_conf"), dict) and (Path(opts["plm"]) / "config.json").is_file():
            # a local PLM (e.g. a toy PLM of any width): the adapter's output follows its hidden size
            patch["postencoder_conf"] = {"plm_dim": plm_width(Path(opts["plm"]))}
        if args.plm_feats:
            out = feats_dir(args.feats_root, opts)
            dump_args = ["--plm", opts["plm"], "--plm_layer", str(opts["plm_layer"])]
            if opts["plm_max_length"] is not None:
                dump_args += ["--plm_max_length", str(int(opts["plm_max_length"]))]
            dump_args.append(str(out))
            patch["allow_variable_data_keys"] = True
            for mode, data in (("train", args.train_dir), ("valid", args.valid_dir)):
                patch[f"{mode}_data_path_and_name_and_type"] = [[str(out / data.name / "feats.scp"), PLM_DATA_KEY,
                                                                 "kaldi_ark"]]
    write_variant(args.config, patch, args.output, note="local/config_plm.py")
    return dump_args


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Write --output; print the dump options (nothing when the config needs no PLM features)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", type=Path, required=True, help="training YAML given to run.sh --asr_config")
    p.add_argument("--output", type=Path, required=True, help="the YAML for asr.sh stage 11 (same file name)")
    p.add_argument("--plm", default="", help="PLM given on the command line (overrides model_conf.plm)")
    p.add_argument("--plm_feats", type=str2bool, default=True, help="false: the model runs the PLM in training")
    p.add_argument("--token_type", default="char", help="asr.sh --token_type (the PLM branch's detokenizer)")
    p.add_argument("--feats_root", type=Path, default=Path("dump/plm"), help="where the PLM dumps live")
    p.add_argument("--train_dir", type=Path, default=Path("train"), help="asr.sh's dumped training set")
    p.add_argument("--valid_dir", type=Path, default=Path("dev"), help="asr.sh's dumped validation set")
    args = p.parse_args(argv)
    try:
        print(" ".join(stage_config(args)))
    except (OSError, yaml.YAMLError, ValueError, TypeError) as e:
        sys.exit(f"{sys.argv[0]}: --config {args.config}: {e}")


if __name__ == "__main__":
    main()
