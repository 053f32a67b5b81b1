"""In-process tests of the espnet_ot model and the cakt_adapter postencoder (tiny conformer + tiny BERT)."""

import pytest
import torch
from espnet2.asr import espnet_model  # a required dependency: a broken install fails here

import espnet_ot.ot as ot_core
from espnet_ot.asr.postencoder.cakt_adapter import CAKTAdapter
from helpers import CHARS, build_tiny_ot_model, char_token_list, tiny_model_kwargs

pytestmark = pytest.mark.usefixtures("single_thread")
TOKENS = char_token_list()
FEAT_DIM = 20


def build(alignment="tot", plm=None, adapter=True, seed=0, **conf):
    return build_tiny_ot_model(TOKENS, alignment, adapter=adapter, seed=seed, plm=plm, **conf)


def make_batch(transcripts, frames=None, seed=0):
    """Random features (B, T, 20) and char ids of `transcripts` padded with -1."""
    g = torch.Generator().manual_seed(seed)
    frames = frames or [72 - 8 * i for i in range(len(transcripts))]
    speech = torch.randn(len(transcripts), max(frames), FEAT_DIM, generator=g)
    ids = [[TOKENS.index(c) for c in t] for t in transcripts]
    text = torch.full((len(ids), max(1, max(map(len, ids)))), -1, dtype=torch.long)
    for b, row in enumerate(ids):
        text[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    return dict(
        speech=speech,
        speech_lengths=torch.tensor(frames),
        text=text,
        text_lengths=torch.tensor([len(r) for r in ids]),
    )


TRANSCRIPTS = ["我们是中国人", "你好", "他说了大" + CHARS[-1], "这个"]


def test_adapter_shapes_and_capture():
    adapter = CAKTAdapter(input_size=16, plm_dim=24, scale=0.5)
    x, lens = torch.randn(3, 7, 16), torch.tensor([7, 5, 2])
    y, out_lens = adapter(x, lens)
    assert adapter.output_size() == 16 and y.shape == x.shape and out_lens is lens
    with adapter.capture() as cap:
        adapter(x, lens)
    assert cap.h_a.shape == (3, 7, 24) and cap.lengths is lens
    torch.testing.assert_close(cap.h_a, adapter.fc2(x))
    expected = x + 0.5 * adapter.norm_hat(adapter.fc3(adapter.norm_a(adapter.fc2(x))))
    torch.testing.assert_close(y, expected)
    adapter(x, lens)  # outside the block nothing is kept
    assert adapter._capture is None


def test_adapter_dropout_acts_on_the_branch_only():
    """In training, dropout zeroes entries of s * LN(FC3(LN(H_A))) and scales the others by 1 / (1 - p); the
    input H_ca always passes, so H_at - H_ca is 0 or 2 * branch (p = 0.5) entry by entry, and eval adds it all."""
    torch.manual_seed(0)
    adapter = CAKTAdapter(input_size=16, plm_dim=24, scale=0.5, dropout_rate=0.5)
    x, lens = torch.randn(3, 7, 16), torch.tensor([7, 5, 2])
    with torch.no_grad():
        branch = 0.5 * adapter.norm_hat(adapter.fc3(adapter.norm_a(adapter.fc2(x))))
        adapter.train()
        y, _ = adapter(x, lens)
        d = y - x
        dropped = d == 0
        kept = torch.isclose(d, 2.0 * branch, rtol=1e-5, atol=1e-6)
        assert (dropped | kept).all()
        assert 0.3 < float(dropped.float().mean()) < 0.7
        adapter.eval()
        torch.testing.assert_close(adapter(x, lens)[0], x + branch)


@pytest.mark.parametrize(
    "alignment,conf",
    [
        ("ot", {"eps": 0.5}),
        ("tot", {"eps": 0.5, "beta": 0.5}),
        ("gmot", {"eps": 0.5, "alpha": 0.5, "edges": "temporal"}),
        ("gmot", {"eps": 0.5, "alpha": 0.3, "edges": "mix", "beta": 0.2}),
    ],
)
def test_forward_backward_each_alignment(alignment, conf, tiny_plm_dir):
    model = build(alignment, plm=str(tiny_plm_dir), alignment_conf=conf)
    model.train()
    loss, stats, weight = model(**make_batch(TRANSCRIPTS))
    assert torch.isfinite(loss) and int(weight) == len(TRANSCRIPTS)
    for key in ("loss", "loss_ctc", "loss_ot", "loss_align", "band_mass", "coupling_entropy"):
        assert stats[key] is not None and torch.isfinite(stats[key]), key
    assert 0.0 <= float(stats["band_mass"]) <= 1.0 + 1e-5
    assert float(stats["loss_align"]) > 0.0
    lam, w = model.ctc_lambda, model.ot_weight
    expected = lam * stats["loss_ctc"] + (1 - lam) * w * (stats["loss_align"] + stats["loss_ot"])
    torch.testing.assert_close(stats["loss"], expected)
    loss.backward()
    fc2 = model.postencoder.fc2.weight.grad
    assert fc2 is not None and fc2.abs().sum() > 0
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters() if p.requires_grad
    )
    # The frozen PLM was loaded, but it is neither a parameter nor in the state dict.
    assert model.plm_branch.loaded
    plm_params = {id(p) for p in model.plm_branch.model.parameters()}
    assert not plm_params & {id(p) for p in model.parameters()}
    n_plm = sum(p.numel() for p in model.plm_branch.model.parameters())
    n_sd = sum(v.numel() for v in model.state_dict().values())
    assert n_sd == sum(v.numel() for v in build(alignment, alignment_conf=conf).state_dict().values())
    assert n_plm > 0 and not any("word_embeddings" in k for k in model.state_dict())
    assert all(not p.requires_grad for p in model.plm_branch.model.parameters())
    assert not model.plm_branch.model.training


