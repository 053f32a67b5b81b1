"""Bad input at the OT doors: a correct finite result or a one-line ValueError/TypeError naming the argument."""

import math
import random
import warnings

import pytest
import torch

from espnet_ot.ot import (
    FeatureStructure,
    TemporalStructure,
    cosine_cost,
    fused_gromov_wasserstein,
    ot_alignment,
    sinkhorn,
    sinkhorn_unbalanced,
)
from espnet_ot.ot.cost import NORM_EPS
from helpers import random_batch

METHODS = ("ot", "tot", "gmot")


def batch(la, lt, D=8, seed=0, La=None, Lt=None):
    return random_batch(la, lt, D=D, dtype=torch.float32, seed=seed, La=La, Lt=Lt)


@pytest.mark.parametrize("method", METHODS)
def test_all_false_token_mask_gives_a_zero_coupling(method):
    x, y, mx, my = batch([12, 9, 7], [4, 3, 2], seed=1)
    my[1] = False
    r = ot_alignment(x, y, mx, my, method=method, eps=0.1)
    assert torch.isfinite(r.coupling).all() and torch.isfinite(r.loss).all()
    assert r.coupling[1].abs().max() == 0 and r.loss[1] == 0
    ref = ot_alignment(x[[0, 2]], y[[0, 2]], mx[[0, 2]], my[[0, 2]], method=method, eps=0.1)
    assert torch.allclose(r.coupling[[0, 2]], ref.coupling, atol=1e-6)
    C = cosine_cost(x, y, mx, my)
    for solve in (sinkhorn, sinkhorn_unbalanced):
        P = solve(C, mx, my, 0.1)
        assert torch.isfinite(P).all() and P[1].abs().max() == 0


@pytest.mark.parametrize("method", METHODS)
def test_non_prefix_masks_count_positions_among_the_real_ones(method):
    # padding in front (or holes) gives the same answer as the same utterance with prefix padding
    x, y, mx, my = batch([10, 7], [4, 3], seed=2)
    r = ot_alignment(x, y, mx, my, method=method, eps=0.05)
    k, la, lt = 1, 7, 3
    front = 5
    xs = torch.cat([100 * torch.randn(1, front, x.shape[2]), x[k : k + 1, :la]], 1)
    ys = torch.cat([torch.full((1, 2, y.shape[2]), float("nan")), y[k : k + 1, :lt]], 1)
    mxs = torch.arange(front + la)[None] >= front
    mys = torch.arange(2 + lt)[None] >= 2
    s = ot_alignment(xs, ys, mxs, mys, method=method, eps=0.05)
    assert torch.allclose(s.coupling[0, front:, 2:], r.coupling[k, :la, :lt], atol=1e-6)
    assert torch.allclose(s.loss[0], r.loss[k], atol=1e-5)
    assert s.coupling[0, :front].abs().max() == 0 and s.coupling[0, :, :2].abs().max() == 0


def test_zero_feature_vector_has_bounded_gradient():
    x, y, mx, my = batch([9, 6], [3, 2], seed=3)
    x[0, 4] = 0.0
    x = x.requires_grad_(True)
    for method in METHODS:
        x.grad = None
        ot_alignment(x, y, mx, my, method=method, eps=0.1).loss.sum().backward()
        g = x.grad[0, 4].norm()
        assert torch.isfinite(x.grad).all()
        # d/dx of x / max(|x|, NORM_EPS) at 0 is I / NORM_EPS, and the coupling row carries mass 1/l_a
        assert g <= (1.0 / 9) / NORM_EPS * 1.01, (method, float(g))
    assert NORM_EPS >= 1e-6


def one_line(exc):
    text = str(exc.value)
    return "\n" not in text and len(text) < 300


@pytest.mark.parametrize(
    "name, value, exc",
    [
        ("eps", "abc", TypeError),
        ("eps", 0.0, ValueError),
        ("eps", float("nan"), ValueError),
        ("eps", float("inf"), ValueError),
        ("eps", None, TypeError),
        ("beta", -1.0, ValueError),
        ("beta", "x", TypeError),
        ("alpha", 1.5, ValueError),
        ("max_iter", 0, ValueError),
        ("max_iter", 2.5, TypeError),
        ("tol", -1.0, ValueError),
        ("relax", 0.0, ValueError),
        ("relax", "soft", TypeError),
        ("edge_mix", 2.0, ValueError),
        ("eps_scaling", 3.0, ValueError),
    ],
)
def test_bad_numbers_are_named(name, value, exc):
    x, y, mx, my = batch([6], [3])
    with pytest.raises(exc, match=name) as e:
        ot_alignment(x, y, mx, my, method="gmot", **{name: value})
    assert one_line(e)


