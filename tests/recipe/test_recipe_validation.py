"""run.sh / run_toy.sh misuse fails in one line; toy-cache options that cannot apply are reported, never silently dropped."""

import json
import subprocess

import pytest

from helpers import REPO
from test_recipe import _espnet_checkout, copy_recipe, recipe_env


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
    res = subprocess.run(["./run.sh", *args], cwd=recipe, env=recipe_env(), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and res.stderr.strip() == line and res.stdout == "", res.stderr


def test_toy_options_on_a_reused_cache_are_reported(recipe, tmp_path):
    root = _espnet_checkout()
    if root is None:
        pytest.fail("no ESPnet checkout: set ESPNET_ROOT or run `make espnet`") if _ci() else pytest.skip(
            "no ESPnet checkout (set ESPNET_ROOT to an ESPnet source tree, or run `make espnet`)"
        )
    toy = tmp_path / "toy"
    (toy / "corpus" / "data_aishell" / "transcript").mkdir(parents=True)
    (toy / "corpus" / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt").write_text("")
    (toy / "plm").mkdir()
    (toy / "plm" / "config.json").write_text(json.dumps({"hidden_size": 32}))
    (toy / "plm" / ".toy_opts").write_text("--steps 20")
    env = recipe_env({"ESPNET_ROOT": str(root)})

    def run(*opts):
        # a missing --asr_config stops run_toy.sh right after the toy step, before any stage
        res = subprocess.run(
            ["./run_toy.sh", "--toy_dir", str(toy), "--asr_config", "no_such.yaml", *opts],
            cwd=recipe, env=env, capture_output=True, text=True, timeout=600,
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