@pytest.mark.parametrize("adapter", [False, True])
def test_alignment_none_trains_exactly_like_baseline(adapter):
    ours = build("none", adapter=adapter, seed=3)
    base = espnet_model.ESPnetASRModel(
        ctc_weight=1.0, **tiny_model_kwargs(TOKENS, plm_dim=32 if adapter else None, seed=3)
    )
    assert ours.state_dict().keys() == base.state_dict().keys()
    for step in range(2):
        results = []
        for model in (ours, base):
            model.train()
            model.zero_grad()
            torch.manual_seed(100 + step)
            loss, stats, _ = model(**make_batch(TRANSCRIPTS, seed=step))
            loss.backward()
            results.append((loss, stats, {n: p.grad.clone() for n, p in model.named_parameters()}))
        (l1, s1, g1), (l2, s2, g2) = results
        assert torch.equal(l1, l2)
        assert s1.keys() == s2.keys() and torch.equal(s1["loss_ctc"], s2["loss_ctc"])
        for name in g1:
            assert torch.equal(g1[name], g2[name]), name
        with torch.no_grad():  # identical SGD step keeps them in lockstep
            for model, grads in ((ours, g1), (base, g2)):
                for n, p in model.named_parameters():
                    p -= 0.1 * grads[n]


def test_align_loss_is_eq21_on_barycentric_projection():
    model = build("tot", alignment_conf={"eps": 0.3, "beta": 0.5})
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 9, 32, generator=g)
    z = torch.randn(2, 6, 32, generator=g)
    h_lens, z_lens = torch.tensor([9, 7]), torch.tensor([6, 4])
    loss_ot, loss_align, diag, _ = model._ot_branch(h, h_lens, z, z_lens, batch_size=2)
    h_mask = torch.arange(9)[None] < h_lens[:, None]
    z_mask = torch.arange(6)[None] < z_lens[:, None]
    ref = ot_core.ot_alignment(h, z, h_mask, z_mask, method="tot", eps=0.3, beta=0.5)
    expected_align = 0.0
    for b in range(2):
        n = int(z_lens[b])
        z_tilde = ref.coupling[b].T @ h[b]  # (Lt, D)
        cos = torch.nn.functional.cosine_similarity(z_tilde[1 : n - 1], z[b, 1 : n - 1], dim=-1)
        expected_align += (1 - cos).sum()
    torch.testing.assert_close(loss_align, expected_align / 2)
    torch.testing.assert_close(loss_ot, ref.loss.sum() / 2)
    # Including [CLS]/[SEP] in the sum changes the value.
    model.align_exclude_special = False
    _, loss_all, _, _ = model._ot_branch(h, h_lens, z, z_lens, batch_size=2)
    assert float(loss_all) > float(loss_align)


def test_empty_transcript_gets_zero_ot_weight(tiny_plm_dir):
    model = build("tot", plm=str(tiny_plm_dir))
    model.eval()  # batch-independent encoder (BatchNorm running stats)
    with torch.no_grad():
        _, alone, _ = model(**make_batch(["我们是中国人"], frames=[72]))
        _, pair, _ = model(**make_batch(["我们是中国人", ""], frames=[72, 40]))
        _, empty, _ = model(**make_batch(["", ""], frames=[72, 40]))
    # Per-utterance sums divided by the batch size: the empty one adds nothing.
    torch.testing.assert_close(pair["loss_ot"], alone["loss_ot"] / 2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pair["loss_align"], alone["loss_align"] / 2, rtol=1e-4, atol=1e-6)
    assert float(empty["loss_ot"]) == 0.0 and float(empty["loss_align"]) == 0.0
    torch.testing.assert_close(empty["loss"], model.ctc_lambda * empty["loss_ctc"])


def test_ot_in_eval_switch(tiny_plm_dir):
    model = build("tot", plm=str(tiny_plm_dir), ot_in_eval=False)
    model.eval()
    with torch.no_grad():
        loss, stats, _ = model(**make_batch(TRANSCRIPTS))
    assert "loss_ot" not in stats and torch.equal(loss, stats["loss_ctc"])
    assert stats["cer_ctc"] is not None  # ESPnet's CTC CER in eval
    assert not model.plm_branch.loaded


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="model_conf.ctc_weight"):
        build("tot", ctc_weight=0.5)
    with pytest.raises(ValueError, match="model_conf.alignment="):
        build("sinkhorn")
    with pytest.raises(ValueError, match="postencoder: cakt_adapter"):
        build("tot", adapter=False)
    with pytest.raises(ValueError, match="model_conf.ctc_lambda"):
        build("tot", ctc_lambda=1.5)
    with pytest.raises(ValueError, match="alignment_conf.epsilon: unknown key"):
        build("tot", alignment_conf={"epsilon": 0.1})
    model = build("tot")  # no PLM and no cached features
    with pytest.raises(ValueError, match="model_conf.plm is not set"):
        model(**make_batch(TRANSCRIPTS))


def test_plm_width_mismatch_is_reported(tiny_plm_dir):
    model = build("tot", plm=str(tiny_plm_dir))
    batch = make_batch(TRANSCRIPTS)
    batch["plm_feats"] = torch.randn(4, 5, 48)
    batch["plm_feats_lengths"] = torch.tensor([5, 4, 5, 3])
    with pytest.raises(ValueError, match="plm_dim"):
        model(**batch)
