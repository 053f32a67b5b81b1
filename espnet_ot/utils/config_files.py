"""Config files: an ESPnet YAML config with a patch merged in, and the hidden size of a saved PLM.

Shared by the recipe (egs2/aishell_ot/asr1/local/config_plm.py) and the toy world (espnet_ot.toy), which both
write variants of a training config.
"""

import copy
import json
from pathlib import Path
from typing import Any, Dict, Mapping

import yaml


def deep_update(base: Dict[str, Any], patch: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of base with patch merged in, recursively for nested mappings."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_update(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write_variant(base: Path, patch: Mapping[str, Any], dst: Path, note: str = "") -> Path:
    """Write base (an ESPnet YAML config) with patch merged in to dst, with a comment line naming both."""
    conf = yaml.safe_load(Path(base).read_text(encoding="utf-8"))
    merged = deep_update(conf, patch)
    dst.parent.mkdir(parents=True, exist_ok=True)
    head = f"# {note or 'variant'}: {Path(base).name} + {json.dumps(patch, sort_keys=True)}\n"
    text = head + yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
    if not dst.is_file() or dst.read_text(encoding="utf-8") != text:
        dst.write_text(text, encoding="utf-8")
    return dst


def plm_width(plm: Path) -> int:
    """Hidden size of a saved PLM (its config.json)."""
    return int(json.loads((Path(plm) / "config.json").read_text(encoding="utf-8"))["hidden_size"])
