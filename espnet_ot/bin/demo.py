"""`make demo`: toy corpus + toy PLM -> ESPnet trains baseline, OT-BERT, TOT-CAKT and GM-OT CTC models -> CER table + couplings.

    python -m espnet_ot.bin.demo [--out exp/demo] [--work exp/demo/cache] [--epochs N] [--jobs 2] [--tiny]

Phases (one line each; ESPnet's trainer log lines are echoed with the model name in front):
  corpus   python -m espnet_ot.bin.make_toy_corpus (cached in --work; reused when the options are the same)
  plm      python -m espnet_ot.bin.pretrain_toy_plm (cached likewise)
  data     Kaldi-style data dirs <out>/data/{train,dev,test} and the char token list
  plm_feats  python -m espnet_ot.bin.dump_plm_feats for train and dev (Z_L computed once)
  stats    python -m espnet2.bin.asr_train --collect_stats true (shapes + global MVN statistics)
  train    python -m espnet2.bin.asr_train per model, ESPnet's n-best averaging -> valid.cer_ctc.ave.pth
  decode   python -m espnet2.bin.asr_inference, CTC only (beam 1, ctc_weight 1, no LM) on dev and test
  results  CER table -> <out>/RESULTS.md
  coupling python -m espnet_ot.bin.plot_coupling -> <out>/coupling/<utt>.png (OT | TOT | GM-OT side by side)

The four configs (conf/demo/*.yaml) share frontend, encoder, adapter, optimiser and epochs; they differ only
in model_conf (alignment none / ot / tot / gmot). Independent jobs run --jobs at a time, each with
cores/jobs torch threads. Rerunning with the same options reuses the corpus, the PLM and finished training.
"""

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import editdistance

from espnet_ot.toy.jobs import ECHO, ECHO_SKIP, Console, JobFailed, Task, job_env, run_logged, run_tasks
from espnet_ot.toy.kaldi_data import prepare_aishell, read_kaldi_text, write_char_token_list, write_data_dir

REPO_CONF = Path(__file__).resolve().parents[2] / "conf" / "demo"
STATE_NAME = "demo_options.json"
CRITERION = "valid.cer_ctc"


@dataclass(frozen=True)
class ModelSpec:
    """One of the demo's models: directory name, table name, config file, whether it uses Z_L."""

    name: str
    title: str
    config: str
    uses_plm: bool
    method: Optional[str] = None


MODELS: Tuple[ModelSpec, ...] = (
    ModelSpec("baseline", "Conformer-CTC baseline", "baseline.yaml", False),
    ModelSpec("ot_bert", "OT-BERT (OT, no temporal prior)", "ot_bert.yaml", True, "ot"),
    ModelSpec("tot_cakt", "TOT-CAKT (OT + temporal prior)", "tot_cakt.yaml", True, "tot"),
    ModelSpec("gm_ot", "GM-OT (fused Gromov-Wasserstein)", "gm_ot.yaml", True, "gmot"),
)
MODEL_NAMES = tuple(m.name for m in MODELS)

# Sizes: the default fits `make demo` (<= 30 min with the venv install on 2 CPU cores); tiny is for the test.
DEFAULTS = dict(num_train=1500, num_dev=100, num_test=100, speakers=(8, 2, 2), max_chars=200, min_len=4,
                max_len=12, epochs=None, plm_minutes=None, plm_steps=1500, plm_layers=None, plm_hidden=128)
TINY = dict(num_train=24, num_dev=4, num_test=4, speakers=(2, 1, 1), max_chars=200, min_len=4, max_len=8,
            epochs=1, plm_minutes=None, plm_steps=3, plm_layers=1, plm_hidden=32)
TINY_MODEL_ARGS = ["--encoder_conf", "output_size=32", "--encoder_conf", "linear_units=32",
                   "--encoder_conf", "num_blocks=1", "--encoder_conf", "attention_heads=2",
                   "--keep_nbest_models", "1"]