def test_numbers_written_as_strings_are_read_as_numbers():
    x, y, mx, my = batch([8, 5], [3, 2])
    a = ot_alignment(x, y, mx, my, method="tot", eps="5e-1", beta="0.5", max_iter="300")
    b = ot_alignment(x, y, mx, my, method="tot", eps=0.5, beta=0.5, max_iter=300)
    assert torch.equal(a.coupling, b.coupling)


def test_random_bad_inputs_give_a_finite_result_or_a_named_error():
    """Property-style: random corruptions of a valid call; accept only a correct finite result or a one-line
    ValueError/TypeError that names the corrupted argument."""
    rng = random.Random(0)
    kinds = [
        "nan_x",
        "inf_y",
        "nan_cost",
        "pad_garbage",
        "empty_La",
        "empty_Lt",
        "all_false_x",
        "odd_mask",
        "int_feats",
        "float_mask",
        "complex_x",
        "string_eps",
        "bad_string_eps",
        "wrong_mask_shape",
        "list_x",
        "neg_inf_cost",
    ]
    for trial in range(48):
        kind = kinds[trial % len(kinds)]
        B, la_max, lt_max = rng.randint(1, 3), rng.randint(1, 12), rng.randint(1, 5)
        la = [rng.randint(1, la_max) for _ in range(B)]
        lt = [rng.randint(1, lt_max) for _ in range(B)]
        x, y, mx, my = batch(la, lt, seed=trial, La=la_max, Lt=lt_max)
        method = rng.choice(METHODS)
        kw = dict(method=method, eps=rng.choice([0.01, 0.1, 1.0]))
        expect = None  # (exception type, argument name) or None for a valid result
        args = [x, y, mx, my]
        if kind == "nan_x":
            x[0, 0, 0] = float("nan")
            expect = (ValueError, r"\bh\b")
        elif kind == "inf_y":
            y[0, 0, 0] = float("inf")
            expect = (ValueError, r"\bz\b")
        elif kind == "pad_garbage":
            x = torch.cat([x, torch.full((B, 2, x.shape[2]), float("nan"))], 1)
            mx = torch.cat([mx, torch.zeros(B, 2, dtype=torch.bool)], 1)
            args = [x, y, mx, my]
        elif kind == "empty_La":
            args = [x[:, :0], y, mx[:, :0], my]
        elif kind == "empty_Lt":
            args = [x, y[:, :0], mx, my[:, :0]]
        elif kind == "all_false_x":
            mx[0] = False
        elif kind == "odd_mask":
            mx = mx & (torch.rand(mx.shape, generator=torch.Generator().manual_seed(trial)) < 0.7)
            mx[:, 0] = True
            args = [x, y, mx, my]
        elif kind == "int_feats":
            args = [(x * 10).long(), (y * 10).long(), mx, my]
        elif kind == "float_mask":
            args = [x, y, mx.float(), my]
            expect = (TypeError, "h_mask")
        elif kind == "complex_x":
            args = [x.to(torch.complex64), y, mx, my]
            expect = (TypeError, r"\bh\b")
        elif kind == "string_eps":
            kw["eps"] = "5e-1"
        elif kind == "bad_string_eps":
            kw["eps"] = "five"
            expect = (TypeError, "eps")
        elif kind == "wrong_mask_shape":
            args = [x, y, mx[:, :-1] if mx.shape[1] > 1 else mx[:1].repeat(B + 1, 1), my]
            expect = (ValueError, "h_mask")
        elif kind == "list_x":
            args = [x.tolist(), y, mx, my]
            expect = (TypeError, r"\bh\b")
        if kind in ("nan_cost", "neg_inf_cost"):
            C = cosine_cost(x, y, mx, my)
            C[0, 0, 0] = float("nan") if kind == "nan_cost" else -math.inf
            with pytest.raises(ValueError, match="cost") as e:
                sinkhorn(C, mx, my, kw["eps"])
            assert one_line(e)
            with pytest.raises(ValueError, match="cost") as e:
                fused_gromov_wasserstein(C, TemporalStructure(mx), TemporalStructure(my), mx, my, 0.5, kw["eps"])
            assert one_line(e)
            continue
        if expect is not None:
            with pytest.raises(expect[0], match=expect[1]) as e:
                ot_alignment(*args, **kw)
            assert one_line(e), (kind, str(e.value))
            continue
        r = ot_alignment(*args, **kw)
        assert torch.isfinite(r.coupling).all() and torch.isfinite(r.loss).all(), kind
        hx, hz, m1, m2 = args
        real = m1.any(-1) & m2.any(-1)
        mass = r.coupling.sum((1, 2))
        assert torch.allclose(mass[real], torch.ones_like(mass[real]), atol=1e-3), (kind, mass)
        assert (mass[~real] == 0).all(), kind
        pad = ~(m1.unsqueeze(2) & m2.unsqueeze(1))
        assert (r.coupling[pad] == 0).all(), kind


