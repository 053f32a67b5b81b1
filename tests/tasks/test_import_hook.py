"""Registration into espnet2.tasks.asr: the .pth-installed import hook, idempotency, install modes."""

import importlib
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from espnet_ot.tasks import import_hook
from helpers import REPO, offline_env, run_python


def _finders():
    return [f for f in sys.meta_path if type(f).__name__ == "PostImportFinder"]


def test_interpreter_start_installs_hook_silently_and_cheaply():
    probe = (
        "import sys; print(type(sys.meta_path[0]).__name__, getattr(sys.meta_path[0], 'target', ''));"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'espnet2', 'espnet', 'torch', 'transformers'}))"
    )
    out = run_python(["-c", probe], cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["PostImportFinder espnet2.tasks.asr", "[]"], (
        "the espnet_ot.pth hook is not active in this environment: reinstall with "
        "`pip install -e .` (or `pip install .`)\n" + out.stdout + out.stderr
    )
    silent = run_python(["-c", "import espnet_ot"], cwd=REPO)
    assert silent.returncode == 0 and silent.stdout == "" and silent.stderr == ""


def test_finder_runs_callback_once_after_the_module_executes(tmp_path, monkeypatch):
    pkg = tmp_path / "eot_dummy_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "target.py").write_text("VALUE = 41\n\ndef f():\n    return VALUE + 1\n")
    (pkg / "broken.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    calls = []
    before = list(sys.meta_path)
    try:
        finder = import_hook.install("eot_dummy_pkg.target", lambda m: calls.append(m.f()))
        assert import_hook.install("eot_dummy_pkg.target", calls.append) is finder  # once
        assert calls == []
        mod = importlib.import_module("eot_dummy_pkg.target")
        assert calls == [42]
        importlib.import_module("eot_dummy_pkg.target")
        assert calls == [42]
        import inspect

        assert "VALUE = 41" in inspect.getsource(mod)  # loader attributes are delegated

        def fail(module):
            raise RuntimeError("boom")

        import_hook.install("eot_dummy_pkg.broken", fail)
        with pytest.warns(UserWarning, match="registration into eot_dummy_pkg.broken failed"):
            broken = importlib.import_module("eot_dummy_pkg.broken")
        assert broken.VALUE == 1  # the import itself still succeeds
    finally:
        sys.meta_path[:] = before
        for name in ("eot_dummy_pkg", "eot_dummy_pkg.target", "eot_dummy_pkg.broken"):
            sys.modules.pop(name, None)


def test_registration_is_idempotent_and_import_espnet_ot_registers():
    import espnet2.tasks.asr as asr

    import espnet_ot
    from espnet_ot.asr.espnet_ot_model import ESPnetOTModel
    from espnet_ot.asr.postencoder.cakt_adapter import CAKTAdapter
    from espnet_ot.tasks.registration import register

    assert asr.model_choices.get_class("espnet_ot") is ESPnetOTModel
    assert asr.postencoder_choices.get_class("cakt_adapter") is CAKTAdapter
    # Unregister, then re-running espnet_ot's import-time code registers again.
    del asr.model_choices.classes["espnet_ot"]
    del asr.postencoder_choices.classes["cakt_adapter"]
    asr._espnet_ot_registered = False
    importlib.reload(espnet_ot)
    assert asr.model_choices.get_class("espnet_ot") is ESPnetOTModel
    for _ in range(2):
        register()
        register(asr)
        importlib.reload(espnet_ot)
    assert len(_finders()) == 1
    names = asr.ASRTask.optional_data_names(train=True, inference=False)
    assert names.count("plm_feats") == 1 and "prompt" in names
    assert "plm_feats" not in asr.ASRTask.optional_data_names(train=False, inference=True)
    assert list(asr.model_choices.classes).count("espnet_ot") == 1


def _throwaway_venv(root: Path) -> Path:
    """A venv without pip whose dependencies come from this interpreter's site-packages."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Dependencies (setuptools<74, wheel, ...) from the current environment, after our own files; every
    # site-packages on sys.path, so that this also works in an environment layered over another (make compat).
    deps = [p for p in sys.path if Path(p).name == "site-packages"] or [sysconfig.get_paths()["purelib"]]
    (Path(site) / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    return python


@pytest.mark.parametrize(
    "mode,pip_args",
    [
        ("regular", []),
        ("editable-develop", ["-e"]),  # pip 23 + setuptools<74 without pyproject.toml
        ("editable-pep660", ["--use-pep517", "-e"]),
    ],
)
def test_pth_hook_is_installed_by_every_install_mode(mode, pip_args, tmp_path):
    pytest.importorskip("setuptools", reason="needs setuptools to build")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "espnet_ot", src / "espnet_ot", ignore=shutil.ignore_patterns("__pycache__"))
    python = _throwaway_venv(tmp_path)
    env = offline_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            *pip_args,
            str(src),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import sys; print(type(sys.meta_path[0]).__name__); print(sys.modules['espnet_ot'].__file__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    assert probe.returncode == 0 and probe.stderr == "", probe.stderr
    finder, location = probe.stdout.splitlines()
    assert finder == "PostImportFinder"
    expected_root = src if mode.startswith("editable") else tmp_path / "venv"
    assert Path(location).resolve().is_relative_to(expected_root.resolve()), location
