"""Packaging: ranges in setup.py (a user's ESPnet / torch are kept), exact tested pins in constraints.txt."""

import ast
import re
import subprocess

from packaging.requirements import Requirement
from packaging.version import Version

from helpers import PYTHON, REPO

# ESPnet releases setup.py's range covers; README.md ("Installation") says how each was checked with
# .ci/check_espnet_release.sh (make compat ESPNET=...)
SUPPORTED_ESPNET = ("202412", "202506", "202509", "202511")
USER_ENVIRONMENT = ("espnet", "torch", "torchaudio")


def _setup_value(name: str):
    """The literal value setup.py assigns to `name`."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {name}")


def _install_requires():
    return {Requirement(r).name.lower(): Requirement(r) for r in _setup_value("install_requires")}


def _constraints():
    lines = (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
    return {
        Requirement(x).name.lower(): Requirement(x) for x in (re.sub(r"#.*", "", line).strip() for line in lines) if x
    }


def test_install_requires_never_pins_the_users_espnet_or_torch():
    req = _install_requires()
    for name in USER_ENVIRONMENT:
        assert name in req, name
        assert not any(s.operator in ("==", "===", "~=") for s in req[name].specifier), (name, str(req[name]))
        assert not any(s.operator in ("<", "<=") for s in req[name].specifier), (
            f"{name}: an upper bound would make pip replace a newer {name} the user has"
        )
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


def test_the_toy_packages_are_an_extra_that_make_install_installs():
    """`pip install espnet-ot` alone installs no package only the toy world uses; `[toy]` installs each one
    espnet_ot/toy/extra.py imports (and names when it is missing); `make install` (so make demo / make test) adds it."""
    from espnet_ot.toy.extra import INSTALL, PACKAGES

    toy = {Requirement(r).name.lower() for r in _setup_value("extras_require")["toy"]}
    assert toy == {package for package, _ in PACKAGES.values()}, toy
    assert not toy & set(_install_requires()), toy & set(_install_requires())
    assert INSTALL == "pip install espnet-ot[toy]"
    (install,) = re.findall(r"pip install -c constraints\.txt -e (\S+)", (REPO / "Makefile").read_text())
    assert install == '".[test,toy]"', install


def test_release_check_fails_under_ci_and_skips_loudly_otherwise(tmp_path):
    """make compat's script: a missing prerequisite is a failure under CI=true, a skip naming the remedy elsewhere."""
    import os
    import subprocess

    script = REPO / ".ci" / "check_espnet_release.sh"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["BASE_PYTHON"] = str(tmp_path / "no_such_env" / "bin" / "python")
    runs = {
        ci: subprocess.run(
            ["bash", str(script), "202506", str(tmp_path / "overlay")],
            capture_output=True,
            text=True,
            env=dict(env, **({"CI": ci} if ci else {})),
            timeout=60,
        )
        for ci in ("true", "")
    }
    assert runs["true"].returncode == 1 and "FAILED (CI=true, missing prerequisite)" in runs["true"].stderr
    assert runs[""].returncode == 0 and "SKIPPED, missing prerequisite" in runs[""].stderr
    for run in runs.values():
        assert "make install" in run.stderr, run.stderr
    assert not (tmp_path / "overlay").exists()


def test_readme_states_the_result_of_every_supported_release():
    """docs/install.md's release table has one row per release setup.py's range covers; make compat's default is one."""
    page = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    section = page.split("\n## ", 1)[0]
    for release in SUPPORTED_ESPNET:
        assert len([row for row in section.splitlines() if row.startswith(f"| {release} |")]) == 1, release
    makefile = (REPO / "Makefile").read_text()
    (default,) = re.findall(r"^ESPNET \?= (\d+)$", makefile, flags=re.M)
    (pin,) = _constraints()["espnet"].specifier
    assert default in SUPPORTED_ESPNET and default != pin.version, "make compat must check another release"
    # and `make test` (what CI runs) checks one such release after the suite
    (ci,) = re.findall(r"^CI_ESPNET \?= (\d+)$", makefile, flags=re.M)
    assert ci in SUPPORTED_ESPNET and ci != pin.version
    recipe = makefile.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    assert ".ci/check_espnet_release.sh $(CI_ESPNET)" in recipe, recipe


def test_a_regular_install_ships_the_toy_configs(tmp_path):
    """`pip install .` (not editable) installs what build_py writes: the toy systems' configs must be in it, next
    to espnet_ot/toy/world.py, where world.TOY_CONF looks (package data; conf/demo outside the package was not)."""
    subprocess.run(
        [PYTHON, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    toy = tmp_path / "espnet_ot" / "toy"
    shipped = sorted(p.name for p in (toy / "conf").glob("*.yaml"))
    assert shipped == ["baseline.yaml", "gm_ot.yaml", "ot_bert.yaml", "tot_cakt.yaml"], shipped
    assert shipped == sorted(p.name for p in (REPO / "espnet_ot" / "toy" / "conf").glob("*.yaml"))
    assert (toy / "world.py").is_file() and 'TOY_CONF = Path(__file__).resolve().parent / "conf"' in (
        toy / "world.py"
    ).read_text(encoding="utf-8")
