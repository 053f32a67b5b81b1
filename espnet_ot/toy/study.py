"""The toy study: a dev-only settings sweep, then seeds x methods with controls, CIs and an error decomposition."""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from espnet_ot.toy.bootstrap import mean_sd, paired_comparison
from espnet_ot.toy.errors import CATEGORIES
from espnet_ot.toy.experiment import Run, ToyExperiment, deep_update, write_variant
from espnet_ot.toy.extra import PACKAGES, ToyExtraMissing, require
from espnet_ot.toy.jobs import Console, JobFailed, Task, run_tasks
from espnet_ot.toy.probe import feature_identity_probe, homophone_probe
from espnet_ot.toy.text import char_counts
from espnet_ot.toy.world import CORPUS, PLM, TOY_CONF, build_corpus, build_plm, plm_width

REPO_CONF = TOY_CONF  # its former name, from when the configs were conf/demo (outside the package)


@dataclass(frozen=True)
class Method:
    """A trained system of the study: its base config (espnet_ot/toy/conf), a patch of it and the Z_L it reads."""

    name: str
    title: str
    config: str
    feats: Optional[str]
    patch: Mapping[str, Any] = field(default_factory=dict)


METHODS: Tuple[Method, ...] = (
    Method("baseline", "Conformer-CTC baseline", "baseline.yaml", None),
    Method("ot_bert", "OT-BERT", "ot_bert.yaml", "plm"),
    Method("tot_cakt", "TOT-CAKT", "tot_cakt.yaml", "plm"),
    Method("gm_ot", "GM-OT", "gm_ot.yaml", "plm"),
    # (a) is a gain the loss weighting? TOT-CAKT's lambda * L_ctc with the OT terms weighted 0
    Method("control_no_ot_weight", "control: TOT-CAKT with ot_weight 0", "tot_cakt.yaml", "plm",
           {"model_conf": {"ot_weight": 0.0}}),
    # (b) is a gain the PLM's knowledge? TOT-CAKT reading another utterance's Z_L of the same token length
    Method("control_shuffled_plm", "control: TOT-CAKT, Z_L shuffled", "tot_cakt.yaml", "plm_shuffled"),
    # our extension: TOT-CAKT whose Z_L is the PLM's expectation of each token from its context (token masked),
    # the knowledge the homophone probe measures, instead of a code of the (already labelled) token itself
    Method("tot_cakt_masked", "TOT-CAKT, masked Z_L (ours)", "tot_cakt.yaml", "plm_masked"),
)
METHOD_NAMES = tuple(m.name for m in METHODS)

# The dev sweep (`python -m espnet_ot.bin.sweep`, run before the study): variants of each method's setting, each
# trained once (seed SWEEP_SEED, not a study seed) and decoded on dev only; each variant states the values it
# varies in full (so the sweep does not depend on the current values of the configs, espnet_ot/toy/conf); the first
# variant of a method was its config's setting before the sweep. The variant with the lowest dev CER is what the
# config then carries (a maintainer's edit, as ESPnet's conf/tuning -> conf/ choice). What is varied, one factor at
# a time within a budget of 10 trainings plus the baseline at the same seed: the entropy weight eps (informative vs
# diffuse couplings), the semi-relaxed acoustic marginal (frames may stay unmatched), the CTC weight lambda, the
# temporal prior's weight beta, GM-OT's eps and edges (the paper's feature edges vs half feature, half temporal;
# temporal edges alone, with no prior in the node cost, are symmetric under time reversal and leave the coupling
# near uniform), and a row for the masked-Z_L extension at TOT-CAKT's setting. The adapter scale s and GM-OT's
# alpha were added after the study had been run (one row each, at the chosen setting): espnet_ot/toy/conf was chosen
# from the rows above them.
SWEEP_SEED = 100


def _variant(ctc_lambda: float = 0.3, scale: float = 0.1, **alignment_conf: Any) -> Dict[str, Any]:
    """A patch of a method's config: CTC weight lambda, adapter scale s (Eq. 22) and the alignment options."""
    return {"model_conf": {"ctc_lambda": ctc_lambda, "alignment_conf": alignment_conf},
            "postencoder_conf": {"scale": scale}}


def _ot(eps: float = 0.1) -> Dict[str, Any]:
    """OT-BERT's swept values in full (defaults: espnet_ot/toy/conf before the sweep)."""
    return _variant(eps=eps)


