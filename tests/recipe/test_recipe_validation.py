"""run.sh / run_toy.sh misuse fails in one line; toy-cache options that cannot apply are reported, never silently dropped."""

import json
import subprocess

import pytest
from test_recipe import _espnet_checkout, copy_recipe, recipe_env

from helpers import PYTHON, REPO, offline_env


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return copy_recipe(tmp_path_factory.mktemp("recipe") / "repo")


@pytest.mark.parametrize(
    "args,line",
    [
        (["--stage", "abc"], "./run.sh: --stage must be a non-negative integer, got 'abc'"),
        (["--stop_stage", "1x"], "./run.sh: --stop_stage must be a non-negative integer, got '1x'"),
        (["--nj", "-2"], "./run.sh: --nj must be a non-negative integer, got '-2'"),
        (["--plm_nj", "two"], "./run.sh: --plm_nj must be a positive integer, got 'two'"),
    ],
)
def test_non_numeric_stage_gives_one_line(recipe, args, line):
    res = subprocess.run(["./run.sh", *args], cwd=recipe, env=recipe_env(), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == line and res.stdout == "", res.stderr


@pytest.mark.parametrize("script", ["./run.sh", "./run_toy.sh"])
def test_stage_after_stop_stage_gives_one_line(recipe, script):
    res = subprocess.run(
        [script, "--stage", "12", "--stop_stage", "11"],
        cwd=recipe,
        env=recipe_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (res.returncode, res.stderr.strip(), res.stdout) == (
        2,
        f"{script}: --stage 12 is after --stop_stage 11, so no stage would run; give --stage <= --stop_stage",
        "",
    )


def _espnet_root():
    root = _espnet_checkout()
    if root is None:
        pytest.fail("no ESPnet checkout: set ESPNET_ROOT or run `make espnet`") if _ci() else pytest.skip(
            "no ESPnet checkout (set ESPNET_ROOT to an ESPnet source tree, or run `make espnet`)"
        )
    return root


def _reused_toy_dir(toy):
    """A toy corpus and PLM that run_toy.sh reuses without building anything."""
    (toy / "corpus" / "data_aishell" / "transcript").mkdir(parents=True)
    (toy / "corpus" / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt").write_text("")
    (toy / "plm").mkdir()
    (toy / "plm" / "config.json").write_text(json.dumps({"hidden_size": 32}))
    (toy / "plm" / ".toy_opts").write_text("--steps 20")
    return toy


def test_unknown_option_is_rejected_before_any_stage(recipe, tmp_path):
    """run.sh --stage 11 --foo bar: one line before the PLM dump (asr.sh would reject --foo only after it)."""
    env = recipe_env({"ESPNET_ROOT": str(_espnet_root())})
    res = subprocess.run(
        ["./run.sh", "--stage", "11", "--stop_stage", "12", "--inference_args", "--nbest 1", "--foo", "bar"],
        cwd=recipe,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (res.returncode, res.stderr.strip().splitlines(), res.stdout) == (
        2,
        [
            "./run.sh: unknown option --foo: not an option of run.sh or asr.sh (their options are the variables at "
            "the top of each script)"
        ],
        "",
    ), res.stderr
    assert not (recipe / "dump").exists()
    toy = _reused_toy_dir(tmp_path / "toy")
    res = subprocess.run(
        [
            "./run_toy.sh",
            "--toy_dir",
            str(toy),
            "--plm_dump_opts",
            "--dtype float16",
            "--train-set",
            "x",
            "--max_epochs",
            "3",
        ],
        cwd=recipe,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (res.returncode, res.stderr.strip().splitlines()) == (
        2,
        [
            "./run_toy.sh: unknown option --max_epochs: not an option of run_toy.sh, run.sh or asr.sh (their options "
            "are the variables at the top of each script)"
        ],
    ), res.stderr
    assert "Toy corpus" not in res.stdout


def test_passed_on_options_are_read_from_the_scripts_at_run_time(recipe, tmp_path):
    """local/check_options.sh reads the options of asr.sh itself: ESPnet's list, not a copy of it."""
    root = _espnet_root()
    check = [str(recipe / "local" / "check_options.sh"), "./run.sh"]
    asr_sh = root / "egs2" / "TEMPLATE" / "asr1" / "asr.sh"
    ok = subprocess.run(
        [
            *check,
            str(asr_sh),
            "--",
            "--use_k2",
            "true",
            "--train-set",
            "a",
            "--config",
            "c.conf",
            "--lm_fold_length",
            "9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ok.returncode, ok.stderr) == (0, "")
    fake = tmp_path / "asr.sh"  # a newer asr.sh with an option of its own; variables after the parsing are not options
    fake.write_text(
        "#!/usr/bin/env bash\nstage=1\nbrand_new=3   # x\nhelp_message=$(cat << EOF\nnot_an_option=1\n"
        "EOF\n)\n. utils/parse_options.sh\nlater=2\n"
    )
    assert subprocess.run([*check, str(fake), "--", "--brand-new", "4", "--stage", "2"], timeout=60).returncode == 0
    for name in ("--not_an_option", "--later", "--help_message"):
        res = subprocess.run([*check, str(fake), "--", name, "1"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and f"unknown option {name}:" in res.stderr, (name, res.stderr)


def test_toy_options_on_a_reused_cache_are_reported(recipe, tmp_path):
    root = _espnet_root()
    toy = _reused_toy_dir(tmp_path / "toy")
    env = recipe_env({"ESPNET_ROOT": str(root)})

    def run(*opts):
        # a missing --asr_config stops run_toy.sh right after the toy step, before any stage
        res = subprocess.run(
            ["./run_toy.sh", "--toy_dir", str(toy), "--asr_config", "no_such.yaml", *opts],
            cwd=recipe,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 1 and "--asr_config no_such.yaml does not exist" in res.stderr, res.stderr
        return [line.split(") ", 1)[-1] for line in res.stdout.splitlines() if "WARNING" in line]

    assert run("--toy_plm_opts", "--steps 20") == []  # same options as the cache: nothing to say
    assert run("--toy_corpus_opts", "--num-train 10", "--toy_plm_opts", "--steps 50") == [
        f"WARNING: --toy_corpus_opts '--num-train 10' ignored: {toy}/corpus was built with ''; "
        "delete it or pick another --toy_dir to rebuild",
        f"WARNING: --toy_plm_opts '--steps 50' ignored: {toy}/plm was built with '--steps 20'; "
        "delete it or pick another --toy_dir to rebuild",
    ]


def _ci() -> bool:
    import os

    return os.environ.get("CI", "").lower() == "true"


def test_run_sh_still_parses():
    for script in ("run.sh", "run_toy.sh"):
        subprocess.run(["bash", "-n", str(REPO / "egs2" / "aishell_ot" / "asr1" / script)], check=True)


# ---------------------------------------------------------------- local/config_plm.py: the model's own checks, first

CONFIG_PLM = REPO / "egs2" / "aishell_ot" / "asr1" / "local" / "config_plm.py"


ESPNET_NOTICE = "Failed to import Flash Attention"


def _config_plm(tmp_path, model_conf, *args, plm=None):
    """Run local/config_plm.py on the paper's TOT config with model_conf changed; (returncode, stderr lines)."""
    import yaml

    conf = yaml.safe_load((REPO / "egs2/aishell_ot/asr1/conf/train_asr_tot_cakt.yaml").read_text(encoding="utf-8"))
    conf["model_conf"] = model_conf(conf["model_conf"]) if callable(model_conf) else model_conf
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    argv = ["--config", str(path), *args] + (["--plm", str(plm)] if plm else [])
    res = subprocess.run(
        [PYTHON, str(CONFIG_PLM), *argv], cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=300
    )
    # ESPnet prints a notice when it imports its attention module without flash_attn; it is not ours to count
    return res.returncode, [line for line in res.stderr.strip().splitlines() if not line.startswith(ESPNET_NOTICE)]


@pytest.mark.parametrize(
    "model_conf, message",
    [
        (lambda c: dict(c, ot_wieght=1.0), "model_conf.ot_wieght: unknown key (did you mean ot_weight?)"),
        (lambda c: dict(c, plm_layer="abc"), "model_conf.plm_layer='abc' is not an integer"),
        (lambda c: dict(c, plm_layer=99), "model_conf.plm_layer=99 is out of range for model_conf.plm="),
        (lambda c: dict(c, band=-1), "model_conf.band=-1.0 must be in (0, 1]"),
        (["alignment", "tot"], "model_conf must be a mapping of option: value"),
    ],
)
def test_config_plm_checks_the_model_conf_before_any_stage(tiny_plm_dir, tmp_path, model_conf, message):
    # a typo'd key passed (rc 0) and failed at stage 11 after the whole PLM dump; plm_layer abc or a model_conf
    # list gave a traceback
    rc, lines = _config_plm(tmp_path, model_conf, "--output", str(tmp_path / "out.yaml"), plm=tiny_plm_dir)
    assert rc != 0 and len(lines) == 1, lines
    assert f": {message}" in lines[0], lines
    assert not (tmp_path / "out.yaml").exists()


def test_config_plm_check_only_names_a_missing_plm_directory(tiny_plm_dir, tmp_path):
    # run.sh calls it with --check_only true before stage 1: nothing written, rc 0 for a good config
    rc, lines = _config_plm(tmp_path, lambda c: dict(c, ctc_lambda="3e-1"), "--check_only", "true", plm=tiny_plm_dir)
    assert rc == 0 and lines == [] and sorted(p.name for p in tmp_path.iterdir()) == ["train.yaml"], lines
    rc, lines = _config_plm(tmp_path, lambda c: c, "--check_only", "true", plm=tmp_path / "no_plm")
    assert rc != 0 and len(lines) == 1, lines
    assert f"model_conf.plm={str(tmp_path / 'no_plm')!r}: no such directory" in lines[0], lines
    rc, lines = _config_plm(tmp_path, lambda c: c, "--check_only", "true", plm=tmp_path)
    assert rc != 0 and "has no config.json" in lines[0], lines
