"""The OT-aligned distillation (espnet_ot.asr.distill and the model's distill_weight) against direct references."""

from typing import Dict, List

import numpy as np
import pytest
import torch

import espnet_ot.ot as ot_core
from espnet_ot.asr.distill import distill_kl
from espnet_ot.asr.soft_labels import SOFT_LABELS_KEY
from helpers import build_tiny_ot_model, char_token_list

pytestmark = pytest.mark.usefixtures("single_thread")
TOKENS = char_token_list()
BLANK = TOKENS.index("<blank>")
FEAT_DIM, PLM_DIM, K = 20, 32, 4
TOT = dict(eps=0.3, beta=0.5, max_iter=20000, tol=1e-6)


def reference_kl(gamma: np.ndarray, log_probs: np.ndarray, ids: np.ndarray, probs: np.ndarray, blank: int) -> float:
    """Σ_j KL(p_j || q_j) of one unpadded utterance, token by token, from the definition."""
    total = 0.0
    post = np.exp(log_probs)
    for j in range(gamma.shape[1]):
        if probs[j].sum() == 0:
            continue
        w = gamma[:, j] / gamma[:, j].sum()
        q = w @ post
        q_nb = q / (q.sum() - q[blank])
        total += sum(p * (np.log(p) - np.log(q_nb[v])) for v, p in zip(ids[j], probs[j]) if p > 0)
    return total


def random_soft_labels(n_tok: int, vocab: int, g: torch.Generator, k: int = K) -> torch.Tensor:
    """(n_tok + 2, 2k) rows for [CLS] y [SEP]: k distinct non-blank ids with random probabilities; specials zero."""
    out = torch.zeros(n_tok + 2, 2 * k)
    for j in range(1, n_tok + 1):
        ids = 1 + torch.randperm(vocab - 1, generator=g)[:k]
        p = torch.rand(k, generator=g) + 0.05
        p[-1] = 0.0 if j % 2 else p[-1]  # some rows use fewer than k entries
        out[j, :k], out[j, k:] = ids.float(), p / p.sum()
    return out


def test_distill_kl_equals_the_per_utterance_reference_with_padding():
    g = torch.Generator().manual_seed(0)
    la, lt, V = [9, 6, 4], [5, 3, 1], 7
    B, La, Lt = len(la), max(la), max(lt)
    gamma = torch.zeros(B, La, Lt, dtype=torch.float64)
    log_probs = torch.log_softmax(torch.randn(B, La, V, generator=g, dtype=torch.float64), -1)
    labels = torch.zeros(B, Lt, 2 * K, dtype=torch.float64)
    for b in range(B):
        gamma[b, : la[b], : lt[b]] = torch.rand(la[b], lt[b], generator=g, dtype=torch.float64)
        labels[b, : lt[b]] = random_soft_labels(lt[b], V, g)[1 : lt[b] + 1].double()
    labels[0, 2] = 0.0  # a position without a target contributes nothing
    ids, probs = labels[..., :K].long(), labels[..., K:]
    frame_mask = torch.arange(La)[None, :] < torch.tensor(la)[:, None]
    kl, stats = distill_kl(gamma, log_probs, ids, probs, blank=0, frame_mask=frame_mask)
    for b in range(B):
        ref = reference_kl(
            gamma[b, : la[b], : lt[b]].numpy(),
            log_probs[b, : la[b]].numpy(),
            ids[b, : lt[b]].numpy(),
            probs[b, : lt[b]].numpy(),
            0,
        )
        assert kl[b].item() == pytest.approx(ref, rel=1e-9, abs=1e-12)
    # the coupling is a constant of the distillation: it says where, the KL trains the posteriors
    g_leaf, lp_leaf = gamma.clone().requires_grad_(), log_probs.clone().requires_grad_()
    distill_kl(g_leaf, lp_leaf, ids, probs, blank=0, frame_mask=frame_mask)[0].sum().backward()
    assert g_leaf.grad is None and lp_leaf.grad.abs().sum() > 0
    # pooling statistics: a coupling concentrated on one frame per token has peak 1
    one = torch.zeros(1, 4, 2, dtype=torch.float64)
    one[0, 1, 0] = one[0, 3, 1] = 0.5
    _, s = distill_kl(one, log_probs[:1, :4], ids[:1, :2], probs[:1, :2], blank=0, frame_mask=frame_mask[:1, :4])
    assert s["pool_peak"].item() == pytest.approx(1.0)
    assert s["pool_span"].item() == pytest.approx(1 / 4)


