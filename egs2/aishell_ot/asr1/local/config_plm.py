#!/usr/bin/env python3
"""Reads a training YAML, checks its OT options, and prints what the PLM-feature stage needs: the PLM, its options, the data name."""

import argparse
import sys

import yaml

from espnet_ot.asr.plm import PLM_CONF_KEY
from espnet_ot.asr.plm import PLM_FEATS_KEY as PLM_DATA_KEY
from espnet_ot.ot.config import DEFAULT_METHOD
from espnet_ot.ot.config import NO_ALIGNMENT as NO_OT_ALIGNMENT
from espnet_ot.ot.config import AlignmentConfig
from espnet_ot.tasks.registration import MODEL_NAME


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


def main() -> None:
    """Print "<plm> <plm_layer> <plm_max_length> <model_conf key> <data name>" ("-" for none)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="training YAML given to asr.sh --asr_config")
    parser.add_argument("--plm", default="", help="PLM given on the command line (overrides the YAML)")
    args = parser.parse_args()
    try:
        with open(args.config, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        opts = plm_options(config, args.plm)
    except (OSError, yaml.YAMLError, ValueError, TypeError) as e:
        sys.exit(f"{sys.argv[0]}: --config {args.config}: {e}")
    max_len = opts["plm_max_length"]
    print(opts["plm"] or "-", opts["plm_layer"], "-" if max_len is None else int(max_len), PLM_CONF_KEY, PLM_DATA_KEY)


if __name__ == "__main__":
    main()
