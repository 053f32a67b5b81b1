"""The toy study's runs: the dev sweep and the study (seeds x systems + controls) as one resumable job graph of
data, PLM features, trainings and decodings on ESPnet's own trainer; the reports are :mod:`.report`'s."""

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from espnet_ot.toy.experiment import Run, ToyExperiment
from espnet_ot.toy.jobs import Console, Task, run_tasks
from espnet_ot.toy.study.design import METHOD_NAMES, METHODS, SWEEP, SWEEP_SEED, Method
from espnet_ot.toy.study.report import StudyReport
from espnet_ot.toy.world import TOY_CONF
from espnet_ot.utils.config_files import deep_update, write_variant


class Study(StudyReport):
    """Runs (resumably) the sweep or the study of the toy experiment and writes their reports."""

    def __init__(
        self,
        out: Path,
        corpus: Path,
        plm: Path,
        plm_dim: int,
        jobs: int = 2,
        conf_dir: Path = TOY_CONF,
        console: Optional[Console] = None,
        train_args: Sequence[str] = (),
    ):
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
            tasks += [
                Task("feats_train", self.phase("plm_feats train", lambda: x.dump_feats("train")), ["data"]),
                Task("feats_dev", self.phase("plm_feats dev", lambda: x.dump_feats("dev")), ["data"]),
            ]
        if any(r.feats == "plm_masked" for r in runs):
            tasks += [
                Task(f"masked_{s}", self.phase(f"masked Z_L {s}", lambda s=s: x.dump_feats(s, "plm_masked")), ["data"])
                for s in ("train", "dev")
            ]
        if any(r.feats == "plm_shuffled" for r in runs):
            tasks.append(
                Task(
                    "shuffled",
                    self.phase("shuffled Z_L", lambda: "; ".join(x.shuffle_feats(s) for s in ("train", "dev"))),
                    ["feats_train", "feats_dev"],
                )
            )
        return tasks

    def train_tasks(self, runs: Sequence[Run], splits: Sequence[str]) -> List[Task]:
        tasks = []
        for run in runs:
            deps = ["stats"]
            if run.feats is not None:
                deps += {"plm_shuffled": ["shuffled"], "plm_masked": ["masked_train", "masked_dev"]}.get(
                    run.feats, ["feats_train", "feats_dev"]
                )
            tasks.append(
                Task(
                    f"train {run.name}",
                    self.phase(f"train {run.name}", lambda r=run: self.x.train(r, self.train_args)),
                    deps,
                )
            )
            tasks.append(
                Task(
                    f"decode {run.name}",
                    self.phase(f"decode {run.name}", lambda r=run: self.x.decode(r, splits)),
                    [f"train {run.name}"],
                )
            )
        return tasks

    # ------------------------------------------------------------------ sweep (dev only)
    def sweep_runs(self, method: str) -> List[Tuple[str, Dict[str, Any], Run]]:
        m = self.methods[method]
        return [
            (
                variant,
                patch,
                Run(
                    f"sweep/{method}/{variant}",
                    self.config_of(f"sweep_{method}_{variant}", m, patch),
                    SWEEP_SEED,
                    m.feats,
                ),
            )
            for variant, patch in SWEEP.get(method, ())
        ]

    # ------------------------------------------------------------------ study
    def study_config(self, name: str) -> Path:
        """Config of a study system: its base config (espnet_ot/toy/conf) with its own patch (the controls')."""
        return self.x.out / "conf" / f"study_{name}.yaml"

    def write_study_config(self, name: str) -> str:
        m = self.methods[name]
        write_variant(self.conf_dir / m.config, m.patch, self.study_config(name), f"study {name}")
        return str(self.study_config(name))

    def study_runs(
        self, seeds: Sequence[int], methods: Sequence[str], control_seeds: Optional[Sequence[int]] = None
    ) -> Dict[str, List[Run]]:
        """The runs of each method; the controls use control_seeds (default: seeds)."""

        def seeds_of(name: str) -> Sequence[int]:
            return control_seeds if control_seeds is not None and name.startswith("control") else seeds

        return {
            name: [
                Run(f"study/{name}/seed{s}", self.study_config(name), s, self.methods[name].feats)
                for s in seeds_of(name)
            ]
            for name in methods
        }

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

    def run_study(
        self, seeds: Sequence[int], methods: Sequence[str] = METHOD_NAMES, control_seeds: Optional[Sequence[int]] = None
    ) -> Dict[str, Any]:
        """Train (resuming), decode and report every method for every seed, in one job graph.

        The systems are the configs of conf_dir as they are (their settings chosen on dev by :meth:`run_sweep`).
        """
        if "baseline" not in methods:
            raise ValueError("methods: the study compares with the baseline; keep `baseline` in --methods")
        runs = self.study_runs(seeds, methods, control_seeds)
        # the runs of seed 1 first, then seed 2, ...: an interrupted study has whole seeds of every method
        order = [runs[name][i] for i in range(len(seeds)) for name in methods if i < len(runs[name])]
        tasks = self.prep_tasks(order)
        tasks += [
            Task(f"config {n}", self.phase(f"config {n}", lambda n=n: self.write_study_config(n))) for n in methods
        ]
        for task in self.train_tasks(order, ["dev", "test"]):
            if task.name.startswith("train "):
                task.deps.append(f"config {task.name.split('/')[1]}")
            tasks.append(task)
        run_tasks(tasks, self.jobs, self.console)
        return self.report(runs)

    def report_finished(
        self, seeds: Sequence[int], methods: Sequence[str] = METHOD_NAMES, control_seeds: Optional[Sequence[int]] = None
    ) -> Dict[str, Any]:
        """:meth:`report` of the runs whose dev and test are decoded (nothing is trained); says what is missing."""
        runs = self.study_runs(seeds, methods, control_seeds)
        done = {
            name: [r for r in rs if all(self.x.hyp_file(r, s).is_file() for s in ("dev", "test"))]
            for name, rs in runs.items()
        }
        for name, rs in runs.items():
            missing = [r.seed for r in rs if r not in done[name]]
            if missing:
                self.console.line(f"report: {name}: seeds {missing} not finished, reported without them")
        done = {name: rs for name, rs in done.items() if rs}
        if "baseline" not in done:
            raise ValueError("methods: no finished baseline run to compare with; run the study first")
        return self.report(done)
