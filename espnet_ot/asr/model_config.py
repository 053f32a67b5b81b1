"""The model_conf of model espnet_ot, checked and normalised in one place: the model and local/config_plm.py.

:func:`check_model_conf` takes the ``model_conf`` mapping of a training YAML and returns it with numbers
written as strings converted (PyYAML reads ``3e-1`` as the string ``'3e-1'``), or raises one line naming
``model_conf.<key>`` and the remedy: unknown keys (with the nearest known one), non-numbers, NaN/Inf, values
out of range, ``alignment``/``alignment_conf`` (:class:`~espnet_ot.ot.config.AlignmentConfig`), and, when
``model_conf.plm`` is readable, ``plm_layer``, ``plm_max_length`` and ``postencoder_conf.plm_dim`` against the
PLM's config.json (the weights are not loaded). The known keys are the OT options listed in ``OT_FIELDS`` and
ESPnetASRModel's own keyword arguments (which ESPnetOTModel passes on). ESPnetOTModel's constructor runs it
through :func:`checked_model_conf`, before typeguard sees the arguments.

Example::

    >>> check_model_conf({"ctc_lambda": "3e-1", "plm_layer": -1})
    {'ctc_lambda': 0.3, 'plm_layer': -1}
    >>> check_model_conf({"ot_wieght": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: model_conf.ot_wieght: unknown key (did you mean ot_weight?); remove it or use one of the keys of model espnet_ot (see ESPnetOTModel)
"""

import difflib
import functools
import inspect
import logging
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from espnet_ot.asr.plm import SUPPORTED_TOKEN_TYPES
from espnet_ot.asr.plm_config import MIN_PLM_POSITIONS, PLM_CONF_KEY, check_plm_config, read_plm_config
from espnet_ot.ot.alignment import METHODS
from espnet_ot.ot.config import (
    ALIGNMENT_CONF_FIELD,
    ALIGNMENT_FIELD,
    ALIGNMENTS,
    DEFAULT_METHOD,
    NO_ALIGNMENT,
    AlignmentConfig,
)

MODEL_CONF_FIELD = "model_conf"
PLM_DIM_FIELD = "postencoder_conf.plm_dim"

Check = Tuple[Callable[[Any], bool], str]


@dataclass(frozen=True)
class Field:
    """One model_conf option: its type (float, int, bool, str, dict), whether None is allowed, its check."""

    kind: type
    optional: bool = False
    check: Optional[Check] = None
    example: Any = None  # shown in the error of a value of the wrong type