def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    p.add_argument("--out", type=Path, default=Path("exp/demo"), help="results, data, dumps and experiments")
    p.add_argument("--work", type=Path, default=None, help="cache of the toy corpus and PLM (default: <out>/cache)")
    p.add_argument("--conf_dir", "--conf-dir", type=Path, default=REPO_CONF, help="the four model configs")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    p.add_argument("--epochs", type=int, default=None, help="training epochs of every model (default: the configs')")
    p.add_argument("--num_train", "--num-train", type=int, default=None, help="toy training utterances (default 1500)")
    p.add_argument("--num_dev", "--num-dev", type=int, default=None, help="toy dev utterances (default 100)")
    p.add_argument("--num_test", "--num-test", type=int, default=None, help="toy test utterances (default 100)")
    p.add_argument("--max_chars", "--max-chars", type=int, default=None, help="toy character inventory (default 200)")
    p.add_argument("--plm_minutes", "--plm-minutes", type=float, default=None, help="toy PLM pretraining time budget in minutes, instead of --plm_steps")
    p.add_argument("--plm_steps", "--plm-steps", type=int, default=None,
                   help="toy PLM steps (default 1500; --plm_minutes alone sets a time budget instead)")
    p.add_argument("--seed", type=int, default=0, help="corpus, PLM and training seed")
    p.add_argument("--jobs", type=int, default=2, help="jobs run at once (each gets cores/jobs threads)")
    p.add_argument("--num_plots", "--num-plots", type=int, default=3, help="dev utterances with a coupling picture")
    p.add_argument("--train_args", "--train-args", default="", help="extra options for espnet2.bin.asr_train, e.g. '--batch_bins 5e5'")
    p.add_argument("--fresh", action="store_true", help="delete <out> (not the cache) and start over")
    p.add_argument("--tiny", action="store_true", help="a very small, fast setting (for the test suite)")
    p.add_argument("--verbose", action="store_true", help="echo every line of ESPnet's logs")
    return p


