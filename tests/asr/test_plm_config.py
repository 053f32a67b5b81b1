"""Where a PLM comes from and its options checked without loading it (espnet_ot.asr.plm_config)."""

import json

import pytest

from espnet_ot.asr.plm_config import check_plm_config, check_plm_options, is_local_plm, read_plm_config


@pytest.mark.parametrize(
    "name, local",
    [
        ("bert-base-chinese", False),
        ("google-bert/bert-base-chinese", False),
        ("./bert", True),
        ("/abs/bert", True),
        ("~/bert", True),
        ("a/b/c", True),
        ("bert/", True),
        ("bert base", True),
    ],
)
def test_is_local_plm_tells_paths_from_hub_names(name, local):
    assert is_local_plm(name) is local


def test_is_local_plm_when_the_first_component_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_local_plm("dump/plm")
    (tmp_path / "dump").mkdir()
    assert is_local_plm("dump/plm")


def test_read_plm_config_gives_the_config_or_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    assert read_plm_config(str(tmp_path / "none"))[1].startswith("no such directory")
    assert "has no config.json" in read_plm_config(str(tmp_path))[1]
    (tmp_path / "config.json").write_text("[1, 2]", encoding="utf-8")
    assert read_plm_config(str(tmp_path))[1].endswith("is not a JSON object")
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 2}), encoding="utf-8")
    assert read_plm_config(str(tmp_path)) == ({"num_hidden_layers": 2}, None)
    assert read_plm_config("no-such-org-xyz/no-such-bert-xyz") == (
        None,
        "HF_HUB_OFFLINE=1 and it is not in the Hugging Face cache",
    )


def test_check_plm_config_and_options_name_the_field():
    config = {"num_hidden_layers": 2, "max_position_embeddings": 24, "hidden_size": 8}
    check_plm_config(config, "p", layer=-3, max_length=24, plm_dim=8)  # -3 = the embeddings: in range
    with pytest.raises(ValueError, match=r"^model_conf.plm_layer=3 is out of range .*use -1 \(last\) or 0..2$"):
        check_plm_config(config, "p", layer=3)
    with pytest.raises(ValueError, match=r"^--plm_max_length=25 exceeds the 24 input positions of --plm='p'"):
        check_plm_config(config, "p", max_length=25, field="--plm")
    with pytest.raises(ValueError, match=r"set postencoder_conf.plm_dim: 8$"):
        check_plm_config(config, "p", plm_dim=16)
    check_plm_config({}, "p", layer=99, max_length=999, plm_dim=1)  # keys the config lacks are not checked
    with pytest.raises(TypeError, match=r"^model_conf.plm_layer='1' must be an integer"):
        check_plm_options("1", None)
    with pytest.raises(ValueError, match=r"^model_conf.plm_max_length=2 must be an integer >= 3"):
        check_plm_options(-1, 2)
    check_plm_options(-1, 3)
