"""plot_coupling draws the coupling the espnet_ot model trains with (same utterance, model saved and loaded via ESPnet)."""

import numpy as np
import pytest
import torch
from test_mechanism import (
    CONFS,
    FEAT_DIM,
    FRAMES,
    PLM_DIM,
    TOKENS,
    TRANSCRIPTS,
    clone,
    coupling_of,
    h_a_of,
    make_batch,
    method_of,
    ref_transport,
    utterances,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("case, include_special", [("gmot-mix", True), ("tot", False)])
def test_plot_coupling_draws_the_models_coupling(case, include_special, tmp_path):
    """plot_coupling, loading a saved model through ESPnet, computes the coupling the model trains with."""
    import yaml
    from espnet2.tasks.asr import ASRTask

    from espnet_ot.asr import plot_coupling
    from helpers import write_token_list

    conf = {
        "input_size": FEAT_DIM,
        "frontend": None,
        "encoder": "conformer",
        "encoder_conf": dict(
            output_size=32,
            attention_heads=2,
            linear_units=64,
            num_blocks=1,
            input_layer="conv2d",
            cnn_module_kernel=7,
            dropout_rate=0.0,
            positional_dropout_rate=0.0,
            attention_dropout_rate=0.0,
        ),
        "postencoder": "cakt_adapter",
        "postencoder_conf": {"plm_dim": PLM_DIM},
        "model": "espnet_ot",
        "model_conf": {
            "alignment": method_of(case),
            "alignment_conf": dict(CONFS[case]),
            "ot_include_special": include_special,
            "plm": str(tmp_path / "no_plm_here"),
        },
    }
    (tmp_path / "in.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    tokens = write_token_list(tmp_path / "tokens.txt", TOKENS)
    args = ASRTask.get_parser().parse_args(
        [
            "--config",
            str(tmp_path / "in.yaml"),
            "--token_list",
            str(tokens),
            "--token_type",
            "char",
            "--output_dir",
            str(tmp_path / "exp"),
        ]
    )
    torch.manual_seed(3)
    model = ASRTask.build_model(args)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(vars(args)), encoding="utf-8")

    batch = make_batch(seed=4)
    n = int(batch["plm_feats_lengths"][0])
    one = {k: v[:1].clone() for k, v in batch.items()}
    one["speech"] = one["speech"][:, : FRAMES[0]]
    z = batch["plm_feats"][0, :n]
    model.eval()
    with torch.no_grad():
        _, stats, _ = model(**clone(one))
    h_a, h_lens = h_a_of(model, one)

    lm = plot_coupling.LoadedModel(tmp_path / "config.yaml", tmp_path / "model.pth", "cpu", None, None)
    utt = plot_coupling.Utterance("u0", one["speech"][0].numpy(), TRANSCRIPTS[0])
    tok = ["[CLS]"] + list(TRANSCRIPTS[0]) + ["[SEP]"]
    panel = plot_coupling.compute_panel(lm, utt, method_of(case), z, tok, None)
    gamma = panel.coupling.astype(np.float64)

    ((_, h, zn, _),) = utterances(h_a, h_lens, one, include_special)
    assert gamma.shape == (h.shape[0], zn.shape[0])
    np.testing.assert_allclose(gamma, coupling_of(method_of(case), CONFS[case], h, zn).numpy(), rtol=0, atol=1e-6)
    entropy = float(-(gamma * np.log(np.where(gamma > 0, gamma, 1.0))).sum())
    assert entropy == pytest.approx(float(stats["coupling_entropy"]), rel=1e-5)
    assert panel.band_mass == pytest.approx(float(stats["band_mass"]), abs=1e-6)
    l_ot = ref_transport(h.double().numpy(), zn.double().numpy(), gamma, method_of(case), CONFS[case])
    assert l_ot == pytest.approx(float(stats["loss_ot"]), rel=1e-4)
    assert panel.tokens == (tok if include_special else tok[1:-1])


# ------------------------------------------------------------------ bad arguments: one line, before any model loads


@pytest.fixture
def stub_models(monkeypatch):
    """LoadedModel and compute_panel replaced by stubs (no model files needed); returns the models built."""
    from espnet_ot.asr import plot_coupling

    built = []

    class StubModel:
        alignment, fs, label = "tot", 16000, "stub"

        def __init__(self, *args):
            built.append(args)

        def z_l(self, utt):
            return torch.zeros(3, 4), ["[CLS]", "好", "[SEP]"]

    def panel(lm, utt, method, z, tokens, eps):
        return plot_coupling.Panel(method, np.full((5, 3), 1 / 15), tokens, 0.2, None)

    monkeypatch.setattr(plot_coupling, "LoadedModel", StubModel)
    monkeypatch.setattr(plot_coupling, "compute_panel", panel)
    return built


def _wav(path):
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.zeros(1600, dtype=np.float32), 16000)
    return path


