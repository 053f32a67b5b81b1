"""The knowledge-transfer mechanism of the espnet_ot model: dispatch, Eq. (24), and gradients through the OT branch.

Every check compares the model with a reference computed here from the definitions (numpy / scipy costs and edge
matrices, the coupling of ``espnet_ot.ot.ot_alignment`` for the configured method), never with the model's own
intermediate values. Tiny conformer, precomputed Z_L (no PLM), one math thread.
"""

from fractions import Fraction
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

import espnet_ot.ot as ot_core
from helpers import build_tiny_ot_model, char_token_list

pytestmark = pytest.mark.usefixtures("single_thread")
TOKENS = char_token_list()
FEAT_DIM, PLM_DIM = 20, 32
TRANSCRIPTS = ["我们是中国人", "你好", "他说了大", ""]  # the empty one contributes nothing but counts in B
FRAMES = [64, 56, 48, 40]
SOLVER = dict(max_iter=20000, tol=1e-6)
GW = dict(gw_max_iter=300, gw_tol=1e-7)
CONFS = {
    "ot": dict(eps=0.3, **SOLVER),
    "tot": dict(eps=0.3, beta=0.5, **SOLVER),
    "gmot-mix": dict(eps=0.3, beta=0.3, alpha=0.5, edges="mix", edge_mix=0.3, **SOLVER, **GW),
    "gmot-feature": dict(eps=0.3, beta=0.2, alpha=0.6, edges="feature", **SOLVER, **GW),
}
TIGHT = dict(max_iter=200000, tol=1e-12, gw_max_iter=3000, gw_tol=1e-12)


def method_of(case: str) -> str:
    return case.split("-")[0]


def build(case: str, **model_conf):
    return build_tiny_ot_model(TOKENS, method_of(case), alignment_conf=dict(CONFS[case]), **model_conf)