def _tot(ctc_lambda: float = 0.3, eps: float = 0.3, beta: float = 0.5, relax: Optional[float] = None,
         scale: float = 0.1) -> Dict[str, Any]:
    """TOT-CAKT's swept values in full (defaults: espnet_ot/toy/conf before the sweep)."""
    return _variant(ctc_lambda, scale, eps=eps, beta=beta, relax=relax)


def _gm(eps: float = 0.1, alpha: float = 0.5, edges: str = "feature", **extra: Any) -> Dict[str, Any]:
    """GM-OT's swept values in full (defaults: espnet_ot/toy/conf before the sweep)."""
    return _variant(eps=eps, alpha=alpha, edges=edges, **extra)


SWEEP: Dict[str, Tuple[Tuple[str, Dict[str, Any]], ...]] = {
    # the reference at the sweep's seed: is a variant's dev CER below the baseline's at all?
    "baseline": (("ctc_only", {}),),
    "ot_bert": (("eps0.1", _ot()), ("eps0.03", _ot(eps=0.03))),
    "tot_cakt": (
        ("eps0.3", _tot()),
        ("eps0.1", _tot(eps=0.1)),
        ("eps0.3_relax1", _tot(relax=1.0)),
        ("eps0.3_lambda0.6", _tot(ctc_lambda=0.6)),
        ("eps0.3_beta2", _tot(beta=2.0)),
        ("eps0.3_relax1_s0.5", _tot(relax=1.0, scale=0.5)),
    ),
    "tot_cakt_masked": (("eps0.3", _tot()),),
    "gm_ot": (
        ("feature_edges", _gm()),
        ("mix_edges", _gm(edges="mix", edge_mix=0.5)),
        ("feature_edges_eps0.03", _gm(eps=0.03)),
        ("feature_edges_eps0.03_alpha0.2", _gm(eps=0.03, alpha=0.2)),
    ),
}


def _ot_stats(stats: Mapping[str, float]) -> Dict[str, float]:
    """The OT branch's statistics among a trainer report's values."""
    return {k: stats[k] for k in ("band_mass", "coupling_entropy", "coupling_entropy_rel", "ot_marginal_err",
                                  "ot_iters", "loss_ot", "loss_align") if k in stats}