_UNIT: Check = (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
_NON_NEGATIVE: Check = (lambda v: v >= 0.0, "must be >= 0")

# ESPnetOTModel's own options (ESPnetASRModel's are read from its signature). `distill_weight` (the weight of a
# distillation loss) is listed ahead of its constructor argument.
OT_FIELDS: Dict[str, Field] = {
    "alignment": Field(str, example="tot"),
    "alignment_conf": Field(dict, optional=True, example={"eps": 0.5}),
    "ctc_lambda": Field(float, check=_UNIT, example=0.3),
    "ot_weight": Field(float, check=_NON_NEGATIVE, example=1.0),
    "distill_weight": Field(float, check=_NON_NEGATIVE, example=0.0),
    "plm": Field(
        str,
        optional=True,
        check=(lambda v: v.strip() != "", "must name a PLM (not be empty)"),
        example="bert-base-chinese",
    ),
    "plm_layer": Field(int, example=-1),  # its range comes from the PLM's config.json
    "plm_max_length": Field(
        int,
        optional=True,
        check=(
            lambda v: v >= MIN_PLM_POSITIONS,
            f"must be >= {MIN_PLM_POSITIONS} (the positions of [CLS], a token and [SEP]); leave it unset for the "
            "PLM's own maximum",
        ),
        example=512,
    ),
    "token_type": Field(str, example="char"),
    "token_hf_model": Field(str, optional=True, example="bert-base-chinese"),
    "align_exclude_special": Field(bool, example=True),
    "ot_include_special": Field(bool, example=True),
    "ot_in_eval": Field(bool, example=True),
    "band": Field(
        float,
        check=(lambda v: 0.0 < v <= 1.0, "must be in (0, 1] (relative half-width of the diagonal band of band_mass)"),
        example=0.1,
    ),
    "ctc_weight": Field(
        float,
        check=(lambda v: v == 1.0, "is not 1.0: model espnet_ot is pure CTC; remove ctc_weight or set it to 1.0"),
        example=1.0,
    ),
    "sym_space": Field(str, example="<space>"),
    "sym_blank": Field(str, example="<blank>"),
}


@functools.lru_cache(maxsize=None)
def _base_signature() -> Tuple[Tuple[str, ...], Dict[str, Field]]:
    """ESPnetASRModel's parts (arguments without a default) and its options as Fields (from the annotations)."""
    from espnet2.asr.espnet_model import ESPnetASRModel

    parts, options = [], {}
    for name, p in list(inspect.signature(ESPnetASRModel.__init__).parameters.items())[1:]:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.default is inspect.Parameter.empty:
            parts.append(name)
            continue
        kind, optional = p.annotation, p.default is None
        if typing.get_origin(kind) is typing.Union:  # Optional[X]
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kind, optional = (args[0], True) if len(args) == 1 else (object, optional)
        options[name] = Field(kind if kind in (float, int, bool, str) else object, optional, example=p.default)
    return tuple(parts), options


def model_parts() -> Tuple[str, ...]:
    """The constructor arguments that are the model's parts (frontend, encoder, ...), not model_conf."""
    return _base_signature()[0]


def known_fields() -> Dict[str, Field]:
    """Every key model_conf may hold: ESPnetASRModel's options, then ESPnetOTModel's (which take precedence)."""
    return {**_base_signature()[1], **OT_FIELDS}


def as_model_conf(conf: Any, field: str = MODEL_CONF_FIELD) -> Dict[str, Any]:
    """A copy of ``conf`` as a dict (None: empty); one-line TypeError naming ``field`` unless it is a mapping."""
    if conf is None:
        return {}
    if not isinstance(conf, Mapping):
        raise TypeError(
            f"{field} must be a mapping of option: value (e.g. `ctc_lambda: 0.3` on its own indented line), got "
            f"{type(conf).__name__} {conf!r}"
        )
    return dict(conf)


def check_model_conf(
    conf: Any,
    plm_dim: Optional[int] = None,
    plm_required: bool = False,
    field: str = MODEL_CONF_FIELD,
) -> Dict[str, Any]:
    """``conf`` (the model_conf mapping) checked, with its numbers converted; the keys given, nothing added.

    Args:
        conf: the model_conf mapping (None: empty).
        plm_dim: the adapter's output width (``postencoder_conf.plm_dim``), compared with the PLM's hidden size
            when ``model_conf.plm`` is readable (None: not compared).
        plm_required: a ``model_conf.plm`` that cannot be read (no such directory, no config.json, a hub name
            not in the cache with the hub switched off) is an error (the recipe, which dumps the PLM's features);
            otherwise a warning (decoding, and training on dumped ``plm_feats``, need no PLM).
        field: the name of ``conf`` in error messages.

    Raises one-line ``ValueError``/``TypeError`` naming ``<field>.<key>`` and the remedy.
    """
    conf = as_model_conf(conf, field)
    known = known_fields()
    out: Dict[str, Any] = {}
    for key, value in conf.items():
        name = f"{field}.{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"{name}: unknown key{hint}; remove it or use one of the keys of model espnet_ot (see ESPnetOTModel)"
            )
        out[key] = _convert(known[key], value, name)
    alignment = out.get("alignment", DEFAULT_METHOD)
    if alignment not in ALIGNMENTS:
        raise ValueError(f"{field}.alignment={alignment!r}: use one of {', '.join(ALIGNMENTS)}")
    alignment_conf = out.get("alignment_conf")
    if alignment == NO_ALIGNMENT:
        if out.get("distill_weight", 0.0) > 0.0:
            raise ValueError(
                f"{field}.distill_weight={out['distill_weight']}: the distillation pools the CTC posteriors through "
                f"the coupling, which {ALIGNMENT_FIELD} 'none' does not compute; choose one of {', '.join(METHODS)} "
                "(with ot_weight: 0 for distillation only) or set distill_weight: 0"
            )
        if alignment_conf:
            raise ValueError(
                f"{ALIGNMENT_CONF_FIELD}.{next(iter(alignment_conf))}: not used by {ALIGNMENT_FIELD} "
                f"{alignment!r} (plain CTC, no OT branch); remove alignment_conf or choose one of {', '.join(METHODS)}"
            )
        return out
    cfg = AlignmentConfig.from_conf(alignment, alignment_conf)
    if alignment_conf:
        out["alignment_conf"] = {k: getattr(cfg, k) for k in alignment_conf}
    token_type = out.get("token_type", "char")
    if token_type not in SUPPORTED_TOKEN_TYPES:
        raise ValueError(
            f"{field}.token_type={token_type!r} is not supported by the PLM branch: use one of "
            f"{', '.join(SUPPORTED_TOKEN_TYPES)} (the token_type of the CTC token list)"
        )
    if out.get(PLM_CONF_KEY) is not None:
        _check_plm(out, plm_dim, plm_required, field)
    return out


