"""Typed, validated options of :func:`espnet_ot.ot.ot_alignment`: the method names and defaults, defined once.

The defaults are read from :func:`~espnet_ot.ot.alignment.ot_alignment`'s signature, so the solver stays the one
place where they are written. Each option is one line of :class:`AlignmentConfig` naming the methods that use
it and the check its value must pass; a keyword added to ``ot_alignment`` is one more line here (a test fails
until it is added).

Example (the model builds its config from ``model_conf.alignment`` and ``model_conf.alignment_conf``)::

    >>> cfg = AlignmentConfig.from_conf("tot", {"eps": "5e-1", "beta": 0.5})
    >>> cfg.eps, cfg.solver_kwargs()["method"]
    (0.5, 'tot')
    >>> AlignmentConfig.from_conf("tot", {"alpha": 0.5})
    Traceback (most recent call last):
    ...
    ValueError: model_conf.alignment_conf.alpha: not used by model_conf.alignment 'tot' (only by gmot); remove it or set model_conf.alignment to gmot
"""

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from espnet_ot.ot.alignment import EDGES, GRADS, METHODS, ot_alignment

NO_ALIGNMENT = "none"  # model_conf.alignment of the plain CTC baseline (no OT branch)
ALIGNMENTS = METHODS + (NO_ALIGNMENT,)
ALIGNMENT_FIELD = "model_conf.alignment"
ALIGNMENT_CONF_FIELD = "model_conf.alignment_conf"

_SOLVER_DEFAULTS: Dict[str, Any] = {
    k: p.default
    for k, p in inspect.signature(ot_alignment).parameters.items()
    if p.default is not inspect.Parameter.empty
}
DEFAULT_METHOD: str = _SOLVER_DEFAULTS["method"]

_ALL = METHODS
_PRIOR = ("tot", "gmot")  # methods whose node cost carries the temporal prior beta * d^2
_GMOT = ("gmot",)

Check = Tuple[Callable[[Any], bool], str]
_POSITIVE: Check = (lambda v: v > 0, "must be > 0")
_NON_NEGATIVE: Check = (lambda v: v >= 0, "must be >= 0")
_UNIT: Check = (lambda v: 0 <= v <= 1, "must be in [0, 1]")


def _option(
    name: str, methods: Tuple[str, ...], check: Optional[Check] = None, choices: Optional[Tuple[str, ...]] = None
):
    """A config field: ot_alignment's default for `name`, the methods using it, its check or choices."""
    return field(default=_SOLVER_DEFAULTS[name], metadata=dict(methods=methods, check=check, choices=choices))