@pytest.mark.parametrize("method", METHODS)
def test_a_zero_frame_gets_a_gradient_bounded_by_the_feature_scale(method):
    # a silent frame (all-zero features): its direction is undefined and the gradient of x / max(|x|, floor) there
    # is I / floor; with the former absolute floor of 1e-6 it reached ~1e5 on unit-scale features
    x, y, mx, my = batch([9, 6], [3, 2], D=32, seed=3)
    x = x / x.norm(dim=-1, keepdim=True)  # unit-scale features
    y = y / y.norm(dim=-1, keepdim=True)
    x[0, 4] = 0.0
    x = x.requires_grad_(True)
    kw = dict(edges="mix") if method == "gmot" else {}  # feature edges normalise the frames too
    ot_alignment(x, y, mx, my, method=method, eps=0.1, **kw).loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, 4].norm() <= 1e3, float(x.grad[0, 4].norm())
    # a frame above the floor is normalised exactly: the cost is the cosine, whatever the utterance's scale
    for scale in (1e-5, 1.0, 1e5):
        C = cosine_cost(scale * x.detach(), y, mx, my)
        ref = 1.0 - torch.nn.functional.cosine_similarity(x.detach()[:, :, None], y[:, None], dim=-1, eps=1e-30)
        real = (mx.unsqueeze(2) & my.unsqueeze(1)) & (x.detach().norm(dim=-1) > 0).unsqueeze(2)
        assert torch.allclose(C[real], ref[real], atol=1e-6), scale
        assert torch.equal(C[0, 4, :3], torch.ones(3))  # the zero frame: cost 1 to every token


@pytest.mark.parametrize("which", ["struct_x", "struct_y"])
def test_a_structure_over_other_positions_than_its_mask_is_named(which):
    # a structure of 5 positions with a mask of 4 ran into a tensor-size RuntimeError
    x, y, mx, my = batch([4], [3])
    C = cosine_cost(x, y, mx, my)
    wrong = torch.ones(1, 5, dtype=torch.bool)
    good = {"struct_x": TemporalStructure(mx), "struct_y": TemporalStructure(my)}
    mask = "x_mask" if which == "struct_x" else "y_mask"
    for bad in (TemporalStructure(wrong), FeatureStructure(torch.randn(1, 5, 8), wrong), torch.rand(1, 5, 5)):
        structs = dict(good, **{which: bad})
        with pytest.raises(ValueError, match=rf"^{which} .*{mask}") as e:
            fused_gromov_wasserstein(C, structs["struct_x"], structs["struct_y"], mx, my, 0.5, 0.1)
        assert one_line(e)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("eps", [1e-5, 1e-6])
def test_tiny_eps_reaches_the_tolerance_or_warns_with_the_error(method, eps):
    # at eps 1e-5 / 1e-6 float32 cannot resolve the potentials (~ cost / eps): OT and TOT couplings came back
    # 4e-4..7e-3 off their marginals against tol 1e-4, without a warning. The solve now runs in float64 there.
    # The coupling returned (float32, like the inputs) meets tol, checked independently of the solver's report,
    # or a warning gives the error reached (GM-OT's inner solves at eps 1e-5 reach max_iter)
    g = torch.Generator().manual_seed(0)
    B = 8 if method != "gmot" else 2
    la, lt = torch.randint(60, 121, (B,), generator=g), torch.randint(5, 16, (B,), generator=g)
    x, y = torch.randn(B, 120, 32, generator=g), torch.randn(B, 15, 32, generator=g)
    mx, my = torch.arange(120)[None] < la[:, None], torch.arange(15)[None] < lt[:, None]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = ot_alignment(x, y, mx, my, method=method, eps=eps, tol=1e-4, gw_max_iter=3)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    P = r.coupling
    assert P.dtype == torch.float32 and r.loss.dtype == torch.float32
    col = (P.double().sum(1) - my.double() / lt[:, None]).abs().sum(-1)
    row = (P.double().sum(2) - mx.double() / la[:, None]).abs().sum(-1)
    if msgs:  # the error reported is that of the coupling returned, and the warning gives it
        assert len(msgs) == 1 and f"{float(r.marginal_err.max()):.3g}" in msgs[0], msgs
        assert torch.allclose(col, r.marginal_err.double(), atol=1e-6), (col, r.marginal_err)
    else:
        assert (col <= 1e-4).all() and (row <= 1e-4).all(), (col.max(), row.max())
        assert (r.marginal_err <= 1e-4).all(), r.marginal_err
    if method != "gmot":
        assert not msgs, msgs
