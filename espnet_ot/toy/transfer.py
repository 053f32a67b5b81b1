"""The transfer study of docs/results/transfer_protocol.md: warm starts, arms fine-tuned on matched replicates."""

import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from espnet2.fileio.read_text import read_2columns_text

from espnet_ot.toy.bootstrap import mean_sd, paired_comparison
from espnet_ot.toy.errors import CATEGORIES
from espnet_ot.toy.experiment import Run, ToyExperiment, deep_update, write_variant
from espnet_ot.toy.jobs import Console, Task, run_tasks

PROTOCOL = "docs/results/transfer_protocol.md"
_RECORDS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Arm:
    """An arm: its espnet_ot/toy/conf config with a patch, the Z_L it reads and the soft labels it distils."""

    key: str
    title: str
    config: str
    feats: str
    soft_labels: Optional[str] = None
    patch: Mapping[str, Any] = field(default_factory=dict)
    primary: bool = True


_DISTIL = {"model_conf": {"ot_weight": 0.0, "distill_weight": 1.0}}
ARMS: Tuple[Arm, ...] = (
    Arm(
        "A", "weighting only (TOT-CAKT, ot_weight 0)", "tot_cakt.yaml", "plm", None, {"model_conf": {"ot_weight": 0.0}}
    ),
    Arm("B", "TOT-CAKT", "tot_cakt.yaml", "plm"),
    Arm("C", "TOT-CAKT, context-free Z_L", "tot_cakt.yaml", "plm_context_free"),
    Arm("D", "TOT-CAKT, masked Z_L", "tot_cakt.yaml", "plm_masked", primary=False),
    Arm("E", "OT-aligned distillation of the masked-LM predictions", "tot_cakt.yaml", "plm", "soft_mlm", _DISTIL),
    Arm("E0", "distillation of one-hot true characters", "tot_cakt.yaml", "plm", "soft_identity", _DISTIL),
    Arm("B-GM", "GM-OT", "gm_ot.yaml", "plm", primary=False),
    Arm("B-OT", "OT-BERT", "ot_bert.yaml", "plm", primary=False),
)
ARM_KEYS = tuple(a.key for a in ARMS)
PRIMARY = (("B", "A"), ("B", "C"), ("E", "A"), ("E", "C"))
SECONDARY = (("E", "E0"), ("D", "A"), ("D", "C"), ("B-GM", "A"), ("B-OT", "A"))
WARM_SEEDS = {1: 11, 2: 12}  # warm start -> its training seed
WARM_PATCH = {"max_epoch": 12}
FINE_TUNE = {"max_epoch": 3, "optim_conf": {"lr": 0.002}, "scheduler_conf": {"warmup_steps": 100}}
SEEDS_PER_WARM_START = 8
PILOT, N_MIN, TARGET_HALF_WIDTH = 2, 6, 1.0


def replicates(n: int) -> List[Tuple[int, int]]:
    """The first n replicates (warm start, data-order seed) in the protocol's order: (1,1), (2,1), (1,2), ..."""
    order = [(w, s) for s in range(1, SEEDS_PER_WARM_START + 1) for w in sorted(WARM_SEEDS)]
    if not 1 <= n <= len(order):
        raise ValueError(
            f"--replicates {n}: use 1..{len(order)} ({len(WARM_SEEDS)} warm starts x {SEEDS_PER_WARM_START} seeds)"
        )
    return order[:n]


def t_half_width(sd: float, n: int) -> float:
    """Half-width of the Student-t 95% interval of a mean of n paired differences with sample sd."""
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.inf


def sample_size(
    sd: float, target: float = TARGET_HALF_WIDTH, n_min: int = N_MIN, n_max: int = 2 * SEEDS_PER_WARM_START
) -> int:
    """The protocol's n: the smallest n >= n_min whose t half-width at this sd is <= target, at most n_max."""
    for n in range(n_min, n_max + 1):
        if t_half_width(sd, n) <= target:
            return n
    return n_max