def make_batch(transcripts: List[str], frames: List[int], seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = [[TOKENS.index(c) for c in t] for t in transcripts]
    text = torch.full((len(ids), max(1, max(map(len, ids)))), -1, dtype=torch.long)
    for b, row in enumerate(ids):
        text[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    z_lens = torch.tensor([len(r) + 2 for r in ids])
    labels = torch.zeros(len(ids), int(z_lens.max()), 2 * K)
    for b, row in enumerate(ids):
        labels[b, : len(row) + 2] = random_soft_labels(len(row), len(TOKENS) - 1, g)
    return {
        "speech": torch.randn(len(ids), max(frames), FEAT_DIM, generator=g),
        "speech_lengths": torch.tensor(frames),
        "text": text,
        "text_lengths": torch.tensor([len(r) for r in ids]),
        "plm_feats": torch.randn(len(ids), int(z_lens.max()), PLM_DIM, generator=g),
        "plm_feats_lengths": z_lens,
        SOFT_LABELS_KEY: labels,
        SOFT_LABELS_KEY + "_lengths": z_lens.clone(),
    }


def clone(batch):
    return {k: v.clone() for k, v in batch.items()}


def model_reference(model, batch) -> float:
    """L_distill / B from the definition: the coupling of ot_alignment on the model's own H_A and the CTC's
    log posteriors of its own H_at, utterance by utterance (empty transcripts skipped)."""
    with torch.no_grad(), model.postencoder.capture() as cap:
        model.encode(batch["speech"].clone(), batch["speech_lengths"].clone())
    total = 0.0
    for b in range(batch["speech"].size(0)):
        lt = int(batch["plm_feats_lengths"][b])
        if lt <= 2:
            continue
        la = int(cap.lengths[b])
        h, z = cap.h_a[b : b + 1, :la].double(), batch["plm_feats"][b : b + 1, :lt].double()
        ones = torch.ones(1, la, dtype=torch.bool), torch.ones(1, lt, dtype=torch.bool)
        gamma = ot_core.ot_alignment(h, z, *ones, method="tot", **TOT).coupling[0].numpy()
        log_probs = model.ctc.log_softmax(cap.h_at[b : b + 1, :la]).double()[0].detach().numpy()
        labels = batch[SOFT_LABELS_KEY][b, :lt]
        total += reference_kl(gamma, log_probs, labels[:, :K].long().numpy(), labels[:, K:].double().numpy(), BLANK)
    return total / batch["speech"].size(0)


@pytest.mark.parametrize("empty_at", [None, 0, 1, 3])
def test_model_adds_the_weighted_distillation_loss(empty_at):
    transcripts = ["我们是中国人", "你好", "他说了大", "这个"]
    if empty_at is not None:
        transcripts[empty_at] = ""
    batch = make_batch(transcripts, [64, 56, 48, 40])
    base = build_tiny_ot_model(TOKENS, "tot", alignment_conf=TOT).eval()
    model = build_tiny_ot_model(TOKENS, "tot", alignment_conf=TOT, distill_weight=0.7).eval()
    with torch.no_grad():
        loss0, stats0, _ = base(**clone(batch))
        loss, stats, _ = model(**clone(batch))
    ref = model_reference(model, batch)
    assert stats["loss_distill"].item() == pytest.approx(ref, rel=1e-4)
    assert loss.item() == pytest.approx(loss0.item() + 0.7 * 0.7 * ref, rel=1e-5)
    assert 0 < stats["pool_peak"].item() <= 1 and 0 < stats["pool_span"].item() <= 1
    assert "loss_distill" not in stats0


def test_zero_weight_is_exactly_todays_model():
    batch = make_batch(["我们是中国人", "你好"], [64, 56])
    without = clone(batch)
    del without[SOFT_LABELS_KEY], without[SOFT_LABELS_KEY + "_lengths"]
    torch.manual_seed(1)
    a = build_tiny_ot_model(TOKENS, "tot", alignment_conf=TOT)
    b = build_tiny_ot_model(TOKENS, "tot", alignment_conf=TOT, distill_weight=0.0)
    torch.manual_seed(2)
    loss_a, stats_a, _ = a(**without)
    torch.manual_seed(2)
    loss_b, stats_b, _ = b(**clone(batch))
    assert torch.equal(loss_a, loss_b)
    assert set(stats_a) == set(stats_b)


def test_distillation_gradient_reaches_encoder_and_ctc_only():
    batch = make_batch(["我们是中国人", "你好"], [64, 56])
    model = build_tiny_ot_model(TOKENS, "tot", alignment_conf=TOT, ctc_lambda=0.0, ot_weight=0.0, distill_weight=1.0)
    loss, stats, _ = model(**clone(batch))
    assert loss.item() == pytest.approx(stats["loss_distill"].item())
    loss.backward()
    for name in ("encoder", "ctc"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_distillation_does_not_train_the_plm(tiny_plm_dir):
    batch = make_batch(["我们是中国人", "你好"], [64, 56])
    del batch["plm_feats"], batch["plm_feats_lengths"]
    model = build_tiny_ot_model(TOKENS, "tot", alignment_conf=TOT, plm=str(tiny_plm_dir), distill_weight=1.0)
    loss, _, _ = model(**clone(batch))
    loss.backward()
    plm = model.plm_branch.model
    assert all(not p.requires_grad and p.grad is None for p in plm.parameters())
    assert not any(n.startswith("_plm") for n in model.state_dict())


def test_distillation_needs_its_data_and_an_alignment():
    batch = make_batch(["你好"], [40])
    del batch[SOFT_LABELS_KEY]
    model = build_tiny_ot_model(TOKENS, "tot", alignment_conf=TOT, distill_weight=1.0)
    with pytest.raises(ValueError, match="model_conf.distill_weight=1.0 needs the soft labels"):
        model(**batch)
    with pytest.raises(ValueError, match="model_conf.distill_weight"):
        build_tiny_ot_model(TOKENS, "none", distill_weight=1.0)
    with pytest.raises(ValueError, match="model_conf.distill_weight=-1"):
        build_tiny_ot_model(TOKENS, "tot", alignment_conf=TOT, distill_weight=-1.0)
