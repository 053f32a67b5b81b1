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

    from espnet_ot.asr import coupling_plot
    from helpers import write_token_list

    conf = {
        "input_size": FEAT_DIM, "frontend": None,
        "encoder": "conformer",
        "encoder_conf": dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=1, input_layer="conv2d",
                             cnn_module_kernel=7, dropout_rate=0.0, positional_dropout_rate=0.0,
                             attention_dropout_rate=0.0),
        "postencoder": "cakt_adapter", "postencoder_conf": {"plm_dim": PLM_DIM},
        "model": "espnet_ot",
        "model_conf": {"alignment": method_of(case), "alignment_conf": dict(CONFS[case]),
                       "ot_include_special": include_special, "plm": str(tmp_path / "no_plm_here")},
    }
    (tmp_path / "in.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    tokens = write_token_list(tmp_path / "tokens.txt", TOKENS)
    args = ASRTask.get_parser().parse_args(
        ["--config", str(tmp_path / "in.yaml"), "--token_list", str(tokens), "--token_type", "char",
         "--output_dir", str(tmp_path / "exp")])
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

    lm = coupling_plot.LoadedModel(tmp_path / "config.yaml", tmp_path / "model.pth", "cpu", None, None)
    utt = coupling_plot.Utterance("u0", one["speech"][0].numpy(), TRANSCRIPTS[0])
    tok = ["[CLS]"] + list(TRANSCRIPTS[0]) + ["[SEP]"]
    panel = coupling_plot.compute_panel(lm, utt, method_of(case), z, tok, None)
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