class Study:
    """Runs (resumably) the sweep or the study of the toy experiment and writes their reports."""

    def __init__(self, out: Path, corpus: Path, plm: Path, plm_dim: int, jobs: int = 2,
                 conf_dir: Path = TOY_CONF, console: Optional[Console] = None, train_args: Sequence[str] = ()):
        """Paths only; nothing is computed here. train_args: extra asr_train options of every training."""
        self.console = console or Console("study")
        cores = os.cpu_count() or 1
        self.jobs = max(1, jobs)
        self.x = ToyExperiment(out, corpus, plm, plm_dim, threads=max(1, cores // self.jobs), console=self.console)
        self.conf_dir = Path(conf_dir).resolve()
        self.methods = {m.name: m for m in METHODS}
        self.train_args = list(train_args)

    def phase(self, name: str, fn) -> Callable[[], None]:
        """fn wrapped to print one line when it starts and one (with its note) when it ends."""

        def wrapped() -> None:
            self.console.line(f"{name}: started")
            t0 = time.time()
            note = fn()
            self.console.line(f"{name}: done in {time.time() - t0:.0f}s{' - ' + note if note else ''}")

        return wrapped

    def config_of(self, name: str, method: Method, patch: Mapping[str, Any]) -> Path:
        merged = deep_update(dict(method.patch), patch)
        if not merged:
            return self.conf_dir / method.config
        return write_variant(self.conf_dir / method.config, merged, self.x.out / "conf" / f"{name}.yaml", name)

    def prep_tasks(self, runs: Sequence[Run]) -> List[Task]:
        """Data, stats and Z_L dumps (the PLM is built before, see :func:`espnet_ot.toy.world.build_plm`)."""
        x = self.x
        base = self.conf_dir / METHODS[0].config
        tasks = [
            Task("data", self.phase("data", x.prepare_data)),
            Task("stats", self.phase("stats", lambda: x.collect_stats(base)), ["data"]),
        ]
        if any(r.feats is not None for r in runs):
            tasks += [Task("feats_train", self.phase("plm_feats train", lambda: x.dump_feats("train")), ["data"]),
                      Task("feats_dev", self.phase("plm_feats dev", lambda: x.dump_feats("dev")), ["data"])]
        if any(r.feats == "plm_masked" for r in runs):
            tasks += [Task(f"masked_{s}", self.phase(f"masked Z_L {s}", lambda s=s: x.dump_feats(s, "plm_masked")),
                           ["data"]) for s in ("train", "dev")]
        if any(r.feats == "plm_shuffled" for r in runs):
            tasks.append(Task("shuffled", self.phase("shuffled Z_L", lambda: "; ".join(
                x.shuffle_feats(s) for s in ("train", "dev"))), ["feats_train", "feats_dev"]))
        return tasks

    def train_tasks(self, runs: Sequence[Run], splits: Sequence[str]) -> List[Task]:
        tasks = []
        for run in runs:
            deps = ["stats"]
            if run.feats is not None:
                deps += {"plm_shuffled": ["shuffled"], "plm_masked": ["masked_train", "masked_dev"]}.get(
                    run.feats, ["feats_train", "feats_dev"])
            tasks.append(Task(f"train {run.name}", self.phase(f"train {run.name}", lambda r=run: self.x.train(r, self.train_args)), deps))
            tasks.append(Task(f"decode {run.name}", self.phase(
                f"decode {run.name}", lambda r=run: self.x.decode(r, splits)), [f"train {run.name}"]))
        return tasks

    # ------------------------------------------------------------------ sweep (dev only) and choice
    def sweep_runs(self, method: str) -> List[Tuple[str, Dict[str, Any], Run]]:
        m = self.methods[method]
        return [(variant, patch, Run(f"sweep/{method}/{variant}", self.config_of(f"sweep_{method}_{variant}", m, patch),
                                     SWEEP_SEED, m.feats)) for variant, patch in SWEEP.get(method, ())]

    def choose(self, method: str) -> Dict[str, Any]:
        """The sweep variant of method with the lowest dev CER (ties: the first listed); its table row."""
        rows = []
        for variant, patch, run in self.sweep_runs(method):
            ec = self.x.error_counts(run, "dev")
            rows.append(dict(method=method, variant=variant, patch=patch, dev_cer=ec.cer,
                             linguistic_share=ec.linguistic_share, **self.final_stats(run)))
        best = min(rows, key=lambda r: r["dev_cer"])
        for r in rows:
            r["chosen"] = r is best
        return {"rows": rows, "chosen": best}

    def write_sweep_report(self, methods: Sequence[str]) -> Dict[str, Any]:
        """<out>/sweep.md and sweep.json: every swept variant's dev CER and OT statistics, the choice marked."""
        rows = [r for m in methods if m in SWEEP for r in self.choose(m)["rows"]]
        (self.x.out / "sweep.json").write_text(json.dumps({"seed": SWEEP_SEED, "rows": rows}, indent=1), encoding="utf-8")
        lines = ["# Toy sweep (dev only)", "", f"One training per variant (seed {SWEEP_SEED}, not a study seed), greedy "
                 "CTC on the dev set, the lowest dev CER marked. Test is not decoded. The first variant of a method was its "
                 "espnet_ot/toy/conf setting before the sweep; espnet_ot/toy/conf carries the lowest-dev-CER variant, "
                 "and the study trains espnet_ot/toy/conf. One seed per variant: differences within about 1 CER point "
                 "(the spread over seeds) are not evidence.", "",
                 "| method | variant | dev CER (%) | linguistic share | band_mass | coupling entropy (rel. to uniform) | ot_marginal_err | patch |",
                 "|---|---|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            mark = " **(lowest dev CER)**" if r["chosen"] and len(SWEEP[r["method"]]) > 1 else ""
            lines.append(f"| {r['method']} | {r['variant']}{mark} | {r['dev_cer']:.2f} | {r['linguistic_share']:.2f} | "
                         f"{_fmt(r.get('band_mass'))} | {_fmt(r.get('coupling_entropy'))} ({_fmt(r.get('coupling_entropy_rel'))}) | "
                         f"{_fmt(r.get('ot_marginal_err'))} | "
                         f"`{json.dumps(r['patch'])}` |")
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
        ax.set_title(f"toy sweep, dev only (seed {SWEEP_SEED}); dark = lowest dev CER of a method, grey = reference",
                     fontsize=8)
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
    def study_config(self, name: str) -> Path:
        """Config of a study system: its base config (espnet_ot/toy/conf) with its own patch (the controls')."""
        return self.x.out / "conf" / f"study_{name}.yaml"

    def write_study_config(self, name: str) -> str:
        m = self.methods[name]
        write_variant(self.conf_dir / m.config, m.patch, self.study_config(name), f"study {name}")
        return str(self.study_config(name))

    def study_runs(self, seeds: Sequence[int], methods: Sequence[str],
                   control_seeds: Optional[Sequence[int]] = None) -> Dict[str, List[Run]]:
        """The runs of each method; the controls use control_seeds (default: seeds)."""
        def seeds_of(name: str) -> Sequence[int]:
            return control_seeds if control_seeds is not None and name.startswith("control") else seeds

        return {name: [Run(f"study/{name}/seed{s}", self.study_config(name), s, self.methods[name].feats)
                       for s in seeds_of(name)] for name in methods}

    def run_sweep(self, methods: Sequence[str] = tuple(SWEEP)) -> Dict[str, Any]:
        """Train (resuming) and decode on dev every sweep variant of methods; write <out>/sweep.{md,json,png}."""
        unknown = sorted(set(methods) - set(SWEEP))
        if unknown:
            raise ValueError(f"methods: {', '.join(unknown)} not swept; choose from {', '.join(SWEEP)}")
        runs = [r for m in methods for _, _, r in self.sweep_runs(m)]
        run_tasks(self.prep_tasks(runs) + self.train_tasks(runs, ["dev"]), self.jobs, self.console)
        report = self.write_sweep_report(methods)
        self.console.raw((self.x.out / "sweep.md").read_text(encoding="utf-8"))
        return report

    def run_study(self, seeds: Sequence[int], methods: Sequence[str] = METHOD_NAMES,
                  control_seeds: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """Train (resuming), decode and report every method for every seed, in one job graph.

        The systems are the configs of conf_dir as they are (their settings chosen on dev by :meth:`run_sweep`).
        """
        if "baseline" not in methods:
            raise ValueError("methods: the study compares with the baseline; keep `baseline` in --methods")
        runs = self.study_runs(seeds, methods, control_seeds)
        # the runs of seed 1 first, then seed 2, ...: an interrupted study has whole seeds of every method
        order = [runs[name][i] for i in range(len(seeds)) for name in methods if i < len(runs[name])]
        tasks = self.prep_tasks(order)
        tasks += [Task(f"config {n}", self.phase(f"config {n}", lambda n=n: self.write_study_config(n))) for n in methods]
        for task in self.train_tasks(order, ["dev", "test"]):
            if task.name.startswith("train "):
                task.deps.append(f"config {task.name.split('/')[1]}")
            tasks.append(task)
        run_tasks(tasks, self.jobs, self.console)
        return self.report(runs)

    def report_finished(self, seeds: Sequence[int], methods: Sequence[str] = METHOD_NAMES,
                        control_seeds: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """:meth:`report` of the runs whose dev and test are decoded (nothing is trained); says what is missing."""
        runs = self.study_runs(seeds, methods, control_seeds)
        done = {name: [r for r in rs if all(self.x.hyp_file(r, s).is_file() for s in ("dev", "test"))]
                for name, rs in runs.items()}
        for name, rs in runs.items():
            missing = [r.seed for r in rs if r not in done[name]]
            if missing:
                self.console.line(f"report: {name}: seeds {missing} not finished, reported without them")
        done = {name: rs for name, rs in done.items() if rs}
        if "baseline" not in done:
            raise ValueError("methods: no finished baseline run to compare with; run the study first")
        return self.report(done)

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
                "test_cer_mean": mean, "test_cer_sd": sd, "dev_cer_mean": dmean, "dev_cer_sd": dsd,
                "seeds": [r.seed for r in rs], "test_cer_per_seed": [e.cer for e in test],
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
                base_mean = mean_sd([summary["baseline"]["test_cer_per_seed"][summary["baseline"]["seeds"].index(s)]
                                     for s in shared])[0]
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
        (study_dir / "RESULTS.md").write_text(self.markdown(summary, len(utts), sum(lens), summary_probe,
                                                            self.feature_probe()), encoding="utf-8")
        self.figure(summary, study_dir / "cer.png")
        self.console.raw((study_dir / "RESULTS.md").read_text(encoding="utf-8"))
        return summary

    def probe(self) -> Dict[str, Any]:
        """The PLM's homophone probe on the test sentences (cached in <out>/probe.json) and its MLM accuracy."""
        path = self.x.out / "probe.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        tokens = [t for t in self.x.token_list.read_text(encoding="utf-8").split() if not t.startswith("<")]
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
    def markdown(summary: Dict[str, Any], n_utts: int, n_chars: int, probe: Dict[str, Any],
                 zl_probe: Optional[Dict[str, Any]] = None) -> str:
        seeds = summary["baseline"]["seeds"]
        lines = [
            "# Toy experiment: test CER" + (" over seeds" if len(seeds) > 1 else f" (one seed: {seeds[0]})"), "",
            f"Greedy CTC on the {n_utts} test utterances ({n_chars} characters) of each seed's averaged model "
            f"(`valid.cer_ctc.ave.pth`); seeds {summary['baseline']['seeds']} (per system below). Every comparison is "
            "paired on the seeds both systems have (named where a system has fewer). CI: paired bootstrap over test "
            "utterances of the seed-averaged error counts (10000 draws), difference to the baseline in CER points. "
            "Over seeds: mean of the per-seed differences (same seed) with its Student-t 95% interval, which "
            "contains the spread of training runs (the bootstrap CI does not).", "",
            "| system | test CER mean ± sd | dev CER mean ± sd | diff vs baseline [95% CI] | relative | "
            "diff over seeds [95% t-interval] | test CER per seed (seed: CER) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, e in summary.items():
            diff = "—" if name == "baseline" else (
                f"{e['diff_vs_baseline']:+.2f} [{e['diff_vs_baseline_ci95'][0]:+.2f}, {e['diff_vs_baseline_ci95'][1]:+.2f}]")
            if name != "baseline" and e["compared_on_seeds"] != seeds:
                diff += f" (seeds {', '.join(map(str, e['compared_on_seeds']))} only)"
            rel = "—" if name == "baseline" else f"{100 * e['relative_change']:+.1f}%"
            over = e.get("diff_over_seeds_ci95")
            over = "—" if not over else f"{e['diff_over_seeds']:+.2f} [{over[0]:+.2f}, {over[1]:+.2f}]"
            lines.append(f"| {e['title']} | {e['test_cer_mean']:.2f} ± {e['test_cer_sd']:.2f} | "
                         f"{e['dev_cer_mean']:.2f} ± {e['dev_cer_sd']:.2f} | {diff} | {rel} | {over} | "
                         f"{', '.join(f'{k}: {c:.2f}' for k, c in zip(e['seeds'], e['test_cer_per_seed']))} |")
        lines += ["", "Error decomposition (test, pooled over seeds, CER points): homophone = same syllable and tone, "
                  "tone = same syllable other tone (both fixable by a language model), other substitution, deletion, "
                  "insertion.", "",
                  "| system | " + " | ".join(CATEGORIES) + " | linguistic share |", "|---|" + "---:|" * (len(CATEGORIES) + 1)]
        for name, e in summary.items():
            lines.append(f"| {e['title']} | " + " | ".join(f"{e['test_error_points'][c]:.2f}" for c in CATEGORIES)
                         + f" | {e['linguistic_share']:.2f} |")
        lines += ["", "OT statistics (mean over seeds) at initialisation (the trainer's report of the first training "
                  "batches of epoch 1, learning rate still in warmup) and after training (last epoch, validation): "
                  "band_mass = coupling mass within 0.1 of the diagonal (about 0.2 for a uniform coupling), coupling "
                  "entropy relative to the uniform coupling's (1 = uniform, about 0.5 = one-to-one), the worst "
                  "Sinkhorn marginal error:", "",
                  "| system | band_mass init → final | coupling_entropy_rel init → final | coupling_entropy final | "
                  "ot_marginal_err final |", "|---|---:|---:|---:|---:|"]

        def mean_of(stats: Sequence[Dict[str, float]], key: str) -> str:
            xs = [s[key] for s in stats if key in s]
            return f"{sum(xs) / len(xs):.4g}" if xs else "—"

        for name, e in summary.items():
            first, last = e.get("initial_train_stats", []), e["final_valid_stats"]
            lines.append(f"| {e['title']} | " + " | ".join(
                [f"{mean_of(first, k)} → {mean_of(last, k)}" for k in ("band_mass", "coupling_entropy_rel")]
                + [mean_of(last, k) for k in ("coupling_entropy", "ot_marginal_err")]) + " |")
        a, t = probe["any_tone"], probe["same_tone"]
        lines += ["", "What the PLM knows (homophone probe on the test sentences: mask a character, choose among the "
                  "recogniser's characters with the same syllable by the PLM's score or by training-transcript "
                  "frequency):", "",
                  f"- same syllable, any tone: PLM {100 * a['plm_acc']:.1f}% vs frequency {100 * a['freq_acc']:.1f}% "
                  f"({a['n']} positions, {100 * a['ambiguous_share']:.1f}% of the characters are ambiguous)",
                  f"- same syllable and tone: PLM {100 * t['plm_acc']:.1f}% vs frequency {100 * t['freq_acc']:.1f}% "
                  f"({t['n']} positions)"]
        if probe.get("masked_char_accuracy") is not None:
            lines.append(f"- held-out masked-character accuracy {100 * probe['masked_char_accuracy']:.1f}% vs "
                         f"{100 * probe['unigram_accuracy']:.1f}% for the unigram guess")
        names = {"plm": "Z_L (as the papers: the token visible)", "plm_masked": "masked Z_L (the token masked)"}
        if zl_probe:
            lines += ["", "What Z_L says about its own token (dev rows, nearest train class mean by cosine): a code "
                      "of the token itself carries what the CTC labels already say; the PLM's knowledge of which "
                      "homophone fits shows only when the token is masked:", "",
                      "| features | character identified | among its same-syllable characters |", "|---|---:|---:|"]
            for kind, r in zl_probe.items():
                lines.append(f"| {names.get(kind, kind)} | {100 * r['all']:.1f}% ({r['n']}) | "
                             f"{100 * r['homophones']:.1f}% ({r['n_homophones']}) |")
        if len(seeds) == 1:
            lines += ["", "One seed shows the pipeline, not the effect: the evidence over seeds, with the controls, "
                      "is the study (`python -m espnet_ot.bin.study`, docs/results/toy_study.md)."]
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
                ax.errorbar(i + 0.25, base + e["diff_vs_baseline"], yerr=[[e["diff_vs_baseline"] - lo], [hi - e["diff_vs_baseline"]]],
                            fmt="r_", capsize=3)
        ax.axhline(summary["baseline"]["test_cer_mean"], color="gray", lw=0.8, ls="--")
        ax.set_xticks(range(len(names)), [n.replace("control_", "ctl ") for n in names], rotation=20, fontsize=8)
        ax.set_ylabel("test CER (%)")
        ax.set_title("toy study: bars = mean over seeds, dots = seeds, red = baseline + 95% CI of the difference", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    """The options the sweep and the study CLIs share: where they write, the toy world's cache, configs, jobs."""
    p.add_argument("--out", type=Path, default=Path("exp/study"), help="data, dumps, experiments and reports")
    p.add_argument("--cache", type=Path, default=Path("exp/toy_world"), help="the toy corpus and PLM (built once)")
    p.add_argument("--conf_dir", type=Path, default=TOY_CONF, help="the systems' base configs (espnet_ot/toy/conf)")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (each gets cores/jobs threads)")


def run_or_exit(prog: str, fn: Callable[[], Any]) -> None:
    """fn() once the toy extra is found; a missing package of the extra, a failed job or a bad path/option ends the
    program with one line ``<prog>: error: ...``."""
    try:
        require(*PACKAGES)  # corpus, PLM and report need all of them: fail before hours of work, not after
        fn()
    except (JobFailed, FileNotFoundError, ValueError, ToyExtraMissing) as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def open_study(out: Path, cache: Path, conf_dir: Path = TOY_CONF, jobs: int = 2,
               console: Optional[Console] = None) -> Study:
    """The Study of the toy world cached in ``cache`` (corpus and PLM built there first if missing)."""
    console = console or Console("study")
    corpus = build_corpus(Path(cache).resolve() / "corpus", CORPUS, console)
    plm = build_plm(Path(cache).resolve() / "plm", corpus, PLM, console)
    return Study(out, corpus, plm, plm_width(plm), jobs=jobs, conf_dir=conf_dir, console=console)


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3g}"
