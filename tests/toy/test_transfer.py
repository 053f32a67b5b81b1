"""The transfer study's design (espnet_ot.toy.transfer) and its matched-replicate comparison (toy.bootstrap)."""

import numpy as np
import pytest
import yaml
from scipy import stats

from espnet_ot.toy.bootstrap import paired_comparison
from espnet_ot.toy.experiment import ToyExperiment
from espnet_ot.toy.transfer import ARMS, FINE_TUNE, TransferStudy, replicates, sample_size, t_half_width
from espnet_ot.toy.world import TOY_CONF


def test_replicates_alternate_warm_starts_and_are_bounded():
    assert replicates(4) == [(1, 1), (2, 1), (1, 2), (2, 2)]
    assert len(set(replicates(16))) == 16
    with pytest.raises(ValueError, match="--replicates 17"):
        replicates(17)


@pytest.mark.parametrize("sd", [0.5, 1.4, 1.9, 3.0])
def test_sample_size_is_the_smallest_n_meeting_the_half_width(sd):
    n = sample_size(sd)
    assert 6 <= n <= 16
    half = lambda k: stats.t.ppf(0.975, k - 1) * sd / np.sqrt(k)  # noqa: E731
    if n < 16:
        assert half(n) <= 1.0 and (n == 6 or half(n - 1) > 1.0)
    else:
        assert half(15) > 1.0
    assert t_half_width(sd, n) == pytest.approx(half(n))


def test_arms_share_warm_start_and_seed_and_differ_only_in_the_ot_branch(tmp_path):
    x = ToyExperiment(tmp_path, tmp_path / "corpus", tmp_path / "plm", 192)
    study = TransferStudy(x, TOY_CONF)
    runs = study.runs([a.key for a in ARMS], 4)
    for i, (w, s) in enumerate(replicates(4)):
        reps = {k: rs[i] for k, rs in runs.items()}
        assert {(r.seed, r.init) for r in reps.values()} == {(s, x.model_file(study.warm_run(w)))}
    confs = {k: yaml.safe_load(rs[0].config.read_text(encoding="utf-8")) for k, rs in runs.items()}
    for k, conf in confs.items():
        assert conf["max_epoch"] == FINE_TUNE["max_epoch"] and conf["optim_conf"] == FINE_TUNE["optim_conf"]
        rest = {key: v for key, v in conf.items() if key != "model_conf"}
        assert rest == {key: v for key, v in confs["A"].items() if key != "model_conf"}, k
    assert confs["A"]["model_conf"]["ot_weight"] == 0.0 and confs["B"]["model_conf"]["ot_weight"] == 1.0
    assert confs["E"]["model_conf"]["distill_weight"] == 1.0 and confs["E0"] == confs["E"]
    assert runs["E"][0].soft_labels == "soft_mlm" and runs["E0"][0].soft_labels == "soft_identity"
    assert runs["C"][0].feats == "plm_context_free" and runs["B"][0].feats == "plm"


def errors(per_utt, n_ref):
    return [f"u{i}" for i in range(len(per_utt))], list(per_utt), list(n_ref)


def test_paired_comparison_refuses_unmatched_replicates():
    e = errors([1, 0, 2], [5, 5, 5])
    with pytest.raises(ValueError, match="same replicates"):
        paired_comparison({1: e, 2: e}, {1: e, 2: e, 3: e})


def test_paired_comparison_is_the_t_interval_of_the_per_replicate_differences():
    rng = np.random.default_rng(0)
    n_ref = rng.integers(5, 15, size=40)
    a = {r: errors(rng.integers(0, 4, size=40), n_ref) for r in range(5)}
    b = {r: errors(np.maximum(0, np.array(a[r][1]) + rng.integers(-2, 2, size=40)), n_ref) for r in range(5)}
    got = paired_comparison(a, b)
    d = np.array([100.0 * (sum(b[r][1]) - sum(a[r][1])) / n_ref.sum() for r in range(5)])
    assert got["n"] == 5 and got["mean"] == pytest.approx(d.mean()) and got["sd"] == pytest.approx(d.std(ddof=1))
    low, high = stats.t.interval(0.95, 4, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(5))
    assert got["t_ci95"] == pytest.approx([low, high])
    same = paired_comparison(a, a)
    assert same["bootstrap_ci95"] == [0.0, 0.0] and same["mean"] == 0.0


