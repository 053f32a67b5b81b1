"""The resume guard (espnet_ot.tasks.resume_guard): a changed model or alignment setting is refused on resume."""

import argparse
import json

import pytest

from espnet_ot.tasks.resume_guard import SETTINGS_FILE, changed_fields, check_and_record


def args_of(tmp_path, resume=False, **model_conf):
    conf = {"alignment": "tot", "alignment_conf": {"eps": 0.5, "beta": 0.5}, **model_conf}
    return argparse.Namespace(
        model="espnet_ot",
        model_conf=conf,
        postencoder="cakt_adapter",
        postencoder_conf={"plm_dim": 192},
        output_dir=str(tmp_path),
        resume=resume,
        collect_stats=False,
        train_data_path_and_name_and_type=[["a/feats.scp", "plm_feats", "kaldi_ark"]],
    )


def test_changed_fields_names_nested_keys():
    assert changed_fields({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 3}) == ["a.c", "d", "e"]


def test_resume_with_other_settings_is_refused_and_the_same_ones_pass(tmp_path):
    check_and_record(args_of(tmp_path))
    recorded = json.loads((tmp_path / SETTINGS_FILE).read_text())
    assert recorded["model_conf"]["alignment_conf"]["eps"] == 0.5
    (tmp_path / "checkpoint.pth").write_bytes(b"x")
    check_and_record(args_of(tmp_path, resume=True))  # same settings: fine
    changed = args_of(tmp_path, resume=True, alignment="gmot")
    changed.postencoder_conf = {"plm_dim": 768}
    with pytest.raises(RuntimeError) as err:
        check_and_record(changed)
    msg = str(err.value)
    assert "\n" not in msg and "model_conf.alignment" in msg and "postencoder_conf.plm_dim" in msg
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == recorded  # nothing overwritten
    # a fresh training (no --resume) into the directory records its own settings
    check_and_record(changed_fresh := args_of(tmp_path, alignment="gmot"))
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["model_conf"]["alignment"] == "gmot"
    assert changed_fresh.model == "espnet_ot"


def test_other_models_and_collect_stats_are_left_alone(tmp_path):
    a = args_of(tmp_path)
    a.model = "espnet"
    check_and_record(a)
    b = args_of(tmp_path)
    b.collect_stats = True
    check_and_record(b)
    assert not (tmp_path / SETTINGS_FILE).exists()
