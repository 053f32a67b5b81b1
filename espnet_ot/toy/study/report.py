"""The toy study's reports: the sweep's table and figure, and the study's RESULTS.md, summary.json and cer.png with
CER over seeds, paired CIs against the baseline, the error decomposition, the OT statistics and the PLM probes."""

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from espnet_ot.toy.bootstrap import mean_sd, paired_comparison
from espnet_ot.toy.errors import CATEGORIES
from espnet_ot.toy.experiment import Run, ToyExperiment
from espnet_ot.toy.jobs import Console
from espnet_ot.toy.probe import feature_identity_probe, homophone_probe
from espnet_ot.toy.study.design import SWEEP, SWEEP_SEED, Method
from espnet_ot.toy.text import char_counts


def _ot_stats(stats: Mapping[str, float]) -> Dict[str, float]:
    """The OT branch's statistics among a trainer report's values."""
    return {
        k: stats[k]
        for k in (
            "band_mass",
            "coupling_entropy",
            "coupling_entropy_rel",
            "ot_marginal_err",
            "ot_iters",
            "loss_ot",
            "loss_align",
        )
        if k in stats
    }


class StudyReport:
    """The reports of :class:`~espnet_ot.toy.study.runner.Study` (its base class): they read the finished runs of
    ``self.x`` (the ToyExperiment), name the systems by ``self.methods`` and list the sweep's runs with
    ``self.sweep_runs``."""

    x: ToyExperiment
    methods: Dict[str, Method]
    console: Console

    def sweep_runs(self, method: str) -> List[Tuple[str, Dict[str, Any], Run]]:
        """(variant, patch, run) of each sweep variant of method: the runner's."""
        raise NotImplementedError

    # ------------------------------------------------------------------ sweep (dev only) and choice
    def choose(self, method: str) -> Dict[str, Any]:
        """The sweep variant of method with the lowest dev CER (ties: the first listed); its table row."""
        rows = []
        for variant, patch, run in self.sweep_runs(method):
            ec = self.x.error_counts(run, "dev")
            rows.append(
                dict(
                    method=method,
                    variant=variant,
                    patch=patch,
                    dev_cer=ec.cer,
                    linguistic_share=ec.linguistic_share,
                    **self.final_stats(run),
                )
            )
        best = min(rows, key=lambda r: r["dev_cer"])
        for r in rows:
            r["chosen"] = r is best
        return {"rows": rows, "chosen": best}

    def write_sweep_report(self, methods: Sequence[str]) -> Dict[str, Any]:
        """<out>/sweep.md and sweep.json: every swept variant's dev CER and OT statistics, the choice marked."""
        rows = [r for m in methods if m in SWEEP for r in self.choose(m)["rows"]]
        (self.x.out / "sweep.json").write_text(
            json.dumps({"seed": SWEEP_SEED, "rows": rows}, indent=1), encoding="utf-8"
        )
        lines = [
            "# Toy sweep (dev only)",
            "",
            f"One training per variant (seed {SWEEP_SEED}, not a study seed), greedy "
            "CTC on the dev set, the lowest dev CER marked. Test is not decoded. The first variant of a method was its "
            "espnet_ot/toy/conf setting before the sweep; espnet_ot/toy/conf carries the lowest-dev-CER variant, "
            "and the study trains espnet_ot/toy/conf. One seed per variant: differences within about 1 CER point "
            "(the spread over seeds) are not evidence.",
            "",
            "| method | variant | dev CER (%) | linguistic share | band_mass | coupling entropy (rel. to uniform) | ot_marginal_err | patch |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            mark = " **(lowest dev CER)**" if r["chosen"] and len(SWEEP[r["method"]]) > 1 else ""
            lines.append(
                f"| {r['method']} | {r['variant']}{mark} | {r['dev_cer']:.2f} | {r['linguistic_share']:.2f} | "
                f"{_fmt(r.get('band_mass'))} | {_fmt(r.get('coupling_entropy'))} ({_fmt(r.get('coupling_entropy_rel'))}) | "
                f"{_fmt(r.get('ot_marginal_err'))} | "
                f"`{json.dumps(r['patch'])}` |"
            )
        (self.x.out / "sweep.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.sweep_figure(rows, self.x.out / "sweep.png")
        return {"rows": rows}

    @staticmethod
    def sweep_figure(rows: Sequence[Dict[str, Any]], path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3))
        for i, r in enumerate(rows):
            reference = r["method"] == "baseline"
            ax.bar(i, r["dev_cer"], color="#bdbdbd" if reference else "#3182bd" if r["chosen"] else "#9ecae1")
            ax.text(i, r["dev_cer"], f"{r['dev_cer']:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(rows)), [f"{r['method']}\n{r['variant']}" for r in rows], fontsize=7)
        ax.set_ylabel("dev CER (%)")
        ax.set_title(
            f"toy sweep, dev only (seed {SWEEP_SEED}); dark = lowest dev CER of a method, grey = reference", fontsize=8
        )
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)

    def final_stats(self, run: Run) -> Dict[str, float]:
        """The last epoch's validation OT statistics (empty for a model without the OT branch)."""
        epochs = self.x.epoch_stats(run)
        return _ot_stats(epochs[-1]["valid"]) if epochs else {}

    def initial_stats(self, run: Run) -> Dict[str, float]:
        """The OT statistics of the first logged training batches (empty for a model without the OT branch)."""
        return _ot_stats(self.x.first_interval_stats(run))

    # ------------------------------------------------------------------ study
    def report(self, runs: Dict[str, List[Run]]) -> Dict[str, Any]:
        """RESULTS.md, summary.json and cer.png of finished runs (each method with its own seeds)."""
        x = self.x
        summary: Dict[str, Any] = {}
        base_errs = {r.seed: x.utterance_errors(r, "test") for r in runs["baseline"]}
        utts, _, lens = next(iter(base_errs.values()))
        for name, rs in runs.items():
            test = [x.error_counts(r, "test") for r in rs]
            dev = [x.error_counts(r, "dev") for r in rs]
            mean, sd = mean_sd([e.cer for e in test])
            dmean, dsd = mean_sd([e.cer for e in dev])
            pooled = {c: sum(e.counts[c] for e in test) for c in CATEGORIES}
            n_ref = sum(e.n_ref for e in test)
            entry: Dict[str, Any] = {
                "title": self.methods[name].title,
                "test_cer_mean": mean,
                "test_cer_sd": sd,
                "dev_cer_mean": dmean,
                "dev_cer_sd": dsd,
                "seeds": [r.seed for r in rs],
                "test_cer_per_seed": [e.cer for e in test],
                "test_error_points": {c: 100.0 * n / n_ref for c, n in pooled.items()},
                "linguistic_share": sum(pooled[c] for c in ("homophone", "tone")) / max(1, sum(pooled.values())),
                "initial_train_stats": [self.initial_stats(r) for r in rs],
                "final_valid_stats": [self.final_stats(r) for r in rs],
                "config": str(rs[0].config),
            }
            if name != "baseline":
                # paired on the seeds both systems have (never a system's own seeds against the baseline's others)
                shared = sorted(set(base_errs) & {r.seed for r in rs})
                if not shared:
                    raise ValueError(f"{name}: no seed in common with the baseline; a paired comparison needs one")
                errs = {r.seed: x.utterance_errors(r, "test") for r in rs if r.seed in shared}
                c = paired_comparison({s: base_errs[s] for s in shared}, errs)
                base_mean = mean_sd(
                    [summary["baseline"]["test_cer_per_seed"][summary["baseline"]["seeds"].index(s)] for s in shared]
                )[0]
                entry["compared_on_seeds"] = shared
                entry["diff_vs_baseline"] = c["mean"]
                entry["diff_vs_baseline_ci95"] = c["bootstrap_ci95"]
                entry["relative_change"] = c["mean"] / base_mean
                entry["diff_over_seeds"] = c["mean"] if c["t_ci95"] else None
                entry["diff_over_seeds_ci95"] = c["t_ci95"]
            summary[name] = entry
        study_dir = x.out
        summary_probe = self.probe()
        (study_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (study_dir / "RESULTS.md").write_text(
            self.markdown(summary, len(utts), sum(lens), summary_probe, self.feature_probe()), encoding="utf-8"
        )
        self.figure(summary, study_dir / "cer.png")
        self.console.raw((study_dir / "RESULTS.md").read_text(encoding="utf-8"))
        return summary

    def probe(self) -> Dict[str, Any]:
        """The PLM's homophone probe on the test sentences (cached in <out>/probe.json) and its MLM accuracy."""
        path = self.x.out / "probe.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        tokens = self.x.characters()
        counts = char_counts(self.x.refs("train").values())
        result: Dict[str, Any] = homophone_probe(self.x.plm, sorted(self.x.refs("test").values()), tokens, counts)
        info = self.x.plm / "toy_plm.json"
        if info.is_file():
            res = json.loads(info.read_text(encoding="utf-8")).get("results", {})
            result["masked_char_accuracy"] = res.get("accuracy")
            result["unigram_accuracy"] = res.get("baseline_accuracy")
        path.write_text(json.dumps(result, indent=1), encoding="utf-8")
        return result

    def feature_probe(self) -> Dict[str, Any]:
        """:func:`feature_identity_probe` of each dumped Z_L kind (class means on train, scored on dev; cached)."""
        import kaldiio

        path = self.x.out / "zl_probe.json"
        result = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        for kind in ("plm", "plm_masked"):
            if kind in result or not all(self.x.feats_scp(kind, s).is_file() for s in ("train", "dev")):
                continue
            pairs = {}
            for split in ("train", "dev"):
                feats = kaldiio.load_scp(str(self.x.feats_scp(kind, split)))
                pairs[split] = [(text, feats[utt]) for utt, text in sorted(self.x.refs(split).items())]
            result[kind] = feature_identity_probe(pairs["train"], pairs["dev"])
        path.write_text(json.dumps(result, indent=1), encoding="utf-8")
        return result

    @staticmethod
    def markdown(
        summary: Dict[str, Any],
        n_utts: int,
        n_chars: int,
        probe: Dict[str, Any],
        zl_probe: Optional[Dict[str, Any]] = None,
    ) -> str:
        seeds = summary["baseline"]["seeds"]
        lines = [
            "# Toy experiment: test CER" + (" over seeds" if len(seeds) > 1 else f" (one seed: {seeds[0]})"),
            "",
            f"Greedy CTC on the {n_utts} test utterances ({n_chars} characters) of each seed's averaged model "
            f"(`valid.cer_ctc.ave.pth`); seeds {summary['baseline']['seeds']} (per system below). Every comparison is "
            "paired on the seeds both systems have (named where a system has fewer). CI: paired bootstrap over test "
            "utterances of the seed-averaged error counts (10000 draws), difference to the baseline in CER points. "
            "Over seeds: mean of the per-seed differences (same seed) with its Student-t 95% interval, which "
            "contains the spread of training runs (the bootstrap CI does not).",
            "",
            "| system | test CER mean ± sd | dev CER mean ± sd | diff vs baseline [95% CI] | relative | "
            "diff over seeds [95% t-interval] | test CER per seed (seed: CER) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, e in summary.items():
            diff = (
                "—"
                if name == "baseline"
                else (
                    f"{e['diff_vs_baseline']:+.2f} [{e['diff_vs_baseline_ci95'][0]:+.2f}, {e['diff_vs_baseline_ci95'][1]:+.2f}]"
                )
            )
            if name != "baseline" and e["compared_on_seeds"] != seeds:
                diff += f" (seeds {', '.join(map(str, e['compared_on_seeds']))} only)"
            rel = "—" if name == "baseline" else f"{100 * e['relative_change']:+.1f}%"
            over = e.get("diff_over_seeds_ci95")
            over = "—" if not over else f"{e['diff_over_seeds']:+.2f} [{over[0]:+.2f}, {over[1]:+.2f}]"
            lines.append(
                f"| {e['title']} | {e['test_cer_mean']:.2f} ± {e['test_cer_sd']:.2f} | "
                f"{e['dev_cer_mean']:.2f} ± {e['dev_cer_sd']:.2f} | {diff} | {rel} | {over} | "
                f"{', '.join(f'{k}: {c:.2f}' for k, c in zip(e['seeds'], e['test_cer_per_seed']))} |"
            )
        lines += [
            "",
            "Error decomposition (test, pooled over seeds, CER points): homophone = same syllable and tone, "
            "tone = same syllable other tone (both fixable by a language model), other substitution, deletion, "
            "insertion.",
            "",
            "| system | " + " | ".join(CATEGORIES) + " | linguistic share |",
            "|---|" + "---:|" * (len(CATEGORIES) + 1),
        ]
        for name, e in summary.items():
            lines.append(
                f"| {e['title']} | "
                + " | ".join(f"{e['test_error_points'][c]:.2f}" for c in CATEGORIES)
                + f" | {e['linguistic_share']:.2f} |"
            )
        lines += [
            "",
            "OT statistics (mean over seeds) at initialisation (the trainer's report of the first training "
            "batches of epoch 1, learning rate still in warmup) and after training (last epoch, validation): "
            "band_mass = coupling mass within 0.1 of the diagonal (about 0.2 for a uniform coupling), coupling "
            "entropy relative to the uniform coupling's (1 = uniform, about 0.5 = one-to-one), the worst "
            "Sinkhorn marginal error:",
            "",
            "| system | band_mass init → final | coupling_entropy_rel init → final | coupling_entropy final | "
            "ot_marginal_err final |",
            "|---|---:|---:|---:|---:|",
        ]

        def mean_of(stats: Sequence[Dict[str, float]], key: str) -> str:
            xs = [s[key] for s in stats if key in s]
            return f"{sum(xs) / len(xs):.4g}" if xs else "—"

        for name, e in summary.items():
            first, last = e.get("initial_train_stats", []), e["final_valid_stats"]
            lines.append(
                f"| {e['title']} | "
                + " | ".join(
                    [f"{mean_of(first, k)} → {mean_of(last, k)}" for k in ("band_mass", "coupling_entropy_rel")]
                    + [mean_of(last, k) for k in ("coupling_entropy", "ot_marginal_err")]
                )
                + " |"
            )
        a, t = probe["any_tone"], probe["same_tone"]
        lines += [
            "",
            "What the PLM knows (homophone probe on the test sentences: mask a character, choose among the "
            "recogniser's characters with the same syllable by the PLM's score or by training-transcript "
            "frequency):",
            "",
            f"- same syllable, any tone: PLM {100 * a['plm_acc']:.1f}% vs frequency {100 * a['freq_acc']:.1f}% "
            f"({a['n']} positions, {100 * a['ambiguous_share']:.1f}% of the characters are ambiguous)",
            f"- same syllable and tone: PLM {100 * t['plm_acc']:.1f}% vs frequency {100 * t['freq_acc']:.1f}% "
            f"({t['n']} positions)",
        ]
        if probe.get("masked_char_accuracy") is not None:
            lines.append(
                f"- held-out masked-character accuracy {100 * probe['masked_char_accuracy']:.1f}% vs "
                f"{100 * probe['unigram_accuracy']:.1f}% for the unigram guess"
            )
        names = {"plm": "Z_L (as the papers: the token visible)", "plm_masked": "masked Z_L (the token masked)"}
        if zl_probe:
            lines += [
                "",
                "What Z_L says about its own token (dev rows, nearest train class mean by cosine): a code "
                "of the token itself carries what the CTC labels already say; the PLM's knowledge of which "
                "homophone fits shows only when the token is masked:",
                "",
                "| features | character identified | among its same-syllable characters |",
                "|---|---:|---:|",
            ]
            for kind, r in zl_probe.items():
                lines.append(
                    f"| {names.get(kind, kind)} | {100 * r['all']:.1f}% ({r['n']}) | "
                    f"{100 * r['homophones']:.1f}% ({r['n_homophones']}) |"
                )
        if len(seeds) == 1:
            lines += [
                "",
                "One seed shows the pipeline, not the effect: the evidence over seeds, with the controls, "
                "is the study (`python -m espnet_ot.bin.study`, docs/results/toy_study.md).",
            ]
        return "\n".join(lines) + "\n"

    @staticmethod
    def figure(summary: Dict[str, Any], path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(summary)
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for i, name in enumerate(names):
            e = summary[name]
            ax.bar(i, e["test_cer_mean"], color="#9ecae1" if name.startswith("control") else "#3182bd")
            ax.plot([i] * len(e["test_cer_per_seed"]), e["test_cer_per_seed"], "k.", ms=6)
            if name != "baseline":
                lo, hi = e["diff_vs_baseline_ci95"]
                base = summary["baseline"]["test_cer_mean"]
                ax.errorbar(
                    i + 0.25,
                    base + e["diff_vs_baseline"],
                    yerr=[[e["diff_vs_baseline"] - lo], [hi - e["diff_vs_baseline"]]],
                    fmt="r_",
                    capsize=3,
                )
        ax.axhline(summary["baseline"]["test_cer_mean"], color="gray", lw=0.8, ls="--")
        ax.set_xticks(range(len(names)), [n.replace("control_", "ctl ") for n in names], rotation=20, fontsize=8)
        ax.set_ylabel("test CER (%)")
        ax.set_title(
            "toy study: bars = mean over seeds, dots = seeds, red = baseline + 95% CI of the difference", fontsize=8
        )
        fig.tight_layout()
        fig.savefig(path, dpi=120)


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3g}"