def _check_plm(conf: Dict[str, Any], plm_dim: Optional[int], plm_required: bool, field: str) -> None:
    """The PLM options against the PLM's config.json, when it can be read without loading the model."""
    name = conf[PLM_CONF_KEY]
    plm_field = f"{field}.{PLM_CONF_KEY}"
    config, reason = read_plm_config(name)
    if config is None:
        if reason is None:  # a hub name not in the local cache: checked when the PLM is loaded
            return
        if plm_required:
            raise ValueError(f"{plm_field}={name!r}: {reason}; set it to the PLM's directory or Hugging Face name")
        logging.warning(
            f"{plm_field}={name!r}: {reason}. Decoding and training on dumped plm_feats need no PLM, but training "
            "without plm_feats will fail at the first batch: set it to the PLM's directory or Hugging Face name"
        )
        return
    check_plm_config(
        config, name, conf.get("plm_layer", -1), conf.get("plm_max_length"), plm_dim, plm_field, PLM_DIM_FIELD
    )


def _convert(f: Field, value: Any, name: str) -> Any:
    """``value`` as the field's type, checked; one-line error naming ``name`` otherwise."""
    if value is None and f.optional:
        return None
    if f.kind in (float, int):
        number = _number(value)
        what = "an integer" if f.kind is int else "a finite number"
        if number is None or (f.kind is int and not number.is_integer()):
            raise TypeError(f"{name}={value!r} is not {what}: write it as e.g. {name.split('.')[-1]}: {f.example!r}")
        if f.kind is int:
            number = int(number)
        value = number
    elif f.kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name}={value!r} must be true or false")
    elif f.kind is str:
        if not isinstance(value, str):
            raise TypeError(f"{name}={value!r} must be a string, e.g. {name.split('.')[-1]}: {f.example}")
    elif f.kind is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a mapping of option: value, got {type(value).__name__} {value!r}")
        value = dict(value)
    if f.check is not None and not f.check[0](value):
        raise ValueError(f"{name}={value!r} {f.check[1]}")
    return value


def _number(value: Any) -> Optional[float]:
    """A finite float from a number or a string spelling one ('3e-1', ' 0.5 '); None otherwise (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def checked_model_conf(init: Callable) -> Callable:
    """Decorator of ESPnetOTModel.__init__: every keyword argument but the model's parts is its model_conf and
    goes through :func:`check_model_conf` (with the adapter's ``plm_dim``) before the constructor (and typeguard)
    sees it."""

    @functools.wraps(init)
    def wrapper(self, *args: Any, **kwargs: Any) -> None:
        parts = {k: kwargs.pop(k) for k in model_parts() if k in kwargs}
        conf = check_model_conf(kwargs, plm_dim=getattr(parts.get("postencoder"), "plm_dim", None))
        init(self, *args, **parts, **conf)

    return wrapper