# --------------------------------------------------------------------------------------- the demo
class Demo:
    """All paths and steps of one demo run."""

    def __init__(self, args: argparse.Namespace):
        """Resolve options (tiny or default sizes), paths and models."""
        self.args = args
        sizes = dict(TINY if args.tiny else DEFAULTS)
        for key in ("num_train", "num_dev", "num_test", "max_chars", "epochs", "plm_minutes", "plm_steps"):
            if getattr(args, key) is not None:
                sizes[key] = getattr(args, key)
        if args.plm_minutes is not None and args.plm_steps is None:
            sizes["plm_steps"] = None  # a time budget instead of the default step count
        elif sizes["plm_steps"] is not None:
            sizes["plm_minutes"] = None
        self.sizes = sizes
        self.out = args.out.resolve()
        self.work = (args.work or args.out / "cache").resolve()
        self.conf_dir = args.conf_dir.resolve()
        self.models = [m for m in MODELS if m.name in args.models]
        self.python = sys.executable
        self.console = Console()
        cores = os.cpu_count() or 1
        self.jobs = max(1, args.jobs)
        self.threads = max(1, cores // self.jobs)
        self.corpus = self.work / "corpus"
        self.plm = self.work / "plm"
        self.data = self.out / "data"
        self.token_list = self.data / "token_list" / "char" / "tokens.txt"
        self.dump = self.out / "dump" / "plm"
        self.stats = self.out / "exp" / "asr_stats"
        self.exp = self.out / "exp"
        self.timings: Dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    def phase(self, name: str, fn: Callable[[], Optional[str]]) -> Callable[[], None]:
        """Wrap a step: timed, one line when it starts and one when it ends."""

        def wrapped() -> None:
            self.console.line(f"{name}: started")
            t0 = time.time()
            note = fn()
            self.timings[name] = time.time() - t0
            self.console.line(f"{name}: done in {self.timings[name]:.0f}s{' - ' + note if note else ''}")

        return wrapped

    def env(self) -> Dict[str, str]:
        return job_env(self.threads)

    def check_inputs(self) -> None:
        """Fail early with one line naming the remedy."""
        for m in self.models:
            if not (self.conf_dir / m.config).is_file():
                raise FileNotFoundError(
                    f"--conf_dir: no {m.config} in {self.conf_dir}; run from an espnet-ot checkout or pass "
                    "--conf_dir DIR with the demo configs (conf/demo in the repository)"
                )
        if self.sizes["epochs"] is not None and self.sizes["epochs"] < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.sizes['epochs']}")

    def options_signature(self) -> Dict:
        """What the results depend on (JSON-normalised); a different signature starts <out> over."""
        sig = dict(sizes=self.sizes, seed=self.args.seed, tiny=self.args.tiny, train_args=self.args.train_args,
                   work=str(self.work),
                   configs={m.name: (self.conf_dir / m.config).read_text(encoding="utf-8") for m in self.models})
        return json.loads(json.dumps(sig))

    def prepare_out(self) -> None:
        """Create <out>; wipe its data/dump/exp when the options changed (or --fresh)."""
        state = self.out / STATE_NAME
        sig = self.options_signature()
        stale = self.args.fresh
        if state.is_file():
            try:
                stale = stale or json.loads(state.read_text(encoding="utf-8")) != sig
            except json.JSONDecodeError:
                stale = True
        elif (self.out / "exp").exists():
            stale = True
        if stale:
            for sub in ("data", "dump", "exp", "coupling", "RESULTS.md", STATE_NAME):
                path = self.out / sub
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            self.console.line(f"out: {self.out} starts afresh (options changed or --fresh)")
        self.out.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(sig, indent=1, ensure_ascii=False), encoding="utf-8")

    # ------------------------------------------------------------------ steps
    def step_corpus(self) -> str:
        s = self.sizes
        cmd = [self.python, "-m", "espnet_ot.bin.make_toy_corpus", "--out", self.corpus,
               "--num-train", s["num_train"], "--num-dev", s["num_dev"], "--num-test", s["num_test"],
               "--speakers", *s["speakers"], "--max-chars", s["max_chars"], "--min-len", s["min_len"],
               "--max-len", s["max_len"], "--seed", self.args.seed, "--num-workers", min(2, os.cpu_count() or 1),
               "--force"]
        run_logged(cmd, self.work / "log" / "corpus.log", self.console, self.env(), "corpus",
                   echo=lambda l: l.startswith("make_toy_corpus:"))
        return f"{self.corpus}"

    def step_plm(self) -> str:
        s = self.sizes
        cmd = [self.python, "-m", "espnet_ot.bin.pretrain_toy_plm", "--out", self.plm, "--corpus", self.corpus,
               "--seed", self.args.seed, "--threads", self.threads, "--force"]
        if s["plm_steps"] is not None:
            cmd += ["--steps", s["plm_steps"]]
        elif s["plm_minutes"] is not None:
            cmd += ["--minutes", s["plm_minutes"]]
        if s["plm_layers"] is not None:
            cmd += ["--layers", s["plm_layers"]]
        cmd += ["--hidden", s["plm_hidden"]]
        if self.args.tiny:
            cmd += ["--heads", 2, "--heldout", 200]
        run_logged(cmd, self.work / "log" / "plm.log", self.console, self.env(), "plm",
                   echo=lambda l: l.startswith("pretrain_toy_plm:") and ("accuracy" in l or "reusing" in l))
        cfg = json.loads((self.plm / "config.json").read_text(encoding="utf-8"))
        if int(cfg["hidden_size"]) != self.plm_dim():
            raise JobFailed(f"plm: {self.plm} has hidden size {cfg['hidden_size']}, expected {self.plm_dim()}")
        return f"{self.plm} (hidden size {self.plm_dim()})"

    def plm_dim(self) -> int:
        """Width of the toy PLM (chosen here, so that the models can be built before the PLM exists)."""
        return int(self.sizes["plm_hidden"])

    def step_data(self) -> str:
        dirs = prepare_aishell(self.corpus, self.data)
        tokens = write_char_token_list(dirs["train"] / "text", self.token_list)
        # dev + test in one dir: one decoding run per model covers both
        both = {}
        for split in ("dev", "test"):
            wavs = read_kaldi_text(dirs[split] / "wav.scp")
            spk = read_kaldi_text(dirs[split] / "utt2spk")
            for utt, text in read_kaldi_text(dirs[split] / "text").items():
                both[utt] = (spk[utt], Path(wavs[utt]), text)
        write_data_dir(self.data / "eval", both)
        counts = {k: len(read_kaldi_text(d / "text")) for k, d in dirs.items()}
        return f"{counts} utterances, {len(tokens)} tokens in {self.token_list}"

    def step_plm_feats(self, split: str) -> Callable[[], Optional[str]]:
        def fn() -> str:
            out = self.dump / split
            if (out / "feats.scp").is_file():
                return f"reusing {out}/feats.scp"
            cmd = [self.python, "-m", "espnet_ot.bin.dump_plm_feats", "--text", self.data / split / "text",
                   "--plm", self.plm, "--token_list", self.token_list, "--token_type", "char", "--output_dir", out]
            run_logged(cmd, out / "dump.log", self.console, self.env(), f"plm_feats {split}")
            return f"{out}/feats.scp"

        return fn

    def data_opts(self, uses_plm: bool) -> List[str]:
        opts: List[str] = []
        for mode, split in (("train", "train"), ("valid", "dev")):
            opts += [f"--{mode}_data_path_and_name_and_type", f"{self.data / split / 'wav.scp'},speech,sound",
                     f"--{mode}_data_path_and_name_and_type", f"{self.data / split / 'text'},text,text"]
            if uses_plm:
                opts += [f"--{mode}_data_path_and_name_and_type",
                         f"{self.dump / split / 'feats.scp'},plm_feats,kaldi_ark"]
        if uses_plm:
            opts += ["--allow_variable_data_keys", "true"]
        return opts

    def common_train_opts(self) -> List[str]:
        opts = ["--use_preprocessor", "true", "--token_type", "char", "--token_list", str(self.token_list),
                "--ngpu", "0", "--seed", str(self.args.seed), "--num_workers", "0",
                "--postencoder_conf", f"plm_dim={self.plm_dim()}"]
        if self.args.tiny:
            opts += TINY_MODEL_ARGS
        return opts

    def step_stats(self) -> str:
        if (self.stats / "train" / "feats_stats.npz").is_file():
            return f"reusing {self.stats}"
        keys = self.stats / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        for mode, split in (("train", "train"), ("valid", "dev")):
            lines = (self.data / split / "wav.scp").read_text(encoding="utf-8").splitlines()
            (keys / f"{mode}.scp").write_text("".join(l + "\n" for l in lines), encoding="utf-8")
        first = self.models[0]
        cmd = [self.python, "-m", "espnet2.bin.asr_train", "--collect_stats", "true",
               "--config", self.conf_dir / first.config, *self.common_train_opts(), *self.data_opts(False),
               "--train_shape_file", keys / "train.scp", "--valid_shape_file", keys / "valid.scp",
               "--output_dir", self.stats]
        run_logged(cmd, self.stats / "stats.log", self.console, self.env(), "stats",
                   echo=(lambda l: True) if self.args.verbose else None)
        # the token count is appended to text_shape as asr.sh does (used for batch bins)
        n_tokens = len(self.token_list.read_text(encoding="utf-8").splitlines())
        for mode in ("train", "valid"):
            shapes = (self.stats / mode / "text_shape").read_text(encoding="utf-8").splitlines()
            (self.stats / mode / "text_shape.char").write_text(
                "".join(f"{l},{n_tokens}\n" for l in shapes if l.strip()), encoding="utf-8")
        return f"{self.stats}/train/feats_stats.npz"

    def model_dir(self, m: ModelSpec) -> Path:
        return self.exp / m.name

    def step_train(self, m: ModelSpec) -> Callable[[], Optional[str]]:
        def fn() -> str:
            out = self.model_dir(m)
            cmd = [self.python, "-m", "espnet2.bin.asr_train", "--config", self.conf_dir / m.config,
                   *self.common_train_opts(), *self.data_opts(m.uses_plm),
                   "--train_shape_file", self.stats / "train" / "speech_shape",
                   "--train_shape_file", self.stats / "train" / "text_shape.char",
                   "--valid_shape_file", self.stats / "valid" / "speech_shape",
                   "--valid_shape_file", self.stats / "valid" / "text_shape.char",
                   "--normalize", "global_mvn", "--normalize_conf",
                   f"stats_file={self.stats / 'train' / 'feats_stats.npz'}",
                   "--resume", "true", "--output_dir", out]
            if self.sizes["epochs"] is not None:
                cmd += ["--max_epoch", self.sizes["epochs"]]
            if m.uses_plm:
                # recorded in config.yaml so that plot_coupling finds the PLM; training uses the dumped Z_L
                cmd += ["--model_conf", f"plm={self.plm}"]
            cmd += self.args.train_args.split()
            echo = (lambda l: True) if self.args.verbose else (lambda l: bool(ECHO.search(l)) and not ECHO_SKIP.search(l))
            run_logged(cmd, out / "train.log", self.console, self.env(), m.name, echo=echo)
            ave = out / f"{CRITERION}.ave.pth"
            if not ave.exists():
                raise JobFailed(f"{m.name}: training finished without {ave}; see {out / 'train.log'}")
            return f"{ave} ({self.param_count(out)} parameters)"

        return fn

    @staticmethod
    def param_count(exp_dir: Path) -> str:
        log = exp_dir / "train.log"
        hits = re.findall(r"Total Number of model parameters: (\S+(?: \S)?)", log.read_text(encoding="utf-8"))
        return hits[-1] if hits else "?"

    def step_decode(self, m: ModelSpec) -> Callable[[], Optional[str]]:
        def fn() -> str:
            out = self.model_dir(m) / "decode_ctc"
            if out.exists():
                shutil.rmtree(out)
            cmd = [self.python, "-m", "espnet2.bin.asr_inference", "--ngpu", "0", "--batch_size", "1",
                   "--data_path_and_name_and_type", f"{self.data / 'eval' / 'wav.scp'},speech,sound",
                   "--asr_train_config", self.model_dir(m) / "config.yaml",
                   "--asr_model_file", self.model_dir(m) / f"{CRITERION}.ave.pth",
                   "--beam_size", "1", "--ctc_weight", "1.0", "--lm_weight", "0.0", "--penalty", "0.0",
                   "--nbest", "1", "--maxlenratio", "0.0", "--minlenratio", "0.0", "--output_dir", out]
            run_logged(cmd, self.model_dir(m) / "decode_ctc.log", self.console, self.env(), f"{m.name} decode")
            hyps = read_kaldi_text(out / "1best_recog" / "text")
            for split in ("dev", "test"):
                refs = read_kaldi_text(self.data / split / "text")
                d = out / split
                d.mkdir(parents=True, exist_ok=True)
                (d / "text").write_text("".join(f"{u} {hyps.get(u, '')}\n" for u in sorted(refs)), encoding="utf-8")
            return f"{out}/{{dev,test}}/text"

        return fn

    def cer(self, m: ModelSpec, split: str) -> Tuple[float, int, int]:
        """(CER %, errors, reference characters) of a decoded set."""
        refs = read_kaldi_text(self.data / split / "text")
        hyps = read_kaldi_text(self.model_dir(m) / "decode_ctc" / split / "text")
        errors = total = 0
        for utt, ref in refs.items():
            r = "".join(ref.split())
            h = "".join(hyps.get(utt, "").split())
            errors += editdistance.eval(r, h)
            total += len(r)
        return 100.0 * errors / max(1, total), errors, total

    def step_results(self) -> str:
        rows = []
        for m in self.models:
            dev, test = self.cer(m, "dev"), self.cer(m, "test")
            rows.append((m, dev, test))
        table = ["| model | dev CER (%) | test CER (%) |", "|---|---:|---:|"]
        table += [f"| {m.title} | {d[0]:.2f} | {t[0]:.2f} |" for m, d, t in rows]
        self.table = "\n".join(table)
        text = self.results_markdown(rows)
        (self.out / "RESULTS.md").write_text(text, encoding="utf-8")
        self.console.raw("\n" + self.table + "\n")
        return f"{self.out / 'RESULTS.md'}"

    def results_markdown(self, rows) -> str:
        s = self.sizes
        plm_info = ""
        summary = self.plm / "toy_plm.json"
        if summary.is_file():
            res = json.loads(summary.read_text(encoding="utf-8")).get("results", {})
            if "accuracy" in res:
                plm_info = (f"; held-out masked-character accuracy {100 * res['accuracy']:.1f}% vs "
                            f"{100 * res.get('baseline_accuracy', float('nan')):.1f}% for the unigram guess")
        epochs = s["epochs"] if s["epochs"] is not None else "as in the configs"
        lines = [
            "# espnet-ot toy demo: CER",
            "",
            "Greedy CTC decoding (ESPnet asr_inference, beam 1, CTC weight 1, no LM) of the "
            f"`{CRITERION}.ave.pth` model (ESPnet's average of the best checkpoints by validation CER).",
            "",
            self.table,
            "",
            "| model | dev errors / chars | test errors / chars | parameters | config |",
            "|---|---:|---:|---:|---|",
        ]
        for m, d, t in rows:
            lines.append(f"| {m.name} | {d[1]} / {d[2]} | {t[1]} / {t[2]} | {self.param_count(self.model_dir(m))} "
                         f"| {self.conf_dir / m.config} |")
        lines += [
            "",
            "Setting: toy corpus of eSpeak NG Mandarin speech "
            f"({s['num_train']}/{s['num_dev']}/{s['num_test']} train/dev/test utterances, speakers "
            f"{'/'.join(map(str, s['speakers']))}, top-{s['max_chars']} characters, {s['min_len']}-{s['max_len']} "
            f"characters per sentence, seed {self.args.seed}); toy PLM {self.plm}{plm_info}; epochs: {epochs}.",
            "",
            "Wall time per phase (s): " + ", ".join(f"{k} {v:.0f}" for k, v in self.timings.items()),
            "",
        ]
        return "\n".join(lines)

    def step_coupling(self) -> str:
        plotted = [m for m in self.models if m.uses_plm]
        if not plotted:
            return "skipped: no OT model was trained"
        out = self.out / "coupling"
        if out.exists():
            shutil.rmtree(out)
        cmd = [self.python, "-m", "espnet_ot.bin.plot_coupling",
               "--asr_train_config", *[self.model_dir(m) / "config.yaml" for m in plotted],
               "--asr_model_file", *[self.model_dir(m) / f"{CRITERION}.ave.pth" for m in plotted],
               "--labels", *[m.title.split(" (")[0] for m in plotted],
               "--methods", *[m.method for m in plotted],
               "--data_dir", self.data / "dev", "--num_utts", self.args.num_plots, "--output_dir", out]
        run_logged(cmd, self.out / "coupling.log", self.console, self.env(), "coupling",
                   echo=lambda l: l.startswith("plot_coupling:"))
        return f"{len(list(out.glob('*.png')))} PNGs in {out}"

    # ------------------------------------------------------------------ plan
    def run(self) -> None:
        self.check_inputs()
        c = self.console
        c.line(f"espnet-ot demo: models {', '.join(m.name for m in self.models)}; out {self.out}; cache {self.work}; "
               f"{self.jobs} job(s) x {self.threads} thread(s)")
        self.prepare_out()
        need_plm = any(m.uses_plm for m in self.models)
        tasks = [Task("corpus", self.phase("corpus", self.step_corpus))]
        if need_plm:
            tasks.append(Task("plm", self.phase("plm", self.step_plm), ["corpus"]))
        tasks.append(Task("data", self.phase("data", self.step_data), ["corpus"]))
        if need_plm:
            for split in ("train", "dev"):
                tasks.append(Task(f"plm_feats_{split}", self.phase(f"plm_feats {split}", self.step_plm_feats(split)),
                                  ["plm", "data"]))
        tasks.append(Task("stats", self.phase("stats", self.step_stats), ["data"]))
        for m in self.models:
            deps = ["stats"] + (["plm_feats_train", "plm_feats_dev"] if m.uses_plm else [])
            tasks.append(Task(f"train_{m.name}", self.phase(f"train {m.name}", self.step_train(m)), deps))
            tasks.append(Task(f"decode_{m.name}", self.phase(f"decode {m.name}", self.step_decode(m)),
                              [f"train_{m.name}"]))
        tasks.append(Task("coupling", self.phase("coupling", self.step_coupling),
                          [f"train_{m.name}" for m in self.models if m.uses_plm]))
        t0 = time.time()
        run_tasks(tasks, self.jobs, c)
        self.phase("results", self.step_results)()
        self.timings["total"] = time.time() - t0
        # rewrite RESULTS.md with the complete timings
        self.step_results_quiet()
        c.line(f"finished in {self.timings['total']:.0f}s: {self.out / 'RESULTS.md'}, {self.out / 'coupling'}")

    def step_results_quiet(self) -> None:
        rows = [(m, self.cer(m, "dev"), self.cer(m, "test")) for m in self.models]
        (self.out / "RESULTS.md").write_text(self.results_markdown(rows), encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    args = get_parser().parse_args(argv)
    try:
        Demo(args).run()
    except (JobFailed, FileNotFoundError, ValueError) as e:
        print(f"demo: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
