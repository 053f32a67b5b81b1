"""Where a PLM comes from (local directory or hub name) and its options, checked from config.json without loading it."""

import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

PLM_CONF_KEY = "plm"  # model_conf key of the PLM name or directory
PLM_FIELD = f"model_conf.{PLM_CONF_KEY}"
MIN_PLM_POSITIONS = 3  # [CLS], one token, [SEP]: fewer positions leave Z_L without a single token


class PLMNotFoundError(RuntimeError):
    """The PLM named in the configuration cannot be loaded (missing directory, offline, ...)."""


# A Hugging Face repo id: "name" or "org/name" of letters, digits, "-", "_" and ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Files of which a saved tokenizer has at least one (fast tokenizer, WordPiece, BPE, sentencepiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def _looks_like_local_path(name: str) -> bool:
    """True for names that can only mean a directory.

    Absolute, ``./``, ``../``, ``~``, several slashes, a trailing slash, characters a Hugging Face repo id never
    has, or a first component that is an existing directory (``dump/plm`` where ``dump/`` exists).
    """
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\"))
        or name.count("/") > 1
        or name.endswith("/")
        or os.sep != "/"
        and os.sep in name
        or not _HUB_ID.match(name)
        or "/" in name
        and os.path.isdir(name.split("/", 1)[0])
    )


def is_local_plm(name: str) -> bool:
    """Whether `name` means a local directory (it exists, or looks like a path) rather than a hub model."""
    return os.path.isdir(os.path.expanduser(name)) or _looks_like_local_path(name)


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(
        os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def option_field(plm_field: str, option: str) -> str:
    """The name of another PLM option next to ``plm_field``: ``model_conf.plm`` -> ``model_conf.<option>``,
    ``--plm`` -> ``--<option>``."""
    if plm_field.endswith(PLM_CONF_KEY):
        return plm_field[: -len(PLM_CONF_KEY)] + option
    return option


def read_plm_config(name: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """The PLM's config.json without loading the PLM: (config, None), or (None, why it cannot be read).

    A local directory that does not exist or has no config.json, and a hub name that is not in the Hugging Face
    cache while the hub is switched off, give the reason; a hub name that is not cached while the hub is
    reachable gives (None, None): it can only be checked when it is loaded (no download here).
    """
    path = os.path.expanduser(name)
    if is_local_plm(name):
        if not os.path.isdir(path):
            return None, f"no such directory (relative to {os.getcwd()})"
        config_file = os.path.join(path, "config.json")
        if not os.path.isfile(config_file):
            return None, "the directory has no config.json (save the PLM there with save_pretrained)"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            config_file = try_to_load_from_cache(name, "config.json")
        except (ImportError, ValueError):  # no (recent) huggingface_hub, or a name it rejects: checked when loaded
            config_file = None
        if not isinstance(config_file, str):
            if hub_offline():
                return None, "HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache"
            return None, None
    try:
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"cannot read {config_file} ({type(e).__name__}: {e})"
    if not isinstance(config, dict):
        return None, f"{config_file} is not a JSON object"
    return config, None


def check_plm_config(
    config: Mapping[str, Any],
    name: str,
    layer: int = -1,
    max_length: Optional[int] = None,
    plm_dim: Optional[int] = None,
    field: str = PLM_FIELD,
    plm_dim_field: str = "postencoder_conf.plm_dim",
) -> None:
    """``plm_layer``, ``plm_max_length`` and the adapter's ``plm_dim`` against a PLM's configuration
    (config.json, or the loaded model's config as a dict); one-line ValueError naming the option and the remedy.
    Keys the configuration lacks are not checked."""
    n_layers = config.get("num_hidden_layers")
    if isinstance(n_layers, int) and layer != -1 and not -n_layers - 1 <= layer <= n_layers:
        raise ValueError(
            f"{option_field(field, 'plm_layer')}={layer} is out of range for {field}={name!r} ({n_layers} layers): "
            f"use -1 (last) or 0..{n_layers}"
        )
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and max_length is not None and max_length > positions:
        raise ValueError(
            f"{option_field(field, 'plm_max_length')}={max_length} exceeds the {positions} input positions of "
            f"{field}={name!r}: use at most {positions}, or leave it unset"
        )
    width = config.get("hidden_size")
    if isinstance(width, int) and plm_dim is not None and plm_dim != width:
        raise ValueError(
            f"{plm_dim_field}={plm_dim} but {field}={name!r} has width {width} (hidden_size in its config.json): "
            f"set {plm_dim_field}: {width}"
        )


def check_plm_options(layer: Any, max_length: Any, field: str = PLM_FIELD) -> None:
    """``plm_layer`` an integer, ``plm_max_length`` None or an integer >= 3 ([CLS], a token, [SEP])."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"{option_field(field, 'plm_layer')}={layer!r} must be an integer (-1: the last layer)")
    if max_length is None:
        return
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < MIN_PLM_POSITIONS:
        raise ValueError(
            f"{option_field(field, 'plm_max_length')}={max_length!r} must be an integer >= {MIN_PLM_POSITIONS} "
            "(the positions of [CLS], a token and [SEP]); leave it unset for the PLM's own maximum"
        )


def plm_not_found(name: str, field: str, reason: str) -> PLMNotFoundError:
    """One-line error naming the configuration field and the remedies."""
    reason = " ".join(str(reason).split())[:300]
    return PLMNotFoundError(
        f"{field}={name!r}: cannot load the PLM ({reason}); set {field} to a local directory "
        "written by save_pretrained (tokenizer + model), or to a Hugging Face model name that is "
        "already in the HF cache or reachable online, or precompute features with "
        "`python -m espnet_ot.bin.dump_plm_feats` and pass them as the plm_feats data key"
    )