def _plot(args, capsys):
    """(exit code, stderr lines, stdout) of plot_coupling with a stub model."""
    from espnet_ot.bin import plot_coupling

    code = 0
    try:
        plot_coupling.main(["--asr_train_config", "c.yaml", "--asr_model_file", "m.pth", *map(str, args)])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.err.strip().splitlines(), out.out


def test_plot_coupling_num_utts_must_be_positive(stub_models, tmp_path, capsys):
    data = tmp_path / "data"
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "b.wav")
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 {tmp_path / 'a.wav'}\nu2 {tmp_path / 'b.wav'}\n")
    (data / "text").write_text("u1 好\nu2 好\n", encoding="utf-8")
    out = tmp_path / "out"
    code, err, _ = _plot(["--data_dir", data, "--num_utts", "0", "--output_dir", out], capsys)
    assert (code, err) == (
        1,
        ["plot_coupling: error: --num_utts must be >= 1, got 0 (or name the utterances with --utt_ids)"],
    )
    assert stub_models == [] and not out.exists()
    code, err, stdout = _plot(["--data_dir", data, "--num_utts", "1", "--output_dir", out], capsys)
    assert (
        code == 0 and stdout == f"plot_coupling: wrote {out / 'u1.png'}\n" and sorted(out.iterdir()) == [out / "u1.png"]
    )


def test_plot_coupling_output_must_name_a_png_file(stub_models, tmp_path, capsys):
    wav = _wav(tmp_path / "a.wav")
    target = tmp_path / "pictures"
    target.mkdir()
    code, err, stdout = _plot(["--wav", wav, "--text", "好", "--output", target], capsys)
    assert (code, err) == (
        1,
        [
            f"plot_coupling: error: --output {target} is a directory: give a file name such as "
            f"{target / 'UTT.png'}, or --output_dir {target} (one <utt_id>.png per utterance)"
        ],
    )
    assert stdout == "" and not (tmp_path / "pictures.png").exists() and stub_models == []
    code, err, _ = _plot(["--wav", wav, "--text", "好", "--output", tmp_path / "picture"], capsys)
    assert (code, err) == (
        1,
        [
            f"plot_coupling: error: --output {tmp_path / 'picture'}: give a file name ending in "
            ".png (the picture is a PNG)"
        ],
    )
    code, err, _ = _plot(["--wav", wav, "--text", "好", "--output_dir", wav], capsys)
    assert (code, err) == (
        1,
        [f"plot_coupling: error: --output_dir {wav} is a file, not a directory: give a directory"],
    )
    assert not (tmp_path / "picture.png").exists() and stub_models == []


def test_plot_coupling_checks_the_audio_before_loading_a_model(stub_models, tmp_path, capsys):
    missing = tmp_path / "missing.wav"
    code, err, _ = _plot(["--wav", missing, "--text", "好", "--output", tmp_path / "x.png"], capsys)
    assert (code, err) == (1, [f"plot_coupling: error: --wav {missing} does not exist"])
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio")
    code, err, _ = _plot(["--wav", not_audio, "--text", "好", "--output", tmp_path / "x.png"], capsys)
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"plot_coupling: error: --wav {not_audio} is not a readable audio file ("), err
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 {missing}\n")
    (data / "text").write_text("u1 好\n", encoding="utf-8")
    code, err, _ = _plot(["--data_dir", data, "--output_dir", tmp_path / "out"], capsys)
    assert (code, err) == (
        1,
        [f"plot_coupling: error: --data_dir {data}: wav.scp names {missing} for u1, which does not exist"],
    )
    assert stub_models == [] and not (tmp_path / "out").exists()


def test_plot_coupling_rejects_a_data_dir_with_a_repeated_utterance(stub_models, tmp_path, capsys):
    """ESPnet's own reader of wav.scp and text: an utterance id given twice is an error naming the file and line,
    never a silent choice of one of the lines."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 {_wav(tmp_path / 'a.wav')}\n")
    (data / "text").write_text("u1 好\nu1 你好\n", encoding="utf-8")
    code, err, stdout = _plot(["--data_dir", data, "--output_dir", tmp_path / "out"], capsys)
    assert (code, err) == (1, [f"plot_coupling: error: --data_dir {data}: u1 is duplicated ({data / 'text'}:2)"])
    assert stdout == "" and stub_models == [] and not (tmp_path / "out").exists()
