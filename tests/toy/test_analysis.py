"""CER decomposition (pypinyin), paired bootstrap CIs, the homophone probe and the study's experiment helpers."""

import collections
import json
import random
import types

import editdistance
import numpy as np
import pytest
import torch

from espnet_ot.toy import bootstrap, errors, experiment, probe
from helpers import make_tiny_bert


# ------------------------------------------------------------------------------------------ errors
def test_substitutions_are_classified_by_pinyin():
    assert errors.classify_substitution("马", "玛") == "homophone"  # ma3 / ma3
    assert errors.classify_substitution("马", "妈") == "tone"  # ma3 / ma1
    assert errors.classify_substitution("马", "天") == "other_sub"
    assert errors.classify_substitution("行", "航") == "homophone"  # polyphone: hang2 is one reading of 行


def test_alignment_totals_equal_the_edit_distance_and_pair_close_characters():
    rng = random.Random(0)
    chars = "马妈麻骂他们门在上下天"
    for _ in range(500):
        a = "".join(rng.choice(chars) for _ in range(rng.randint(0, 9)))
        b = "".join(rng.choice(chars) for _ in range(rng.randint(0, 9)))
        ec = errors.utterance_errors(a, b)
        assert ec.errors == editdistance.eval(a, b), (a, b)
        ops = errors.align(a, b)
        assert "".join(r for _, r, _ in ops) == a and "".join(h for _, _, h in ops) == b
    # two minimal alignments exist; the one pairing the homophones is chosen
    assert errors.align("气好", "汽很好")[:2] == [("S", "气", "汽"), ("I", "", "很")]


def test_decomposition_points_add_up_to_the_cer():
    refs = {"a": "他们在马上", "b": "今天天气好"}
    hyps = {"a": "他门在妈上下", "b": "今天气好"}
    ec = errors.decompose(refs, hyps)
    assert ec.counts == {"homophone": 1, "tone": 1, "other_sub": 0, "deletion": 1, "insertion": 1}
    assert sum(ec.points().values()) == pytest.approx(ec.cer) == pytest.approx(100 * 4 / 10)
    assert ec.linguistic_share == pytest.approx(0.5)
    with pytest.raises(ValueError, match="hyps: no hypothesis"):
        errors.decompose(refs, {"a": ""})


def test_decomposition_pairs_a_homophone_before_a_tone_error():
    """Each case has two minimal alignments (a substitution and an insertion or deletion, either way round): the
    one that pairs the reference with its homophone (马 ma3 / 玛 ma3) wins over a tone pair (马 / 妈 ma1), a tone
    pair over an unrelated character (天 tian1)."""
    zero = dict.fromkeys(errors.CATEGORIES, 0)
    cases = {
        ("马", "玛妈"): {"homophone": 1, "insertion": 1},  # not: inserted 玛 + 马 -> 妈 (tone)
        ("马", "妈玛"): {"homophone": 1, "insertion": 1},  # not: 马 -> 妈 (tone) + inserted 玛
        ("玛妈", "马"): {"homophone": 1, "deletion": 1},  # not: deleted 玛 + 妈 -> 马 (tone)
        ("马", "天妈"): {"tone": 1, "insertion": 1},  # not: 马 -> 天 (other) + inserted 妈
        ("马", "玛"): {"homophone": 1},
        ("马", "妈"): {"tone": 1},
    }
    for (ref, hyp), counts in cases.items():
        assert errors.decompose({"u": ref}, {"u": hyp}).counts == {**zero, **counts}, (ref, hyp)
    refs = {f"u{i}": ref for i, (ref, _) in enumerate(cases)}
    pooled = errors.decompose(refs, {f"u{i}": hyp for i, (_, hyp) in enumerate(cases)})
    assert pooled.counts == {**zero, "homophone": 4, "tone": 2, "insertion": 3, "deletion": 1}
    assert pooled.n_ref == 7 and pooled.linguistic_share == pytest.approx(6 / 10)


