"""The toy study: a dev-only settings sweep, then seeds x methods with controls, CIs and an error decomposition."""

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from espnet_ot.toy.bootstrap import mean_sd, paired_bootstrap_cer_diff
from espnet_ot.toy.errors import CATEGORIES
from espnet_ot.toy.experiment import Run, ToyExperiment, deep_update, write_variant
from espnet_ot.toy.jobs import Console, Task, run_tasks

REPO_CONF = Path(__file__).resolve().parents[2] / "conf" / "demo"


@dataclass(frozen=True)
class Method:
    """A trained system of the study: its base config (conf/demo), a patch of it and the Z_L it reads."""

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
)
METHOD_NAMES = tuple(m.name for m in METHODS)

# The dev sweep: (variant name, base method, patch). Each is trained once (seed SWEEP_SEED) and decoded on dev.
SWEEP_SEED = 100
# Patches replace whole alignment_conf entries key by key (the other keys keep the base config's values).
SWEEP: Tuple[Tuple[str, str, Dict[str, Any]], ...] = (
    ("tot_eps0.1", "tot_cakt", {"model_conf": {"alignment_conf": {"eps": 0.1}}}),
    ("tot_eps0.3", "tot_cakt", {"model_conf": {"alignment_conf": {"eps": 0.3}}}),
    ("gmot_feature_edges", "gm_ot", {"model_conf": {"alignment_conf": {"edges": "feature"}}}),
    ("gmot_temporal_edges", "gm_ot", {"model_conf": {"alignment_conf": {"edges": "temporal"}}}),
)


