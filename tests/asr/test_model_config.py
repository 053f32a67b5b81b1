"""model_conf of model espnet_ot: every field checked when the model is built, in one line naming it (model_config)."""

import inspect
import json
import logging
import math

import pytest
import yaml

from helpers import build_tiny_ot_model, char_token_list

TOKENS = char_token_list()


def build(**conf):
    return build_tiny_ot_model(TOKENS, conf.pop("alignment", "tot"), **conf)


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture
def no_plm_load(monkeypatch):
    """The checks at build time read config.json only: loading the PLM (weights or tokenizer) fails the test."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the PLM must not be loaded when the model is built")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)


# ------------------------------------------------------------------ item 7: numeric fields checked at build time


@pytest.mark.parametrize(
    "key, value",
    [
        ("ot_weight", math.nan),
        ("ot_weight", math.inf),
        ("ot_weight", -1.0),
        ("ctc_lambda", math.nan),
        ("band", -1.0),
        ("band", math.nan),
        ("band", 0.0),
        ("plm_max_length", 0),
        ("plm_max_length", -2),
        ("plm_max_length", 2),
        ("plm_layer", 1.5),
        ("distill_weight", -0.5),
        ("distill_weight", math.inf),
        ("lsm_weight", math.nan),
    ],
)
def test_bad_numbers_in_model_conf_fail_when_the_model_is_built(key, value):
    # ot_weight NaN/inf gave a NaN/inf loss, band -1 or NaN a band_mass of 0, plm_max_length 0 no truncation and
    # -2 cut two tokens: all silently, at the first batch or never
    with pytest.raises((ValueError, TypeError), match=rf"^model_conf\.{key}=") as e:
        build(**{key: value})
    one_line(e)


def test_bad_keys_and_types_are_named():
    with pytest.raises(ValueError, match=r"^model_conf\.ot_wieght: unknown key \(did you mean ot_weight\?\)") as e:
        build(ot_wieght=1.0)
    one_line(e)
    with pytest.raises(TypeError, match=r"^model_conf\.plm_layer='abc' is not an integer") as e:
        build(plm_layer="abc")
    one_line(e)
    with pytest.raises(TypeError, match=r"^model_conf\.ot_in_eval='yes' must be true or false"):
        build(ot_in_eval="yes")
    with pytest.raises(ValueError, match=r"^model_conf\.ctc_weight=0\.5 is not 1\.0: model espnet_ot is pure CTC"):
        build(ctc_weight=0.5)


def test_distillation_without_a_coupling_is_refused_by_the_checks_alone():
    from espnet_ot.asr.model_config import check_model_conf

    # the recipe runs these checks before stage 1: the error must not wait for the model's constructor
    with pytest.raises(
        ValueError, match=r"^model_conf\.distill_weight=0\.1: the distillation pools .* 'none' does not"
    ):
        check_model_conf({"alignment": "none", "distill_weight": "1e-1"})
    assert check_model_conf({"alignment": "none", "distill_weight": 0})["distill_weight"] == 0.0


# ------------------------------------------------------------------ item 18: numbers written as YAML strings


def test_yaml_string_numbers_are_accepted_in_every_numeric_field():
    # PyYAML reads 3e-1 as the string '3e-1': alignment_conf accepted it, ctc_lambda gave a typeguard error
    conf = yaml.safe_load(
        "ctc_lambda: 3e-1\not_weight: 5e-1\nband: 2e-1\nplm_layer: '-1'\nplm_max_length: '16'\n"
        "lsm_weight: 0e0\nctc_weight: 1e0\nalignment_conf:\n    eps: 5e-1\n"
    )
    assert isinstance(conf["ctc_lambda"], str) and isinstance(conf["ot_weight"], str)
    model = build(**conf)
    assert (model.ctc_lambda, model.ot_weight, model.band) == (0.3, 0.5, 0.2)
    assert model.alignment_config.eps == 0.5
    for value in (model.ctc_lambda, model.ot_weight, model.band):
        assert type(value) is float


def test_the_validator_knows_every_option_of_the_constructor():
    """One list of options: a keyword added to ESPnetOTModel must be added to model_config.OT_FIELDS."""
    from espnet2.asr.espnet_model import ESPnetASRModel

    from espnet_ot.asr import model_config
    from espnet_ot.asr.espnet_ot_model import ESPnetOTModel

    own = {
        k
        for k, p in inspect.signature(ESPnetOTModel.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    base = set(inspect.signature(ESPnetASRModel.__init__).parameters)
    assert own - base <= set(model_config.OT_FIELDS), own - base - set(model_config.OT_FIELDS)
    # distill_weight: known ahead of its constructor argument
    assert set(model_config.OT_FIELDS) - own <= {"distill_weight"}
    assert set(model_config.known_fields()) >= own | (base - set(model_config.model_parts()) - {"self", "kwargs"})


# ------------------------------------------------------------------ item 15: the PLM's config.json at build time


def test_plm_layer_and_width_are_checked_against_config_json_at_build(tiny_plm_dir, tmp_path, no_plm_load):
    # these built and failed only at the first forward, after loading the PLM
    with pytest.raises(ValueError, match=r"^model_conf\.plm_layer=99 is out of range for model_conf\.plm=") as e:
        build(plm=str(tiny_plm_dir), plm_layer=99)
    assert "use -1 (last) or 0..2" in one_line(e)
    with pytest.raises(ValueError, match=r"^model_conf\.plm_max_length=1000 exceeds the 24 input positions") as e:
        build(plm=str(tiny_plm_dir), plm_max_length=1000)
    one_line(e)
    wide = tmp_path / "wide_plm"
    wide.mkdir()
    (wide / "config.json").write_text(
        json.dumps(dict(json.loads((tiny_plm_dir / "config.json").read_text()), hidden_size=48))
    )
    with pytest.raises(ValueError, match=r"^postencoder_conf\.plm_dim=32 but model_conf\.plm=.* has width 48") as e:
        build(plm=str(wide))
    assert "set postencoder_conf.plm_dim: 48" in one_line(e)
    model = build(plm=str(tiny_plm_dir), plm_layer=-3, plm_max_length=24)  # in range: builds, nothing loaded
    assert not model.plm_branch.loaded


def test_a_missing_plm_is_reported_when_the_model_is_built(tmp_path, caplog):
    # decoding and training on dumped plm_feats need no PLM (tests/integration), so the model still builds, but
    # says so at once instead of failing at the first batch without features
    missing = tmp_path / "no_such_plm"
    with caplog.at_level(logging.WARNING):
        model = build(plm=str(missing))
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        m.startswith(f"model_conf.plm={str(missing)!r}: no such directory") and "plm_feats" in m for m in lines
    ), lines
    assert model.plm_branch is not None