def make_batch(
    seed: int = 0, transcripts: List[str] = TRANSCRIPTS, frames: List[int] = FRAMES
) -> Dict[str, torch.Tensor]:
    """Random features, char ids padded with -1, and random Z_L ([CLS] chars [SEP]) as plm_feats."""
    g = torch.Generator().manual_seed(seed)
    ids = [[TOKENS.index(c) for c in t] for t in transcripts]
    text = torch.full((len(ids), max(map(len, ids))), -1, dtype=torch.long)
    for b, row in enumerate(ids):
        text[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    z_lens = torch.tensor([len(r) + 2 for r in ids])
    return dict(
        speech=torch.randn(len(ids), max(frames), FEAT_DIM, generator=g),
        speech_lengths=torch.tensor(frames),
        text=text,
        text_lengths=torch.tensor([len(r) for r in ids]),
        plm_feats=torch.randn(len(ids), int(z_lens.max()), PLM_DIM, generator=g),
        plm_feats_lengths=z_lens,
    )


def clone(batch):
    return {k: v.clone() for k, v in batch.items()}


def h_a_of(model, batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """H_A (adapter FC2 output) and its lengths for the batch, from the model's own encoder."""
    with torch.no_grad(), model.postencoder.capture() as cap:
        model.encode(batch["speech"].clone(), batch["speech_lengths"].clone())
    return cap.h_a.detach(), cap.lengths.detach()


# ------------------------------------------------------------------ references from the definitions
def ref_node_cost(h: np.ndarray, z: np.ndarray, method: str, beta: float) -> np.ndarray:
    """1 - cos (scipy), plus beta * d^2 of TOT-CAKT Eq. (13) for tot / gmot."""
    C = cdist(h, z, "cosine")
    if method == "ot":
        return C
    la, lt = len(h), len(z)
    i = np.arange(1, la + 1)[:, None] / la
    j = np.arange(1, lt + 1)[None, :] / lt
    d = np.abs(i - j) / np.sqrt(1.0 / la**2 + 1.0 / lt**2)
    return C + beta * d**2


def ref_edges(kind: str, x: np.ndarray, mix: float) -> np.ndarray:
    n = len(x)
    temporal = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) / n
    feature = cdist(x, x, "cosine")
    return {"temporal": temporal, "feature": feature, "mix": mix * temporal + (1 - mix) * feature}[kind]


def ref_transport(h: np.ndarray, z: np.ndarray, gamma: np.ndarray, method: str, conf: Dict) -> float:
    """L_ot of one utterance at coupling gamma: <gamma, C~>, or the FGW objective with a 4-index sum."""
    M = ref_node_cost(h, z, method, conf.get("beta", 0.5))
    if method != "gmot":
        return float((gamma * M).sum())
    alpha, kind, mix = conf["alpha"], conf["edges"], conf.get("edge_mix", 0.5)
    Sx, Sy = ref_edges(kind, h, mix), ref_edges(kind, z, mix)
    L = (Sx[:, :, None, None] - Sy[None, None, :, :]) ** 2
    return (1 - alpha) * float((gamma * M).sum()) + alpha * float(np.einsum("ikjl,ij,kl->", L, gamma, gamma))


def ref_align(h: np.ndarray, z: np.ndarray, gamma: np.ndarray, positions: List[int]) -> float:
    """L_align of one utterance (Eq. 21): sum over positions j of 1 - cos((gamma^T H_A)_j, Z_L_j)."""
    zt = gamma.T @ h
    cos = (zt * z).sum(-1) / (np.linalg.norm(zt, axis=-1) * np.linalg.norm(z, axis=-1))
    return float((1.0 - cos[positions]).sum())


def utterances(h_a, h_lens, batch, include_special: bool):
    """Per non-empty utterance: (index, H_A (la, d), Z_L nodes of the coupling, L_align positions)."""
    out = []
    for b, n in enumerate(batch["plm_feats_lengths"].tolist()):
        if n <= 2:
            continue
        h = h_a[b, : int(h_lens[b])]
        z = batch["plm_feats"][b, :n]
        if include_special:
            out.append((b, h, z, list(range(1, n - 1))))
        else:
            out.append((b, h, z[1 : n - 1], list(range(n - 2))))
    return out


def coupling_of(method: str, conf: Dict, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """ot_alignment's coupling of one utterance alone (no padding, no batch neighbours)."""
    ones = lambda n: torch.ones(1, n, dtype=torch.bool)  # noqa: E731
    r = ot_core.ot_alignment(h[None], z[None], ones(h.shape[0]), ones(z.shape[0]), method=method, **conf)
    return r.coupling[0]


def reference_stats(model, case, batch, include_special: bool, band: float = 0.1) -> Dict[str, float]:
    """L_ot, L_align (Eq. 20-21, summed over utterances / B), mean coupling entropy and band mass."""
    method, conf = method_of(case), CONFS[case]
    h_a, h_lens = h_a_of(model, batch)
    B = batch["speech"].shape[0]
    l_ot = l_align = 0.0
    ent, ent_rel, bands = [], [], []
    for _, h, z, pos in utterances(h_a, h_lens, batch, include_special):
        gamma = coupling_of(method, conf, h, z).double().numpy()
        hn, zn = h.double().numpy(), z.double().numpy()
        l_ot += ref_transport(hn, zn, gamma, method, conf)
        l_align += ref_align(hn, zn, gamma, pos)
        ent.append(float(-(gamma * np.log(np.where(gamma > 0, gamma, 1.0))).sum()))
        la, lt = gamma.shape
        ent_rel.append(ent[-1] / np.log(la * lt))
        # |i/l_a - j/l_t| <= band in exact integer arithmetic (pairs on the band's edge are inside)
        num, den = Fraction(str(band)).numerator, Fraction(str(band)).denominator
        inside = den * np.abs(np.arange(1, la + 1)[:, None] * lt - np.arange(1, lt + 1)[None, :] * la) <= num * la * lt
        bands.append(float(gamma[inside].sum()))
    return dict(
        loss_ot=l_ot / B,
        loss_align=l_align / B,
        coupling_entropy=float(np.mean(ent)),
        coupling_entropy_rel=float(np.mean(ent_rel)),
        band_mass=float(np.mean(bands)),
    )


# ------------------------------------------------------------------ dispatch and Eq. (24)
@pytest.mark.parametrize("case", list(CONFS))
@pytest.mark.parametrize("include_special", [True, False])
def test_branch_is_the_configured_method_and_the_loss_is_eq24(case, include_special):
    """The coupling the model trains with is ot_alignment(method=alignment, **alignment_conf), and
    L = lambda L_ctc + (1 - lambda) w (L_align + L_ot) with lambda, w != their defaults."""
    lam, w = 0.4, 0.7
    model = build(case, ctc_lambda=lam, ot_weight=w, ot_include_special=include_special)
    model.eval()  # deterministic encoder (BatchNorm running statistics), so H_A can be recomputed
    batch = make_batch()
    with torch.no_grad():
        loss, stats, weight = model(**clone(batch))
    ref = reference_stats(model, case, batch, include_special)
    for key in ("loss_ot", "loss_align", "coupling_entropy", "coupling_entropy_rel", "band_mass"):
        assert float(stats[key]) == pytest.approx(ref[key], rel=1e-4, abs=1e-5), (key, float(stats[key]), ref[key])
    expected = lam * float(stats["loss_ctc"]) + (1 - lam) * w * (ref["loss_align"] + ref["loss_ot"])
    assert float(loss) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert float(stats["loss"]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert int(weight) == len(TRANSCRIPTS)


# batch orders of TRANSCRIPTS (index 3 is the empty one; "first_and_last" also empties 你好, put last)
EMPTY_AT = {"first": (3, 0, 1, 2), "second": (0, 3, 1, 2), "last": (0, 1, 2, 3), "first_and_last": (3, 0, 2, 1)}


@pytest.mark.parametrize("where", list(EMPTY_AT))
@pytest.mark.parametrize("include_special", [True, False])
def test_empty_transcripts_anywhere_in_the_batch_are_left_out(where, include_special):
    """The branch skips the utterances with an empty transcript wherever they sit in the batch: L_ot, L_align and
    the coupling statistics are the reference's over the non-empty utterances, each with its own frames and Z_L."""
    order = EMPTY_AT[where]
    transcripts = [TRANSCRIPTS[i] for i in order]
    if where == "first_and_last":
        transcripts[-1] = ""
    model = build("tot", ot_include_special=include_special)
    model.eval()
    batch = make_batch(seed=3, transcripts=transcripts, frames=[FRAMES[i] for i in order])
    with torch.no_grad():
        _, stats, _ = model(**clone(batch))
    ref = reference_stats(model, "tot", batch, include_special)
    for key in ("loss_ot", "loss_align", "coupling_entropy", "coupling_entropy_rel", "band_mass"):
        assert float(stats[key]) == pytest.approx(ref[key], rel=1e-4, abs=1e-5), (key, float(stats[key]), ref[key])


def test_methods_give_distinguishable_couplings():
    """The dispatch test above has teeth: the four configurations' couplings differ on this batch."""
    model = build("tot")
    model.eval()
    batch = make_batch()
    entropies = {case: reference_stats(model, case, batch, True)["coupling_entropy"] for case in CONFS}
    values = sorted(entropies.values())
    assert min(b - a for a, b in zip(values, values[1:])) > 1e-3, entropies


# ------------------------------------------------------------------ gradients through the branch
def grads_of(case: str, lam: float, w: float) -> Dict[str, torch.Tensor]:
    model = build(case, ctc_lambda=lam, ot_weight=w)
    model.train()
    loss, _, _ = model(**clone(make_batch()))
    loss.backward()
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


@pytest.mark.parametrize("case", ["ot", "tot", "gmot-mix"])
def test_branch_gradient_reaches_the_encoder_and_scales_with_ot_weight(case):
    branch = grads_of(case, 0.0, 1.0)  # L = L_align + L_ot only
    enc = {n: g for n, g in branch.items() if n.startswith("encoder.")}
    assert enc and all(torch.isfinite(g).all() for g in enc.values())
    assert all(g.abs().sum() > 0 for g in enc.values()), [n for n, g in enc.items() if g.abs().sum() == 0]
    assert branch["postencoder.fc2.weight"].abs().sum() > 0
    assert branch["ctc.ctc_lo.weight"].abs().sum() == 0  # lambda = 0: nothing comes from CTC
    # L(lambda, w) is linear in w: grad(w = 1) - grad(w = 0) = (1 - lambda) * grad(branch)
    lam = 0.3
    g0, g1 = grads_of(case, lam, 0.0), grads_of(case, lam, 1.0)
    diff_norm = 0.0
    for n in g0:
        torch.testing.assert_close(g1[n] - g0[n], (1 - lam) * branch[n], rtol=1e-4, atol=1e-6)
        if n.startswith("encoder."):
            diff_norm += float((g1[n] - g0[n]).norm())
    assert diff_norm > 1e-3 * sum(float(g.norm()) for n, g in g1.items() if n.startswith("encoder."))


def _entropy_term(gamma: np.ndarray) -> float:
    return float((gamma * np.log(np.where(gamma > 0, gamma, 1.0))).sum())


@pytest.mark.parametrize("case", ["ot", "tot", "gmot-mix"])
def test_branch_gradient_matches_finite_differences(case):
    """d L / d H_A along a random direction V (autograd through the whole model, lambda = 0) equals the finite
    difference, in float64, of L_align at the fixed coupling plus the entropic OT (FGW) value; L_align and
    L_ot each contribute a sizeable part, so dropping or detaching either one fails."""
    method, conf = method_of(case), CONFS[case]
    tight = {**conf, **TIGHT}
    model = build(case, ctc_lambda=0.0, ot_weight=1.0)
    model.eval()
    batch = make_batch(seed=1)
    h0, h_lens = h_a_of(model, batch)
    V = torch.randn(h0.shape, generator=torch.Generator().manual_seed(2))
    t = torch.zeros((), requires_grad=True)
    handle = model.postencoder.fc2.register_forward_hook(lambda mod, inp, out: out + t * V)
    try:
        loss, _, _ = model(**clone(batch))
        loss.backward()
    finally:
        handle.remove()
    analytic = float(t.grad)

    B = batch["speech"].shape[0]
    utts = utterances(h0, h_lens, batch, True)
    gamma0 = {b: coupling_of(method, tight, h.double(), z.double()).numpy() for b, h, z, _ in utts}

    def parts(s: float) -> Tuple[float, float]:
        align = value = 0.0
        for b, h, z, pos in utts:
            hs = h.double() + s * V[b, : h.shape[0]].double()
            hn, zn = hs.numpy(), z.double().numpy()
            align += ref_align(hn, zn, gamma0[b], pos)
            gamma = coupling_of(method, tight, hs, z.double()).numpy()
            value += ref_transport(hn, zn, gamma, method, conf) + conf["eps"] * _entropy_term(gamma)
        return align / B, value / B

    step = 1e-4
    (ap, vp), (am, vm) = parts(step), parts(-step)
    d_align, d_ot = (ap - am) / (2 * step), (vp - vm) / (2 * step)
    scale = abs(d_align) + abs(d_ot)
    assert min(abs(d_align), abs(d_ot)) > 0.05 * scale, (d_align, d_ot)
    assert analytic == pytest.approx(d_align + d_ot, abs=2e-3 * scale), (analytic, d_align, d_ot)