class Study:
    """Runs (resumably) the sweep or the study of the toy experiment and writes their reports."""

    def __init__(self, out: Path, corpus: Path, plm: Path, plm_dim: int, jobs: int = 2,
                 conf_dir: Path = REPO_CONF, console: Optional[Console] = None):
        """Paths only; nothing is computed here."""
        self.console = console or Console("study")
        cores = os.cpu_count() or 1
        self.jobs = max(1, jobs)
        self.x = ToyExperiment(out, corpus, plm, plm_dim, threads=max(1, cores // self.jobs), console=self.console)
        self.conf_dir = Path(conf_dir).resolve()
        self.methods = {m.name: m for m in METHODS}

    def phase(self, name: str, fn) -> Task:
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
        x = self.x
        base = self.conf_dir / METHODS[0].config
        tasks = [
            Task("data", self.phase("data", x.prepare_data)),
            Task("stats", self.phase("stats", lambda: x.collect_stats(base)), ["data"]),
        ]
        if any(r.feats is not None for r in runs):
            tasks += [Task("feats_train", self.phase("plm_feats train", lambda: x.dump_feats("train")), ["data"]),
                      Task("feats_dev", self.phase("plm_feats dev", lambda: x.dump_feats("dev")), ["data"])]
        if any(r.feats == "plm_shuffled" for r in runs):
            tasks.append(Task("shuffled", self.phase("shuffled Z_L", lambda: "; ".join(
                x.shuffle_feats(s) for s in ("train", "dev"))), ["feats_train", "feats_dev"]))
        return tasks

    def train_tasks(self, runs: Sequence[Run], splits: Sequence[str]) -> List[Task]:
        tasks = []
        for run in runs:
            deps = ["stats"]
            if run.feats is not None:
                deps += ["shuffled"] if run.feats == "plm_shuffled" else ["feats_train", "feats_dev"]
            tasks.append(Task(f"train {run.name}", self.phase(f"train {run.name}", lambda r=run: self.x.train(r)), deps))
            tasks.append(Task(f"decode {run.name}", self.phase(
                f"decode {run.name}", lambda r=run: self.x.decode(r, splits)), [f"train {run.name}"]))
        return tasks

    # ------------------------------------------------------------------ sweep
    def sweep_runs(self) -> List[Tuple[str, Method, Run]]:
        out = []
        for name, method_name, patch in SWEEP:
            m = self.methods[method_name]
            out.append((name, m, Run(f"sweep/{name}", self.config_of(f"sweep_{name}", m, patch), SWEEP_SEED, m.feats)))
        return out

    def run_sweep(self) -> Dict[str, Any]:
        runs = self.sweep_runs()
        todo = [r for _, _, r in runs]
        run_tasks(self.prep_tasks(todo) + self.train_tasks(todo, ["dev"]), self.jobs, self.console)
        rows = []
        for name, m, run in runs:
            ec = self.x.error_counts(run, "dev")
            rows.append(dict(variant=name, method=m.name, dev_cer=ec.cer, patch=dict(SWEEP[[s[0] for s in SWEEP].index(name)][2]),
                             linguistic_share=ec.linguistic_share, **self.final_stats(run)))
        chosen = {}
        for r in rows:
            if r["method"] not in chosen or r["dev_cer"] < chosen[r["method"]]["dev_cer"]:
                chosen[r["method"]] = r
        summary = {"seed": SWEEP_SEED, "rows": rows, "chosen": {k: v["variant"] for k, v in chosen.items()}}
        sweep_dir = self.x.out / "sweep"
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        lines = ["# Toy sweep (dev only)", "", f"One training per variant (seed {SWEEP_SEED}), greedy CTC on dev.", "",
                 "| variant | method | dev CER (%) | linguistic share | band_mass | coupling entropy | patch |",
                 "|---|---|---:|---:|---:|---:|---|"]
        for r in sorted(rows, key=lambda r: (r["method"], r["dev_cer"])):
            mark = " **(chosen)**" if chosen[r["method"]]["variant"] == r["variant"] else ""
            lines.append(f"| {r['variant']}{mark} | {r['method']} | {r['dev_cer']:.2f} | {r['linguistic_share']:.2f} | "
                         f"{_fmt(r.get('band_mass'))} | {_fmt(r.get('coupling_entropy'))} | `{json.dumps(r['patch'])}` |")
        (sweep_dir / "RESULTS.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.console.raw("\n".join(lines))
        return summary

    def final_stats(self, run: Run) -> Dict[str, float]:
        """The last epoch's validation OT statistics (empty for a model without the OT branch)."""
        epochs = self.x.epoch_stats(run)
        if not epochs:
            return {}
        valid = epochs[-1]["valid"]
        return {k: valid[k] for k in ("band_mass", "coupling_entropy", "ot_marginal_err", "loss_ot", "loss_align")
                if k in valid}

    # ------------------------------------------------------------------ study
    def study_runs(self, seeds: Sequence[int], methods: Sequence[str]) -> Dict[str, List[Run]]:
        out: Dict[str, List[Run]] = {}
        for name in methods:
            m = self.methods[name]
            config = self.config_of(f"study_{name}", m, {})
            out[name] = [Run(f"study/{name}/seed{s}", config, s, m.feats) for s in seeds]
        return out

    def run_study(self, seeds: Sequence[int], methods: Sequence[str] = METHOD_NAMES) -> Dict[str, Any]:
        if "baseline" not in methods:
            raise ValueError("methods: the study compares with the baseline; keep `baseline` in --methods")
        runs = self.study_runs(seeds, methods)
        # seeds outermost, so that an interrupted study has whole seeds of every method
        order = [r for i in range(len(seeds)) for name in methods for r in [runs[name][i]]]
        run_tasks(self.prep_tasks(order) + self.train_tasks(order, ["dev", "test"]), self.jobs, self.console)
        return self.report(runs, seeds)

    def report(self, runs: Dict[str, List[Run]], seeds: Sequence[int]) -> Dict[str, Any]:
        x = self.x
        summary: Dict[str, Any] = {}
        base_errs = [x.utterance_errors(r, "test") for r in runs["baseline"]]
        utts, _, lens = base_errs[0]
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
                "seeds": list(seeds), "test_cer_per_seed": [e.cer for e in test],
                "test_error_points": {c: 100.0 * n / n_ref for c, n in pooled.items()},
                "linguistic_share": sum(pooled[c] for c in ("homophone", "tone")) / max(1, sum(pooled.values())),
                "final_valid_stats": [self.final_stats(r) for r in rs],
                "config": str(rs[0].config),
            }
            if name != "baseline":
                errs = [x.utterance_errors(r, "test") for r in rs]
                if any(e[0] != utts for e in errs):
                    raise RuntimeError(f"{name}: decoded test utterances differ from the baseline's")
                ci = paired_bootstrap_cer_diff([e[1] for e in base_errs], [e[1] for e in errs], lens)
                entry["diff_vs_baseline"] = ci["diff"]
                entry["diff_vs_baseline_ci95"] = [ci["low"], ci["high"]]
                entry["relative_change"] = ci["diff"] / summary["baseline"]["test_cer_mean"]
                entry["p_below_zero"] = ci["p_below_zero"]
            summary[name] = entry
        study_dir = x.out / "study"
        study_dir.mkdir(parents=True, exist_ok=True)
        (study_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (study_dir / "RESULTS.md").write_text(self.markdown(summary, len(utts), sum(lens)), encoding="utf-8")
        self.figure(summary, study_dir / "study.png")
        self.console.raw((study_dir / "RESULTS.md").read_text(encoding="utf-8"))
        return summary

    @staticmethod
    def markdown(summary: Dict[str, Any], n_utts: int, n_chars: int) -> str:
        lines = [
            "# Toy study: test CER over seeds", "",
            f"Greedy CTC on the {n_utts} test utterances ({n_chars} characters) of each seed's averaged model "
            f"(`valid.cer_ctc.ave.pth`); seeds {summary['baseline']['seeds']}. CI: paired bootstrap over test "
            "utterances of the seed-averaged error counts (10000 draws), difference to the baseline in CER points.", "",
            "| system | test CER mean ± sd | dev CER mean ± sd | diff vs baseline [95% CI] | relative | per seed |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, e in summary.items():
            diff = "—" if name == "baseline" else (
                f"{e['diff_vs_baseline']:+.2f} [{e['diff_vs_baseline_ci95'][0]:+.2f}, {e['diff_vs_baseline_ci95'][1]:+.2f}]")
            rel = "—" if name == "baseline" else f"{100 * e['relative_change']:+.1f}%"
            lines.append(f"| {e['title']} | {e['test_cer_mean']:.2f} ± {e['test_cer_sd']:.2f} | "
                         f"{e['dev_cer_mean']:.2f} ± {e['dev_cer_sd']:.2f} | {diff} | {rel} | "
                         f"{', '.join(f'{c:.2f}' for c in e['test_cer_per_seed'])} |")
        lines += ["", "Error decomposition (test, pooled over seeds, CER points): homophone = same syllable and tone, "
                  "tone = same syllable other tone (both fixable by a language model), other substitution, deletion, "
                  "insertion.", "",
                  "| system | " + " | ".join(CATEGORIES) + " | linguistic share |", "|---|" + "---:|" * (len(CATEGORIES) + 1)]
        for name, e in summary.items():
            lines.append(f"| {e['title']} | " + " | ".join(f"{e['test_error_points'][c]:.2f}" for c in CATEGORIES)
                         + f" | {e['linguistic_share']:.2f} |")
        lines += ["", "Last-epoch validation OT statistics (mean over seeds):", "",
                  "| system | band_mass | coupling_entropy | ot_marginal_err |", "|---|---:|---:|---:|"]
        for name, e in summary.items():
            stats = e["final_valid_stats"]
            vals = []
            for k in ("band_mass", "coupling_entropy", "ot_marginal_err"):
                xs = [s[k] for s in stats if k in s]
                vals.append(f"{sum(xs) / len(xs):.4g}" if xs else "—")
            lines.append(f"| {e['title']} | " + " | ".join(vals) + " |")
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


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3g}"
