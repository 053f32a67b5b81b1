"""Packaging: ranges in setup.py (a user's ESPnet / torch are kept), exact tested pins in constraints.txt."""

import ast
import re

from packaging.requirements import Requirement
from packaging.version import Version

from helpers import REPO

# ESPnet releases setup.py's range covers; README.md ("ESPnet integration") says which were checked with
# .ci/check_espnet_release.sh (make compat ESPNET=...)
SUPPORTED_ESPNET = ("202412", "202506", "202509", "202511")
USER_ENVIRONMENT = ("espnet", "torch", "torchaudio")


def _install_requires():
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "install_requires" for t in node.targets):
            return {Requirement(r).name.lower(): Requirement(r) for r in ast.literal_eval(node.value)}
    raise AssertionError("setup.py has no install_requires list")


def _constraints():
    lines = (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
    return {Requirement(x).name.lower(): Requirement(x) for x in (re.sub(r"#.*", "", l).strip() for l in lines) if x}


def test_install_requires_never_pins_the_users_espnet_or_torch():
    req = _install_requires()
    for name in USER_ENVIRONMENT:
        assert name in req, name
        assert not any(s.operator in ("==", "===", "~=") for s in req[name].specifier), (name, str(req[name]))
        assert not any(s.operator in ("<", "<=") for s in req[name].specifier), (
            f"{name}: an upper bound would make pip replace a newer {name} the user has")
    for release in SUPPORTED_ESPNET:
        assert req["espnet"].specifier.contains(Version(release)), release


def test_constraints_pin_a_set_that_install_requires_allows():
    req, pins = _install_requires(), _constraints()
    assert set(USER_ENVIRONMENT) <= set(pins)
    for name, pin in pins.items():
        (spec,) = pin.specifier
        assert spec.operator == "==", f"constraints.txt: pin {name} exactly"
        if name in req:
            assert req[name].specifier.contains(Version(spec.version), prereleases=True), (name, str(req[name]))
    assert pins["espnet"].specifier.contains(Version(SUPPORTED_ESPNET[-1]))
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