def test_tiny_pilot_runs_end_to_end_and_reports_dev_only_until_final(tmp_path):
    """The tiny toy world through the whole protocol path: warm start, dumps (context-free Z_L, soft labels and
    their one-hot control), arms fine-tuned from the warm start (--init_param), dev decodes, records, report;
    test only with final()."""
    import json

    from espnet_ot.bin.demo import TINY_TRAIN_ARGS
    from espnet_ot.toy.jobs import Console
    from espnet_ot.toy.transfer_report import transfer_markdown
    from espnet_ot.toy.world import TINY_CORPUS, TINY_PLM, build_corpus, build_plm, plm_width

    console = Console("tiny")
    corpus = build_corpus(tmp_path / "world" / "corpus", TINY_CORPUS, console)
    plm = build_plm(tmp_path / "world" / "plm", corpus, TINY_PLM, console, threads=1)
    x = ToyExperiment(tmp_path / "out", corpus, plm, plm_width(plm), threads=1, console=console)
    study = TransferStudy(x, TOY_CONF, jobs=2, console=console, train_args=TINY_TRAIN_ARGS)
    arms = ["A", "C", "E", "E0"]
    study.train(arms, 1)
    summary = study.report(arms, 1)
    for key in arms:
        assert summary["arms"][key]["dev_cer"][0] is not None and summary["arms"][key]["test_cer"] == [None]
    run = study.arm_run("E", 1, 1)
    log = (x.run_dir(run) / "train.log").read_text(encoding="utf-8")
    assert "--init_param" in log and str(x.model_file(study.warm_run(1))) in log
    assert "loss_distill" in summary["arms"]["E"]["final_valid_stats"][0]
    assert "pool_peak" in summary["arms"]["E"]["final_valid_stats"][0]
    assert "loss_distill" not in summary["arms"]["A"]["final_valid_stats"][0]
    assert set(json.loads((x.out / "records.json").read_text())) == {f"arms/{k}/w1_s1" for k in arms}
    assert summary["comparisons"] == {} and "E-A" in summary["dev_comparisons"]
    assert "Test not decoded yet" in transfer_markdown(summary)
    study.final(arms, 1)
    summary = study.report(arms, 1)
    assert summary["arms"]["E"]["test_cer"][0] is not None and "E-E0" in summary["comparisons"]
    points = summary["arms"]["A"]["test_error_points"]
    assert sum(points.values()) == pytest.approx(summary["arms"]["A"]["test_cer"][0])
    ceiling = summary["plm_ceiling"]["arms/A/w1_s1"]
    assert ceiling["cer"] == pytest.approx(summary["arms"]["A"]["test_cer"][0]) and ceiling["cer_plm_rechosen"] >= 0
    forced = summary["arms"]["E"]["test_forced_choice"][0]
    assert forced["n_ambiguous"] > 0 and 0.0 <= forced["ambiguous_acc"] <= 1.0
    assert summary["forced_choice_comparisons"]["E-A"]["n"] == 1
    assert (
        json.loads((x.out / "forced_choice.json").read_text())["arms/A/w1_s1"]
        == (summary["arms"]["A"]["test_forced_choice"][0])
    )
    md = transfer_markdown(summary)
    assert "Paired differences on test" in md and "Decode-time ceiling" in md and "Error decomposition" in md
    assert "Forced choice on test" in md


def test_transfer_figure_draws_replicates_and_intervals(tmp_path):
    from espnet_ot.toy.transfer_report import transfer_figure

    summary = {
        "replicates": [{"warm_start": 1, "seed": 1}, {"warm_start": 2, "seed": 1}],
        "arms": {"A": {"test_cer": [25.0, 26.0]}, "B": {"test_cer": [24.5, None]}},
        "comparisons": {"B-A": {"mean": -0.5, "n": 1, "t_ci95": None}},
        "dev_comparisons": {},
    }
    path = transfer_figure(summary, tmp_path / "t.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _c(mean, lo, hi, n=7):
    return {"mean": mean, "sd": 1.0, "n": n, "t_ci95": [lo, hi], "bootstrap_ci95": [lo, hi]}


@pytest.mark.parametrize(
    "comparisons, expected",
    [
        (  # B beats A and C: transfer
            {"B-A": _c(-1.0, -1.5, -0.5), "B-C": _c(-0.8, -1.2, -0.1)},
            ["TOT-CAKT (B) transfers the PLM's knowledge"],
        ),
        (  # B beats A only: no evidence, even though B-A is below 0
            {"B-A": _c(-1.0, -1.5, -0.5), "B-C": _c(-0.2, -0.6, +0.2)},
            ["TOT-CAKT (B) shows no evidence of transferring"],
        ),
        (  # E beats A and C, B does not beat C: the toy can show transfer; E-E0 below 0: from context; moonshot met
            {
                "B-A": _c(0.0, -0.2, 0.2),
                "B-C": _c(0.1, -0.2, 0.4),
                "E-A": _c(-3.0, -3.5, -2.5),
                "E-C": _c(-2.9, -3.4, -2.4),
                "E-E0": _c(-2.0, -2.5, -1.5),
            },
            [
                "shows no evidence",
                "the toy can show transfer and the papers' branch does not provide it",
                "E's gain is knowledge from context",
                "): met.",
            ],
        ),
        (  # E worse than everything (our toy's result on dev): above 0, moonshot not met
            {"E-A": _c(3.7, 3.1, 4.2), "E-C": _c(3.7, 3.4, 4.1), "E-E0": _c(3.9, 3.4, 4.3)},
            ["E-A +3.70 [+3.10, +4.20] (n=7), above 0", "E-E0 +3.90 [+3.40, +4.30] (n=7), above 0.", "not met"],
        ),
    ],
)
def test_conclusions_apply_the_protocols_decision_rule(comparisons, expected):
    from espnet_ot.toy.transfer_report import conclusions

    summary = {"comparisons": comparisons, "arms": {"A": {"test_cer": [25.0] * 7}}}
    text = "\n".join(conclusions(summary))
    for phrase in expected:
        assert phrase in text, (phrase, text)
    if "E-A" in comparisons and comparisons["E-A"]["t_ci95"][1] > 0:
        assert "the toy can show transfer" not in text and "from context" not in text
    assert conclusions({"comparisons": {}, "arms": {}}) == []