class TransferStudy:
    """Runs (resumably) the protocol's trainings and writes its report (dev while running, test at --final)."""

    def __init__(
        self,
        x: ToyExperiment,
        conf_dir: Path,
        jobs: int = 2,
        console: Optional[Console] = None,
        train_args: Sequence[str] = (),
    ):
        """x: the toy experiment (data, dumps, trainings under x.out); conf_dir: espnet_ot/toy/conf; train_args: extra
        asr_train options of every training (the test suite's tiny models)."""
        self.x = x
        self.train_args = list(train_args)
        self.conf_dir = Path(conf_dir)
        self.jobs = jobs
        self.console = console or Console("transfer")
        self.arms = {a.key: a for a in ARMS}

    # ------------------------------------------------------------------ runs
    def warm_run(self, w: int) -> Run:
        conf = write_variant(
            self.conf_dir / "baseline.yaml", WARM_PATCH, self.x.out / "conf" / "warm.yaml", "transfer study warm start"
        )
        return Run(f"warm/w{w}", conf, WARM_SEEDS[w])

    def arm_run(self, key: str, w: int, s: int) -> Run:
        arm = self.arms[key]
        conf = write_variant(
            self.conf_dir / arm.config,
            deep_update(dict(arm.patch), FINE_TUNE),
            self.x.out / "conf" / f"arm_{key}.yaml",
            f"transfer study arm {key}",
        )
        return Run(f"arms/{key}/w{w}_s{s}", conf, s, arm.feats, arm.soft_labels, self.x.model_file(self.warm_run(w)))

    def runs(self, arms: Sequence[str], n: int) -> Dict[str, List[Run]]:
        return {k: [self.arm_run(k, w, s) for w, s in replicates(n)] for k in arms}

    # ------------------------------------------------------------------ training (dev only)
    def train(self, arms: Sequence[str], n: int) -> None:
        """Warm starts, dumps, then every arm's first n replicates (replicate-major order), each decoded on dev."""
        x = self.x
        runs = self.runs(arms, n)
        kinds = sorted(
            {r.feats for rs in runs.values() for r in rs}
            | {r.soft_labels for rs in runs.values() for r in rs if r.soft_labels}
        )
        tasks = [
            Task("data", lambda: x.prepare_data()),
            Task("stats", lambda: x.collect_stats(self.conf_dir / "baseline.yaml"), ["data"]),
        ]
        tasks += [
            Task(f"dump {k} {s}", lambda k=k, s=s: x.dump_feats(s, k), ["data"])
            for k in kinds
            for s in ("train", "dev")
        ]
        for w in sorted({w for w, _ in replicates(n)}):
            run = self.warm_run(w)
            tasks += [
                Task(f"train warm{w}", lambda r=run: x.train(r, self.train_args), ["stats"]),
                Task(f"decode warm{w}", lambda r=run: x.decode(r, ["dev"]), [f"train warm{w}"]),
            ]
        for i, (w, s) in enumerate(replicates(n)):
            for key in arms:
                run = runs[key][i]
                deps = ["stats", f"train warm{w}", f"dump {run.feats} train", f"dump {run.feats} dev"]
                if run.soft_labels:
                    deps += [f"dump {run.soft_labels} train", f"dump {run.soft_labels} dev"]
                tasks += [
                    Task(f"train {run.name}", lambda r=run: x.train(r, self.train_args), deps),
                    Task(f"decode {run.name}", lambda r=run: self.decode_dev(r), [f"train {run.name}"]),
                ]
        run_tasks(tasks, self.jobs, self.console)

    def final(self, arms: Sequence[str], n: int) -> None:
        """Decode test once per fine-tuned model, after every training of the study has finished."""
        runs = self.runs(arms, n)
        done = {k: [r for r in rs if self.x.hyp_file(r, "dev").is_file()] for k, rs in runs.items()}
        missing = [r.name for k, rs in runs.items() if self.arms[k].primary for r in rs if r not in done[k]]
        if missing:
            raise ValueError(
                f"--final: {len(missing)} trainings of primary arms are not finished ({missing[0]}, ...); the "
                "protocol decodes test only after the last one: run the study without --final first"
            )
        for k, rs in done.items():  # secondary arms: the replicates they have (the report says how many)
            if len(rs) < len(runs[k]):
                self.console.line(f"--final: arm {k} has {len(rs)} of {len(runs[k])} replicates trained")
        tasks = [Task(f"test {r.name}", lambda r=r: self.x.decode(r, ["test"])) for rs in done.values() for r in rs]
        run_tasks(tasks, self.jobs, self.console)

    def decode_dev(self, run: Run) -> str:
        """Dev decoding of a finished run, then its record."""
        self.x.decode(run, ["dev"])
        return self.record(run)

    def record(self, run: Run) -> str:
        """One finished run's small results (dev CER, error counts, OT statistics) into <out>/records.json."""
        with _RECORDS_LOCK:  # decodings finish in parallel threads: one read-modify-write at a time
            return self._record(run)

    def _record(self, run: Run) -> str:
        path = self.x.out / "records.json"
        records = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        ec = self.x.error_counts(run, "dev")
        epochs = self.x.epoch_stats(run)
        records[run.name] = {
            "dev_cer": ec.cer,
            "dev_errors": ec.counts,
            "dev_n_ref": ec.n_ref,
            "initial_train_stats": _ot_stats(self.x.first_interval_stats(run)),
            "final_valid_stats": _ot_stats(epochs[-1]["valid"]) if epochs else {},
        }
        path.write_text(json.dumps(records, indent=1, sort_keys=True), encoding="utf-8")
        return "recorded"

    # ------------------------------------------------------------------ report
    def report(self, arms: Sequence[str], n: int) -> Dict[str, Any]:
        """transfer_study.{json,md} of the finished replicates: dev always, test once decoded (--final)."""
        reps = replicates(n)
        runs = self.runs(arms, n)
        path = self.x.out / "records.json"
        recorded = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        for r in (r for rs in runs.values() for r in rs):  # runs finished by an earlier, interrupted process
            if r.name not in recorded and self.x.hyp_file(r, "dev").is_file():
                self.record(r)
        warm = {w: self.x.epoch_stats(self.warm_run(w)) for w in sorted({w for w, _ in reps})}
        out: Dict[str, Any] = {
            "protocol": PROTOCOL,
            "replicates": [{"warm_start": w, "seed": s} for w, s in reps],
            "warm_starts": {
                str(w): {"seed": WARM_SEEDS[w], "dev_cer_per_epoch": [e["valid"].get("cer_ctc") for e in ep]}
                for w, ep in warm.items()
            },
            "arms": {},
            "comparisons": {},
            "dev_comparisons": {},
        }
        for key in arms:
            entry: Dict[str, Any] = {"title": self.arms[key].title, "primary": self.arms[key].primary}
            for split in ("dev", "test"):
                cers = [
                    self.x.error_counts(r, split).cer if self.x.hyp_file(r, split).is_file() else None
                    for r in runs[key]
                ]
                entry[f"{split}_cer"] = cers
            entry["final_valid_stats"] = [
                _ot_stats(ep[-1]["valid"]) if ep else {} for ep in (self.x.epoch_stats(r) for r in runs[key])
            ]
            entry["initial_train_stats"] = [_ot_stats(self.x.first_interval_stats(r)) for r in runs[key]]
            tested = [r for r in runs[key] if self.x.hyp_file(r, "test").is_file()]
            if tested:  # secondary endpoint: the error decomposition (CER points, pooled over the replicates)
                counts = [self.x.error_counts(r, "test") for r in tested]
                n_ref = sum(c.n_ref for c in counts)
                entry["test_error_points"] = {k: 100.0 * sum(c.counts[k] for c in counts) / n_ref for k in CATEGORIES}
            out["arms"][key] = entry
        if "A" in runs and any(self.x.hyp_file(r, "test").is_file() for r in runs["A"]):
            out["plm_ceiling"] = self.plm_ceiling(runs["A"])
        forced = self.forced_choice(runs)
        for key, per_run in forced.items():
            out["arms"][key]["test_forced_choice"] = per_run
        if forced:
            out["forced_choice_comparisons"] = {
                f"{b}-{a}": _paired_runs(forced[b], forced[a], "knowledge_acc")
                for b, a in PRIMARY + SECONDARY + tuple((k, "A") for k in forced if k != "A")
                if a in forced and b in forced
            }
        for b, a in PRIMARY + SECONDARY:
            if a in runs and b in runs:
                for split, dest in (("dev", "dev_comparisons"), ("test", "comparisons")):
                    result = self.compare(runs[b], runs[a], split)
                    if result is not None:
                        out[dest][f"{b}-{a}"] = result
        dev_sds = [
            out["dev_comparisons"][k]["sd"]
            for k in ("B-A", "B-C", "E-A", "E-C")
            if k in out["dev_comparisons"] and out["dev_comparisons"][k]["n"] >= 2
        ]
        if dev_sds:
            out["sizing"] = {"largest_primary_dev_sd": max(dev_sds), "n": sample_size(max(dev_sds))}
        return out

    def plm_ceiling(self, runs_a: Sequence[Run]) -> Dict[str, Any]:
        """Decode-time ceiling: arm A's test output with same-syllable characters re-chosen by the PLM (cached)."""
        from espnet_ot.toy.errors import decompose
        from espnet_ot.toy.probe import plm_rechoice

        path = self.x.out / "plm_ceiling.json"
        cache = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        tokens = self.x.characters()
        refs = self.x.refs("test")
        for r in runs_a:
            if r.name in cache or not self.x.hyp_file(r, "test").is_file():
                continue
            before = decompose(refs, self.x.hyps(r, "test"))
            after = decompose(refs, plm_rechoice(self.x.plm, self.x.hyps(r, "test"), tokens))
            cache[r.name] = {
                "cer": before.cer,
                "cer_plm_rechosen": after.cer,
                "linguistic_points": sum(before.points()[k] for k in ("homophone", "tone")),
                "linguistic_points_rechosen": sum(after.points()[k] for k in ("homophone", "tone")),
            }
            path.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
        return {r.name: cache[r.name] for r in runs_a if r.name in cache}

    def forced_choice(self, runs: Mapping[str, Sequence[Run]]) -> Dict[str, List[Optional[Dict[str, float]]]]:
        """Secondary endpoint: each test-decoded model's forced choice among same-syllable characters at the
        positions where the masked PLM is right and frequency wrong (:mod:`espnet_ot.toy.forced_choice`), in
        replicate order (None: not decoded on test). Cached in <out>/forced_choice.json."""
        from espnet_ot.toy.decode import load_asr_model
        from espnet_ot.toy.forced_choice import forced_choice_accuracy
        from espnet_ot.toy.probe import plm_choices
        from espnet_ot.toy.text import char_counts

        todo = {k: [r for r in rs if self.x.hyp_file(r, "test").is_file()] for k, rs in runs.items()}
        if not any(todo.values()):
            return {}
        path = self.x.out / "forced_choice.json"
        cache = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        refs = self.x.refs("test")
        utts = sorted(refs)
        choices = None
        for r in (r for rs in todo.values() for r in rs if r.name not in cache):
            if choices is None:  # the PLM's choices on the test references, once
                tokens = self.x.characters()
                counts = char_counts(self.x.refs("train").values())
                found = plm_choices(self.x.plm, [refs[u] for u in utts], tokens, counts)
                choices = [(utts[c.sentence], c) for c in found]
            self.console.line(f"forced choice {r.name}")
            model = load_asr_model(self.x.run_dir(r) / "config.yaml", self.x.model_file(r))
            wavs = read_2columns_text(self.x.data / "test" / "wav.scp")
            cache[r.name] = forced_choice_accuracy(model, wavs, refs, choices)
            path.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
        return {k: [cache.get(r.name) for r in rs] for k, rs in runs.items() if todo[k]}

    def compare(self, runs_b: Sequence[Run], runs_a: Sequence[Run], split: str) -> Optional[Dict[str, Any]]:
        """b - a on the replicates where both are decoded (matched by construction: same index = same replicate)."""
        pairs = [
            (rb, ra)
            for rb, ra in zip(runs_b, runs_a)
            if self.x.hyp_file(rb, split).is_file() and self.x.hyp_file(ra, split).is_file()
        ]
        if not pairs:
            return None
        errs_b = {i: self.x.utterance_errors(rb, split) for i, (rb, _) in enumerate(pairs)}
        errs_a = {i: self.x.utterance_errors(ra, split) for i, (_, ra) in enumerate(pairs)}
        return paired_comparison(errs_a, errs_b)


def _paired_runs(b: Sequence[Optional[Mapping]], a: Sequence[Optional[Mapping]], key: str) -> Dict[str, Any]:
    """b - a of a per-run number on the replicates both have (in points: 100 x), with its Student-t 95% interval."""
    diffs = [100.0 * (x[key] - y[key]) for x, y in zip(b, a) if x is not None and y is not None]
    mean, sd = mean_sd(diffs) if diffs else (math.nan, math.nan)
    half = t_half_width(sd, len(diffs)) if len(diffs) > 1 else math.inf
    return {
        "mean": mean,
        "sd": sd,
        "n": len(diffs),
        "t_ci95": [mean - half, mean + half] if math.isfinite(half) else None,
    }


def _ot_stats(stats: Mapping[str, float]) -> Dict[str, float]:
    keys = (
        "band_mass",
        "coupling_entropy_rel",
        "ot_marginal_err",
        "loss_distill",
        "pool_peak",
        "pool_span",
        "cer_ctc",
        "loss_ctc",
    )
    return {k: stats[k] for k in keys if k in stats}
