"""Bad OT options fail when the model is built, in one line naming `model_conf.alignment_conf.<key>` (AlignmentConfig)."""

import inspect
import sys

import pytest
import torch
import yaml

import espnet_ot.ot as ot_core  # noqa: E402
from espnet_ot.ot.config import ALIGNMENTS, DEFAULT_METHOD, METHODS, AlignmentConfig  # noqa: E402
from helpers import REPO, char_token_list

FIELD = "model_conf.alignment_conf"


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


def test_config_mirrors_ot_alignment_keywords_and_defaults():
    """One source of truth: every keyword of ot_alignment is an option with the solver's own default."""
    params = {
        k: p.default
        for k, p in inspect.signature(ot_core.ot_alignment).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    cfg = AlignmentConfig()
    assert {f for f in vars(cfg)} == set(params), "add the new ot_alignment keyword to AlignmentConfig (one line)"
    for key, default in params.items():
        assert getattr(cfg, key) == default, key
    assert DEFAULT_METHOD == params["method"] and ALIGNMENTS == METHODS + ("none",)
    for method in METHODS:  # every option is used by some method; the solver accepts what the config passes
        assert set(AlignmentConfig.options(method)) <= set(params)
    assert set().union(*(AlignmentConfig.options(m) for m in METHODS)) == set(params) - {"method"}


@pytest.mark.parametrize(
    "method,conf,exc,expected",
    [
        ("tot", {"epsilon": 0.1}, ValueError, f"{FIELD}.epsilon: unknown key; model_conf.alignment 'tot' takes eps"),
        ("tot", {"alpha": 0.5}, ValueError, f"{FIELD}.alpha: not used by model_conf.alignment 'tot' (only by gmot)"),
        ("tot", {"edges": "mix"}, ValueError, f"{FIELD}.edges: not used by model_conf.alignment 'tot'"),
        ("ot", {"beta": 0.5}, ValueError, f"{FIELD}.beta: not used by model_conf.alignment 'ot' (only by tot, gmot)"),
        ("ot", {"gw_tol": 1e-5}, ValueError, f"{FIELD}.gw_tol: not used by model_conf.alignment 'ot'"),
        ("tot", {"eps": "abc"}, TypeError, f"{FIELD}.eps='abc' is not a finite number"),
        ("tot", {"eps": None}, TypeError, f"{FIELD}.eps=None is not a finite number"),
        ("tot", {"eps": True}, TypeError, f"{FIELD}.eps=True is not a finite number"),
        ("tot", {"eps": float("nan")}, TypeError, f"{FIELD}.eps=nan is not a finite number"),
        ("tot", {"eps": 0}, ValueError, f"{FIELD}.eps=0 must be > 0"),
        ("tot", {"beta": -1}, ValueError, f"{FIELD}.beta=-1 must be >= 0"),
        ("gmot", {"alpha": 1.5}, ValueError, f"{FIELD}.alpha=1.5 must be in [0, 1]"),
        ("gmot", {"edges": "graph"}, ValueError, f"{FIELD}.edges='graph': use one of temporal, feature, mix"),
        ("tot", {"grad": "autograd"}, ValueError, f"{FIELD}.grad='autograd': use one of envelope, unrolled"),
        ("tot", {"max_iter": 2.5}, TypeError, f"{FIELD}.max_iter=2.5 must be an integer"),
        ("tot", {"max_iter": 0}, ValueError, f"{FIELD}.max_iter=0 must be > 0"),
        ("tot", {"method": "ot"}, ValueError, f"{FIELD}.method: unknown key"),
        ("tot", [("eps", 1)], TypeError, f"{FIELD} must be a mapping"),
        ("sinkhorn", {}, ValueError, "model_conf.alignment='sinkhorn': use one of ot, tot, gmot"),
    ],
)
def test_bad_options_fail_in_one_line_naming_the_key(method, conf, exc, expected):
    with pytest.raises(exc) as err:
        AlignmentConfig.from_conf(method, conf)
    assert one_line(err).startswith(expected), str(err.value)


def test_numbers_written_as_yaml_strings_are_converted():
    conf = yaml.safe_load("eps: 5e-1\nbeta: 1e-1\nmax_iter: 1e3\ntol: 1.0e-4\n")
    assert conf["eps"] == "5e-1"  # PyYAML reads exponent numbers without a dot as strings
    cfg = AlignmentConfig.from_conf("tot", conf)
    assert (cfg.eps, cfg.beta, cfg.max_iter, cfg.tol) == (0.5, 0.1, 1000, 1e-4)
    assert type(cfg.max_iter) is int and type(cfg.eps) is float
    assert cfg.solver_kwargs() == dict(
        method="tot", eps=0.5, beta=0.1, grad="envelope", max_iter=1000, tol=1e-4, relax=None, eps_scaling=0.5
    )


def test_solver_kwargs_carry_only_the_methods_options():
    cfg = AlignmentConfig.from_conf("gmot", {"alpha": 0.3, "edges": "mix", "beta": 0.0})
    assert cfg.solver_kwargs()["alpha"] == 0.3 and cfg.solver_kwargs()["edges"] == "mix"
    as_ot = cfg.replace(method="ot").solver_kwargs()
    assert set(as_ot) == {"method", "eps", "grad", "max_iter", "tol", "relax", "eps_scaling"}
    with pytest.raises(ValueError, match=r"AlignmentConfig.eps=-1 must be > 0"):
        cfg.replace(eps=-1)
    with pytest.raises(ValueError, match=r"AlignmentConfig.method='x'"):
        AlignmentConfig(method="x")


# ------------------------------------------------------------------------ the model validates when it is built

TOKENS = char_token_list()


def build(alignment="tot", **conf):
    pytest.importorskip("espnet2.asr.espnet_model", reason="needs ESPnet")
    from helpers import build_tiny_ot_model

    return build_tiny_ot_model(TOKENS, alignment, **conf)


@pytest.mark.parametrize(
    "alignment,conf,expected",
    [
        ("tot", {"alpha": 0.5}, f"{FIELD}.alpha: not used by model_conf.alignment 'tot'"),
        ("ot", {"edges": "feature"}, f"{FIELD}.edges: not used by model_conf.alignment 'ot'"),
        ("tot", {"eps": -1.0}, f"{FIELD}.eps=-1.0 must be > 0"),
        ("gmot", {"grad": "autograd"}, f"{FIELD}.grad='autograd'"),
        ("tot", {"eps": "half"}, f"{FIELD}.eps='half' is not a finite number"),
        ("none", {"eps": 0.5}, f"{FIELD}.eps: not used by model_conf.alignment 'none'"),
    ],
)
def test_model_rejects_bad_alignment_conf_when_built(alignment, conf, expected):
    with pytest.raises((ValueError, TypeError)) as err:
        build(alignment, alignment_conf=conf)
    assert one_line(err).startswith(expected), str(err.value)


def test_model_accepts_yaml_string_numbers_and_uses_them(single_thread):
    conf = yaml.safe_load("eps: 5e-1\nbeta: 2e-1\n")
    model = build("tot", alignment_conf=conf)
    assert model.alignment_config == AlignmentConfig(method="tot", eps=0.5, beta=0.2)
    g = torch.Generator().manual_seed(0)
    h, z = torch.randn(2, 9, 32, generator=g), torch.randn(2, 6, 32, generator=g)
    h_lens, z_lens = torch.tensor([9, 7]), torch.tensor([6, 4])
    loss_ot, loss_align, _, _ = model._ot_branch(h, h_lens, z, z_lens, batch_size=2)
    h_mask = torch.arange(9)[None] < h_lens[:, None]
    z_mask = torch.arange(6)[None] < z_lens[:, None]
    ref = ot_core.ot_alignment(h, z, h_mask, z_mask, method="tot", eps=0.5, beta=0.2)
    torch.testing.assert_close(loss_ot, ref.loss.sum() / 2)


def test_recipe_helper_checks_the_options_before_any_stage():
    pytest.importorskip("espnet2", reason="the recipe helper reads ESPnet's option types: needs ESPnet")
    sys.path.insert(0, str(REPO / "egs2" / "aishell_ot" / "asr1" / "local"))
    try:
        import config_plm
    finally:
        sys.path.pop(0)
    conf = yaml.safe_load((REPO / "egs2/aishell_ot/asr1/conf/train_asr_tot_cakt.yaml").read_text())
    conf["model_conf"]["alignment_conf"]["alpha"] = 0.5
    with pytest.raises(ValueError, match=rf"^{FIELD}.alpha: not used by model_conf.alignment 'tot'"):
        config_plm.plm_options(conf)


def test_every_training_yaml_has_valid_ot_options():
    toy = sorted((REPO / "espnet_ot/toy/conf").glob("*.yaml"))  # the toy's configs (package data)
    assert len(toy) == 4, toy
    paths = sorted((REPO / "egs2/aishell_ot/asr1/conf").rglob("train_*.yaml")) + toy
    checked = 0
    for path in paths:
        conf = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        mc = conf.get("model_conf") or {}
        if conf.get("model") == "espnet_ot" and mc.get("alignment", DEFAULT_METHOD) != "none":
            AlignmentConfig.from_conf(mc.get("alignment", DEFAULT_METHOD), mc.get("alignment_conf"))
            checked += 1
    assert checked >= 10


def test_plot_coupling_takes_the_models_settings():
    """plot_coupling's panels use the loaded model's AlignmentConfig (method swapped), not a re-read YAML."""
    from types import SimpleNamespace

    import numpy as np

    from espnet_ot.asr.plot_coupling import compute_panel
    from espnet_ot.asr.plot_coupling_inputs import Utterance

    g = torch.Generator().manual_seed(0)
    h, z = torch.randn(12, 8, generator=g), torch.randn(5, 8, generator=g)
    cfg = AlignmentConfig.from_conf("gmot", {"eps": "2e-1", "alpha": 0.3, "edges": "mix", "beta": 0.1})
    lm = SimpleNamespace(
        alignment_config=cfg, include_special=True, label="m", frame_shift_s=0.04, h_a=lambda speech: h
    )
    utt = Utterance("u", np.zeros(10, dtype=np.float32), "abc")
    tokens = list("12345")
    for method in METHODS:
        panel = compute_panel(lm, utt, method, z, tokens, None)
        ref = ot_core.ot_alignment(
            h[None],
            z[None],
            torch.ones(1, 12, dtype=torch.bool),
            torch.ones(1, 5, dtype=torch.bool),
            **cfg.replace(method=method).solver_kwargs(),
        )
        np.testing.assert_allclose(panel.coupling, ref.coupling[0].numpy(), rtol=1e-5, atol=1e-7)
        assert "eps=0.2" in panel.title
    assert "alpha=0.3, mix edges" in compute_panel(lm, utt, "gmot", z, tokens, None).title
    assert "eps=0.7" in compute_panel(lm, utt, "tot", z, tokens, 0.7).title