@dataclass(frozen=True)
class AlignmentConfig:
    """Options of one OT alignment method (``ot`` OT-BERT, ``tot`` TOT-CAKT, ``gmot`` GM-OT), validated.

    Attributes are :func:`~espnet_ot.ot.alignment.ot_alignment`'s keyword arguments; see its docstring for their
    meaning. Options that the method does not use keep their defaults and are not passed to the solver.
    """

    method: str = DEFAULT_METHOD
    eps: float = _option("eps", _ALL, _POSITIVE)
    beta: float = _option("beta", _PRIOR, _NON_NEGATIVE)
    alpha: float = _option("alpha", _GMOT, _UNIT)
    edges: str = _option("edges", _GMOT, choices=EDGES)
    edge_mix: float = _option("edge_mix", _GMOT, _UNIT)
    grad: str = _option("grad", _ALL, choices=GRADS)
    max_iter: int = _option("max_iter", _ALL, _POSITIVE)
    tol: float = _option("tol", _ALL, _NON_NEGATIVE)
    relax: Optional[float] = _option("relax", _ALL, _POSITIVE)  # None: hard acoustic marginal
    eps_scaling: float = _option("eps_scaling", _ALL, _UNIT)
    gw_max_iter: int = _option("gw_max_iter", _GMOT, _POSITIVE)
    gw_tol: float = _option("gw_tol", _GMOT, _NON_NEGATIVE)

    def __post_init__(self) -> None:
        """Check every value (direct construction too); errors name ``AlignmentConfig.<key>``."""
        _check_method(self.method, "AlignmentConfig.method")
        for f in _option_fields():
            object.__setattr__(self, f.name, _convert(f, getattr(self, f.name), f"AlignmentConfig.{f.name}"))

    @classmethod
    def options(cls, method: str) -> Tuple[str, ...]:
        """Names of the options that `method` uses."""
        return tuple(f.name for f in _option_fields() if method in f.metadata["methods"])

    @classmethod
    def from_conf(
        cls,
        method: str,
        conf: Optional[Mapping[str, Any]] = None,
        field_name: str = ALIGNMENT_CONF_FIELD,
        method_field: str = ALIGNMENT_FIELD,
    ) -> "AlignmentConfig":
        """Build from a method name and a user mapping (``model_conf.alignment_conf`` of a YAML).

        Raises a one-line ``ValueError``/``TypeError`` naming ``<field_name>.<key>`` for an unknown key, a key
        the method does not use, or a bad value; numbers written as strings (YAML reads ``5e-1`` as the string
        ``'5e-1'``) are converted.
        """
        _check_method(method, method_field)
        if conf is None:
            conf = {}
        if not isinstance(conf, Mapping):
            raise TypeError(f"{field_name} must be a mapping of option: value, got {type(conf).__name__} {conf!r}")
        known = {f.name: f for f in _option_fields()}
        values = {}
        for key, value in conf.items():
            name = f"{field_name}.{key}"
            if key not in known:
                hint = f"; set the method with {method_field}" if key == "method" else ""
                raise ValueError(
                    f"{name}: unknown key; {method_field} {method!r} takes {', '.join(cls.options(method))}{hint}"
                )
            users = known[key].metadata["methods"]
            if method not in users:
                raise ValueError(
                    f"{name}: not used by {method_field} {method!r} (only by {', '.join(users)}); "
                    f"remove it or set {method_field} to {' or '.join(users)}"
                )
            values[key] = _convert(known[key], value, name)
        return cls(method=method, **values)

    def replace(self, field_name: str = "AlignmentConfig", **changes: Any) -> "AlignmentConfig":
        """A copy with some values changed (checked and converted; errors name ``<field_name>.<key>``)."""
        known = {f.name: f for f in _option_fields()}
        for key, value in changes.items():
            if key == "method":
                _check_method(value, f"{field_name}.method")
            elif key not in known:
                raise ValueError(f"{field_name}.{key}: unknown key; known are {', '.join(known)}")
            else:
                changes[key] = _convert(known[key], value, f"{field_name}.{key}")
        return dataclasses.replace(self, **changes)

    def solver_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`~espnet_ot.ot.alignment.ot_alignment`: the method and the options it uses."""
        return dict(method=self.method, **{k: getattr(self, k) for k in self.options(self.method)})


def _option_fields():
    return [f for f in dataclasses.fields(AlignmentConfig) if f.name != "method"]


def _check_method(method: Any, name: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{name}={method!r}: use one of {', '.join(METHODS)}")


def _convert(f: dataclasses.Field, value: Any, name: str) -> Any:
    """The value as the field's type, checked; one-line error naming `name` otherwise."""
    choices = f.metadata["choices"]
    if value is None and f.default is None:  # optional option left unset
        return None
    if choices is not None:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{name}={value!r}: use one of {', '.join(choices)}")
        return value
    number = _number(value)
    if number is None:
        raise TypeError(f"{name}={value!r} is not a finite number: write it as e.g. {f.name}: {f.default!r}")
    if f.type is int:
        if number != int(number):
            raise TypeError(f"{name}={value!r} must be an integer, e.g. {f.name}: {f.default!r}")
        number = int(number)
    check = f.metadata["check"]
    if check is not None and not check[0](number):
        raise ValueError(f"{name}={value!r} {check[1]}")
    return number


def _number(value: Any) -> Optional[float]:
    """A finite float from a number or a string spelling one ('5e-1', ' 0.5 '); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        try:  # numpy / torch scalars
            number = float(value)
        except (TypeError, ValueError):
            return None
    return number if math.isfinite(number) else None