# ------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_ci_covers_the_difference_and_detects_a_real_one():
    rng = np.random.default_rng(0)
    lens = rng.integers(8, 20, size=400)
    base = [rng.binomial(lens, 0.3) for _ in range(3)]
    same = [rng.binomial(lens, 0.3) for _ in range(3)]
    better = [rng.binomial(lens, 0.2) for _ in range(3)]
    null = bootstrap.paired_bootstrap_cer_diff(base, same, lens)
    assert null["low"] < 0 < null["high"]
    gain = bootstrap.paired_bootstrap_cer_diff(base, better, lens)
    assert gain["high"] < 0 and gain["low"] < gain["diff"] < gain["high"]
    assert gain["diff"] == pytest.approx(100 * (np.mean(better, 0).sum() - np.mean(base, 0).sum()) / lens.sum())
    assert gain["p_below_zero"] > 0.99
    with pytest.raises(ValueError, match="errors_a/errors_b"):
        bootstrap.paired_bootstrap_cer_diff(base, better, lens[:-1])


def test_bootstrap_draws_one_resample_for_both_systems():
    """Paired resampling: one draw of utterances serves both systems. System b makes a's errors plus a quarter of
    each reference, so every resample has the same CER difference, 25 points, however much a's CER varies from
    one resample to the next: the interval is that one point (a second, independent draw for b would spread it)."""
    rng = np.random.default_rng(1)
    lens = 4 * rng.integers(2, 8, size=300)
    p = rng.uniform(0.0, 0.8, size=lens.size)  # utterances of very different difficulty
    base = [rng.binomial(lens, p) for _ in range(3)]
    worse = [e + lens // 4 for e in base]
    r = bootstrap.paired_bootstrap_cer_diff(base, worse, lens, n_boot=2000)
    assert r["diff"] == pytest.approx(25.0)
    assert r["low"] == pytest.approx(25.0, abs=1e-9) and r["high"] == pytest.approx(25.0, abs=1e-9)
    assert r["p_below_zero"] == 0.0


def test_bootstrap_interval_is_the_percentile_interval_of_a_resampling_loop():
    """Against a plain loop (indices drawn with replacement, seeds averaged per utterance, the pooled CER
    difference of each resample): the same interval and share below zero, up to the Monte Carlo error."""
    rng = np.random.default_rng(2)
    lens = rng.integers(5, 25, size=250)
    p = rng.uniform(0.05, 0.6, size=lens.size)
    base = [rng.binomial(lens, p) for _ in range(2)]
    other = [rng.binomial(lens, 0.93 * p) for _ in range(2)]
    n_boot = 4000
    r = bootstrap.paired_bootstrap_cer_diff(base, other, lens, n_boot=n_boot, seed=3)
    delta = np.mean(other, 0) - np.mean(base, 0)
    loop = np.random.default_rng(4)
    diffs = []
    for _ in range(n_boot):
        idx = loop.integers(0, lens.size, size=lens.size)
        diffs.append(100.0 * delta[idx].sum() / lens[idx].sum())
    low, high = np.quantile(diffs, [0.025, 0.975])
    width = high - low
    assert r["low"] == pytest.approx(low, abs=0.1 * width) and r["high"] == pytest.approx(high, abs=0.1 * width)
    assert r["p_below_zero"] == pytest.approx(np.mean(np.array(diffs) < 0), abs=0.03)
    assert r["diff"] == pytest.approx(100.0 * delta.sum() / lens.sum())


def test_mean_sd_is_the_sample_statistic():
    assert bootstrap.mean_sd([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert bootstrap.mean_sd([5.0]) == (5.0, 0.0)


def test_seed_paired_t_interval_pairs_seeds_and_needs_two():
    base = {1: 30.0, 2: 31.0, 3: 29.0}
    # per-seed differences -2, -1, 0: mean -1, sd 1, t(0.975, 2) = 4.3027 -> half width 4.3027 / sqrt(3)
    r = bootstrap.seed_paired_t_interval(base, {1: 28.0, 2: 30.0, 3: 29.0, 4: 10.0})
    assert r["n"] == 3 and r["diff"] == pytest.approx(-1.0)
    assert (r["low"], r["high"]) == pytest.approx((-1 - 2.4841, -1 + 2.4841), abs=1e-3)
    # pairing matters: the same values under other seeds give another interval
    swapped = bootstrap.seed_paired_t_interval(base, {1: 29.0, 2: 30.0, 3: 28.0})
    assert swapped["diff"] == pytest.approx(-1.0) and swapped["high"] - swapped["low"] < r["high"] - r["low"]
    assert bootstrap.seed_paired_t_interval(base, {1: 28.0, 5: 20.0}) is None


# ------------------------------------------------------------------------------------------ experiment helpers
def test_shuffle_swaps_only_equal_lengths_and_moves_everyone_it_can():
    lengths = {f"u{i}": 5 + i % 3 for i in range(30)}
    lengths["alone"] = 99
    donor = experiment.shuffle_within_length(lengths, seed=0)
    assert sorted(donor.values()) == sorted(lengths)  # a permutation
    assert all(lengths[u] == lengths[d] for u, d in donor.items())
    assert donor["alone"] == "alone" and all(u != d for u, d in donor.items() if u != "alone")
    assert donor == experiment.shuffle_within_length(lengths, seed=0) != experiment.shuffle_within_length(lengths, 1)


def test_shuffled_control_scp_reads_another_utterance_of_the_same_length(tmp_path):
    """shuffle_feats on a hand-written scp: every utterance of a length group of two or more reads the entry of
    another one of that group, each entry is read once, and the one alone in its group keeps its own."""
    from espnet2.fileio.read_text import read_2columns_text

    x = experiment.ToyExperiment(tmp_path / "out", tmp_path / "corpus", tmp_path / "plm", 8)
    lengths = {"a1": 5, "a2": 5, "a3": 5, "b1": 7, "b2": 7, "c1": 9}
    src = x.feats_scp("plm", "dev")
    src.parent.mkdir(parents=True)
    own = {u: f"/dump/feats.ark:{100 * i + 7}" for i, u in enumerate(sorted(lengths))}
    src.write_text("".join(f"{u} {e}\n" for u, e in own.items()), encoding="utf-8")
    (src.parent / "lengths").write_text("".join(f"{u} {n}\n" for u, n in lengths.items()), encoding="utf-8")
    note = x.shuffle_feats("dev", seed=0)
    out = read_2columns_text(x.feats_scp("plm_shuffled", "dev"))
    assert sorted(out) == sorted(own) and sorted(out.values()) == sorted(own.values())
    owner = {e: u for u, e in own.items()}
    for utt, entry in out.items():
        donor = owner[entry]
        assert lengths[donor] == lengths[utt], (utt, donor)
        assert (donor == utt) == (utt == "c1"), (utt, donor)
    assert "1 of 6" in note


# ------------------------------------------------------------------------------------------ probe
def test_homophone_probe_counts_ambiguous_positions(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    # a tiny random BERT with a masked-LM head (the probe runs; its PLM numbers are chance)
    mlm_dir = make_tiny_bert(tmp_path / "mlm", chars="他她们门在上")
    BertForMaskedLM(BertConfig.from_pretrained(str(mlm_dir))).save_pretrained(str(mlm_dir))
    inventory = list("他她们门在上")  # ta1 x2, men2/men5 + men2, zai4, shang4
    sentences = ["他们在上", "她在上"]
    res = probe.homophone_probe(mlm_dir, sentences, inventory, collections.Counter("他他他们在上"))
    # any tone: 他/她 (ta) and 们/门 (men) are ambiguous -> 3 positions of 7 characters
    assert res["any_tone"]["n"] == 3 and res["any_tone"]["ambiguous_share"] == pytest.approx(3 / 7)
    # frequency always picks 他 among {他, 她} and 们 (count 1) over 门 (count 0): right on 他, 们; wrong on 她
    assert res["any_tone"]["freq_acc"] == pytest.approx(2 / 3)
    assert 0.0 <= res["any_tone"]["plm_acc"] <= 1.0


class _StubMaskedLM(torch.nn.Module):
    """A masked LM stand-in: at [MASK] it scores the ``prefer`` characters (2, 1, ...), elsewhere the input token."""

    def __init__(self, vocab, mask_id, prefer):
        super().__init__()
        self.size, self.mask_id = len(vocab), mask_id
        self.at_mask = torch.zeros(self.size)
        for rank, c in enumerate(prefer):
            self.at_mask[vocab[c]] = float(len(prefer) - rank)
        self.inputs = []

    def forward(self, input_ids, attention_mask):
        self.inputs.append(input_ids.clone())
        logits = 5.0 * torch.nn.functional.one_hot(input_ids, self.size).float()
        logits[input_ids == self.mask_id] = self.at_mask
        return types.SimpleNamespace(logits=logits)


def test_homophone_probe_scores_the_masked_position(tmp_path, monkeypatch):
    """With a stub LM whose scores at [MASK] favour 她 over 他 and 门 over 们: 他们在上 -> 她门 (both wrong), 她在上 -> 她
    (right), so plm_acc = 1/3 for both candidate sets; each input holds its sentence with one [MASK] in place."""
    import transformers

    tok_dir = make_tiny_bert(tmp_path / "tok", chars="他她们门在上")
    vocab = transformers.AutoTokenizer.from_pretrained(str(tok_dir)).get_vocab()
    stub = _StubMaskedLM(vocab, vocab["[MASK]"], "她门")
    monkeypatch.setattr(transformers.AutoModelForMaskedLM, "from_pretrained", lambda *args, **kwargs: stub)
    sentences = ["他们在上", "她在上"]
    res = probe.homophone_probe(
        tok_dir, sentences, list("他她们门在上"), collections.Counter("他他他们在上"), batch_size=2
    )
    for name in ("any_tone", "same_tone"):
        assert res[name]["n"] == 3 and res[name]["plm_acc"] == pytest.approx(1 / 3), (name, res[name])
        assert res[name]["freq_acc"] == pytest.approx(2 / 3)
    rows = [row for batch in stub.inputs for row in batch.tolist()]
    masked = [("他们在上", 0), ("他们在上", 1), ("她在上", 0)] * 2  # per candidate set, in sentence order
    assert len(rows) == len(masked)
    for row, (s, i) in zip(rows, masked):
        ids = [vocab["[CLS]"]] + [vocab[c] for c in s] + [vocab["[SEP]"]]
        ids[i + 1] = vocab["[MASK]"]
        assert row[: len(ids)] == ids and set(row[len(ids) :]) <= {vocab["[PAD]"]}


# ------------------------------------------------------------------------------------------ study report
def study_with_refs(tmp_path, n):
    """A Study under tmp_path whose dev and test sets are n copies of one sentence (nothing trained)."""
    from espnet_ot.toy.study import Study

    refs = {f"u{i}": "他们在马上" for i in range(n)}
    study = Study(tmp_path / "out", tmp_path / "corpus", tmp_path / "plm", 8, jobs=1)
    for split in ("dev", "test"):
        (study.x.data / split).mkdir(parents=True)
        (study.x.data / split / "text").write_text("".join(f"{u} {t}\n" for u, t in refs.items()), encoding="utf-8")
    return study, refs


def test_study_report_aggregates_seeds_and_controls(tmp_path):
    """report() on hand-made decodings: per-seed CERs, pooled decomposition, CI vs baseline, summary keys."""
    from espnet_ot.toy.study import METHOD_NAMES

    study, refs = study_with_refs(tmp_path, 40)
    x = study.x
    # baseline: one tone error per utterance (20% CER); every other system: none on the first half of the set
    hyp_bad, hyp_good = "他们在妈上", "他们在马上"
    runs = study.study_runs([1, 2], METHOD_NAMES)
    for name, rs in runs.items():
        for r in rs:
            for split in ("dev", "test"):
                path = x.hyp_file(r, split)
                path.parent.mkdir(parents=True)
                hyps = {u: hyp_bad if name == "baseline" or i >= 20 else hyp_good for i, u in enumerate(refs)}
                path.write_text("".join(f"{u} {h}\n" for u, h in hyps.items()), encoding="utf-8")
            (x.run_dir(r) / "train.log").write_text(
                "x (trainer:811) INFO: 1epoch:train:1-31batch: iter_time=0.02, loss=9.0, band_mass=0.2, "
                "coupling_entropy_rel=0.95, optim0_lr0=2.8e-04\n"
                "x (trainer:811) INFO: 1epoch:train:32-62batch: loss=8.0, band_mass=0.3\n"
                "x (trainer:1) INFO: 4epoch results: [train] loss=1.0, [valid] cer_ctc=0.2, band_mass=0.5, "
                "coupling_entropy=3.0, coupling_entropy_rel=0.7, time=1 seconds\n",
                encoding="utf-8",
            )
    x.out.mkdir(parents=True, exist_ok=True)
    probe = {k: {"plm_acc": 0.9, "freq_acc": 0.5, "n": 10, "ambiguous_share": 0.8} for k in ("any_tone", "same_tone")}
    (x.out / "probe.json").write_text(json.dumps(probe), encoding="utf-8")
    summary = study.report(runs)
    assert list(summary) == list(METHOD_NAMES)
    assert summary["baseline"]["test_cer_mean"] == pytest.approx(20.0)
    assert summary["baseline"]["test_error_points"]["tone"] == pytest.approx(20.0)
    for name in METHOD_NAMES[1:]:
        e = summary[name]
        assert e["test_cer_mean"] == pytest.approx(10.0) and e["test_cer_sd"] == 0.0
        assert e["diff_vs_baseline"] == pytest.approx(-10.0) and e["relative_change"] == pytest.approx(-0.5)
        lo, hi = e["diff_vs_baseline_ci95"]
        assert lo < -10.0 < hi < 0  # every resample of utterances keeps the gain
        assert e["seeds"] == [1, 2] and e["final_valid_stats"][0]["band_mass"] == 0.5
        assert e["initial_train_stats"][0] == {"band_mass": 0.2, "coupling_entropy_rel": 0.95}  # the first interval
    text = (x.out / "RESULTS.md").read_text(encoding="utf-8")
    assert "| 0.2 → 0.5 | 0.95 → 0.7 | 3 |" in text
    assert "PLM 90.0% vs frequency 50.0%" in text and (x.out / "cer.png").is_file()
    assert json.loads((x.out / "summary.json").read_text(encoding="utf-8")) == summary


# ------------------------------------------------------------------------------------------ dev sweep
def test_sweep_variants_are_valid_configs_that_differ_from_each_other(tmp_path):
    """Every variant's config passes the model's option check, and no two variants of a method coincide."""
    import yaml

    from espnet_ot.ot.config import AlignmentConfig
    from espnet_ot.toy.study import SWEEP, Study

    study = Study(tmp_path / "out", tmp_path / "corpus", tmp_path / "plm", 8, jobs=1)
    for method in SWEEP:
        seen = set()
        for variant, _, run in study.sweep_runs(method):
            conf = yaml.safe_load(run.config.read_text(encoding="utf-8"))
            model_conf = conf["model_conf"]
            if model_conf["alignment"] != "none":  # the baseline (reference row) has no OT options
                AlignmentConfig.from_conf(model_conf["alignment"], model_conf["alignment_conf"])
            key = json.dumps(conf, sort_keys=True)
            assert key not in seen, f"{method}/{variant} repeats another variant"
            seen.add(key)


def test_sweep_report_marks_the_lowest_dev_cer_and_rejects_unknown_methods(tmp_path):
    from espnet_ot.toy.study import SWEEP, Study

    study = Study(tmp_path / "out", tmp_path / "corpus", tmp_path / "plm", 8, jobs=1)
    x = study.x
    refs = {f"u{i}": "他们在马上" for i in range(10)}
    (x.data / "dev").mkdir(parents=True)
    (x.data / "dev" / "text").write_text("".join(f"{u} {t}\n" for u, t in refs.items()), encoding="utf-8")
    variants = study.sweep_runs("tot_cakt")
    for k, (_, _, run) in enumerate(variants):  # variant k gets (k + 1) mod len wrong utterances: the last wins
        wrong = (k + 1) % len(variants)
        path = x.hyp_file(run, "dev")
        path.parent.mkdir(parents=True)
        path.write_text(
            "".join(f"{u} {'他们在妈上' if i < wrong else t}\n" for i, (u, t) in enumerate(refs.items())),
            encoding="utf-8",
        )
    report = study.write_sweep_report(["tot_cakt"])
    chosen = [r["variant"] for r in report["rows"] if r["chosen"]]
    assert chosen == [variants[-1][0]] and len(report["rows"]) == len(SWEEP["tot_cakt"])
    assert json.loads((x.out / "sweep.json").read_text(encoding="utf-8"))["rows"] == report["rows"]
    assert f"{variants[-1][0]} **(lowest dev CER)**" in (x.out / "sweep.md").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="methods: control_shuffled_plm not swept"):
        study.run_sweep(["control_shuffled_plm"])


def test_feature_identity_probe_tells_a_token_code_from_a_context_code():
    """Rows that encode their own character are identified; rows that encode only the neighbours are not."""
    from espnet_ot.toy.probe import feature_identity_probe

    rng = np.random.default_rng(0)
    chars = "他她们门在马妈上"
    code = {c: rng.normal(size=16) for c in chars}
    sentences = ["".join(rng.choice(list(chars), size=6)) for _ in range(60)]

    def own(s):  # [CLS], one row per character (its code plus noise), [SEP]
        return np.stack([np.ones(16)] + [code[c] + 0.1 * rng.normal(size=16) for c in s] + [np.ones(16)])

    def context(s):  # each row: the next character's code only
        return np.stack([np.ones(16)] + [code[s[(i + 1) % len(s)]] for i in range(len(s))] + [np.ones(16)])

    r = feature_identity_probe([(s, own(s)) for s in sentences[:40]], [(s, own(s)) for s in sentences[40:]])
    assert r["all"] == 1.0 and r["homophones"] == 1.0 and r["n"] == 120
    r = feature_identity_probe([(s, context(s)) for s in sentences[:40]], [(s, context(s)) for s in sentences[40:]])
    assert r["all"] < 0.5
    with pytest.raises(ValueError, match="expected 8"):
        feature_identity_probe([("他们在马上吗", np.zeros((3, 16)))], [])


def test_report_finished_skips_unfinished_seeds_and_needs_a_baseline(tmp_path, capsys):
    study, refs = study_with_refs(tmp_path, 10)
    x = study.x
    x.out.mkdir(parents=True, exist_ok=True)
    probe = {k: {"plm_acc": 0.9, "freq_acc": 0.5, "n": 10, "ambiguous_share": 0.8} for k in ("any_tone", "same_tone")}
    (x.out / "probe.json").write_text(json.dumps(probe), encoding="utf-8")
    runs = study.study_runs([1, 2], ["baseline", "tot_cakt"])
    with pytest.raises(ValueError, match="no finished baseline"):
        study.report_finished([1, 2], ["baseline", "tot_cakt"])
    for r in runs["baseline"] + runs["tot_cakt"][:1]:  # tot_cakt seed 2 unfinished
        for split in ("dev", "test"):
            x.hyp_file(r, split).parent.mkdir(parents=True, exist_ok=True)
            x.hyp_file(r, split).write_text("".join(f"{u} 他们在妈上\n" for u in refs), encoding="utf-8")
    summary = study.report_finished([1, 2], ["baseline", "tot_cakt"])
    assert summary["baseline"]["seeds"] == [1, 2] and summary["tot_cakt"]["seeds"] == [1]
    assert "tot_cakt: seeds [2] not finished" in capsys.readouterr().out


def test_plm_rechoice_replaces_each_ambiguous_character_by_the_lms_candidate(tmp_path, monkeypatch):
    """Stub LM favouring 她 and 门 at [MASK]: 他们在上 -> 她门在上; 在/上 have no same-syllable candidate and stay."""
    import transformers

    tok_dir = make_tiny_bert(tmp_path / "tok", chars="他她们门在上")
    vocab = transformers.AutoTokenizer.from_pretrained(str(tok_dir)).get_vocab()
    stub = _StubMaskedLM(vocab, vocab["[MASK]"], "她门")
    monkeypatch.setattr(transformers.AutoModelForMaskedLM, "from_pretrained", lambda *args, **kwargs: stub)
    out = probe.plm_rechoice(tok_dir, {"a": "他们在上", "b": "在上"}, list("他她们门在上"), batch_size=1)
    assert out == {"a": "她门在上", "b": "在上"}
    rows = [row for batch in stub.inputs for row in batch.tolist()]
    assert len(rows) == 2  # one masked pass per ambiguous character of the hypotheses
    assert rows[1][:6] == [vocab[c] for c in ("[CLS]", "他", "[MASK]", "在", "上", "[SEP]")]  # the rest as recognised
