"""The toy experiment's steps on ESPnet's own trainer: data dirs, PLM features, stats, training, decoding, scoring."""

import random
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from espnet2.fileio.read_text import read_2columns_text

from espnet_ot.asr.soft_labels import SOFT_LABELS_KEY
from espnet_ot.toy.errors import ErrorCounts, decompose, per_utterance
from espnet_ot.toy.jobs import ECHO, ECHO_SKIP, EPOCH_RESULTS, FIRST_INTERVAL, Console, JobFailed, job_env, run_logged
from espnet_ot.toy.kaldi_data import prepare_aishell, write_char_token_list

# re-exported for toy.transfer and the recipe's local/config_plm.py
from espnet_ot.utils.config_files import deep_update, write_variant  # noqa: F401

CRITERION = "valid.cer_ctc"
# the toy's PLM data kinds -> dump_plm_feats --kind (plm_shuffled is derived from plm by shuffle_feats)
DUMPED_KINDS = {
    "plm": "contextual",
    "plm_masked": "masked",
    "plm_context_free": "context_free",
    "soft_mlm": "mlm_soft_labels",
    "soft_identity": "identity_soft_labels",
}
FEATS_KINDS = ("plm", "plm_shuffled", "plm_masked", "plm_context_free")
SOFT_LABEL_KINDS = ("soft_mlm", "soft_identity")


@dataclass(frozen=True)
class Run:
    """One training: a name (its directory under exp/), a config file, a seed and the PLM data it reads.

    feats: ``plm`` (the dumped Z_L), ``plm_shuffled`` (Z_L permuted across utterances of equal token length:
    wrong token identities), ``plm_masked`` (each token's Z_L with the token masked: the PLM's expectation from
    context), ``plm_context_free`` (each row its character's mean Z_L over the training transcripts: identity
    without context) or None (a model without the OT branch). soft_labels: ``soft_mlm`` (the PLM's masked-LM
    predictions, for model_conf.distill_weight), ``soft_identity`` (their one-hot control) or None. init: a
    model file whose parameters start the training (asr_train --init_param), or None (random initialisation).
    """

    name: str
    config: Path
    seed: int
    feats: Optional[str] = None
    soft_labels: Optional[str] = None
    init: Optional[Path] = None


def shuffle_within_length(lengths: Mapping[str, int], seed: int) -> Dict[str, str]:
    """A permutation utt -> donor utt that only swaps utterances of equal length (seeded, deterministic).

    Every length group is rotated after a seeded shuffle, so no utterance of a group of two or more keeps its
    own entry; utterances alone in their length group map to themselves.
    """
    groups: Dict[int, List[str]] = defaultdict(list)
    for utt in sorted(lengths):
        groups[lengths[utt]].append(utt)
    rng = random.Random(seed)
    out: Dict[str, str] = {}
    for _, utts in sorted(groups.items()):
        order = list(utts)
        rng.shuffle(order)
        for i, utt in enumerate(order):
            out[utt] = order[(i + 1) % len(order)]
    return out


class ToyExperiment:
    """Paths and steps shared by the demo, the sweep and the study (all through ESPnet's asr_train)."""

    def __init__(
        self, out: Path, corpus: Path, plm: Path, plm_dim: int, threads: int = 1, console: Optional[Console] = None
    ):
        """Set up paths under out; nothing is computed here."""
        self.out = Path(out).resolve()
        self.corpus = Path(corpus).resolve()
        self.plm = Path(plm).resolve()
        self.plm_dim = int(plm_dim)
        self.threads = threads
        self.console = console or Console("toy")
        self.python = sys.executable
        self.data = self.out / "data"
        self.token_list = self.data / "token_list" / "char" / "tokens.txt"
        self.dump = self.out / "dump"
        self.stats = self.out / "exp" / "asr_stats"
        self.exp = self.out / "exp"

    def env(self) -> Dict[str, str]:
        return job_env(self.threads)

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> str:
        """Kaldi data dirs train/dev/test and the char token list (from train)."""
        dirs = prepare_aishell(self.corpus, self.data)
        tokens = write_char_token_list(dirs["train"] / "text", self.token_list)
        counts = {k: len(read_2columns_text(d / "text")) for k, d in dirs.items()}
        return f"{counts} utterances, {len(tokens)} tokens"

    def feats_scp(self, kind: str, split: str) -> Path:
        return self.dump / kind / split / "feats.scp"

    def dump_feats(self, split: str, kind: str = "plm") -> str:
        """The PLM data ``kind`` (a key of DUMPED_KINDS) of every transcript of split, once (dump_plm_feats)."""
        if kind not in DUMPED_KINDS:
            raise ValueError(f"kind: dump_feats writes one of {', '.join(DUMPED_KINDS)}, got {kind!r}")
        out = self.feats_scp(kind, split).parent
        if (out / "feats.scp").is_file() and (out / "lengths").is_file():
            return f"reusing {out}/feats.scp"
        cmd = [
            self.python,
            "-m",
            "espnet_ot.bin.dump_plm_feats",
            "--text",
            self.data / split / "text",
            "--plm",
            self.plm,
            "--token_list",
            self.token_list,
            "--token_type",
            "char",
            "--output_dir",
            out,
            "--kind",
            DUMPED_KINDS[kind],
        ]
        if kind == "plm_context_free":  # each row its token's mean Z_L over the training transcripts
            cmd += ["--means_text", self.data / "train" / "text"]
        if split != "train":  # characters unseen in training become <unk> in held-out sets, as in training
            cmd += ["--max_unk_share", "1"]
        run_logged(cmd, out / "dump.log", self.console, self.env(), f"{kind} {split}")
        import kaldiio

        lengths = {utt: int(mat.shape[0]) for utt, mat in kaldiio.load_scp_sequential(str(out / "feats.scp"))}
        (out / "lengths").write_text("".join(f"{u} {n}\n" for u, n in sorted(lengths.items())), encoding="utf-8")
        return f"{out}/feats.scp"

    def shuffle_feats(self, split: str, seed: int = 0) -> str:
        """The control's scp: each utterance reads the Z_L of another utterance with as many PLM tokens."""
        src = self.feats_scp("plm", split)
        lengths = {u: int(n) for u, n in read_2columns_text(src.parent / "lengths").items()}
        donor = shuffle_within_length(lengths, seed)
        entries = read_2columns_text(src)
        dst = self.feats_scp("plm_shuffled", split)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text("".join(f"{u} {entries[donor[u]]}\n" for u in sorted(entries)), encoding="utf-8")
        kept = sum(1 for u, d in donor.items() if u == d)
        return f"{dst} ({kept} of {len(donor)} utterances alone in their length group keep their own Z_L)"

    # ------------------------------------------------------------------ ESPnet training
    def data_opts(self, feats: Optional[str], soft_labels: Optional[str] = None) -> List[str]:
        if feats is not None and feats not in FEATS_KINDS:
            raise ValueError(f"feats: use one of {FEATS_KINDS} or None, got {feats!r}")
        if soft_labels is not None and soft_labels not in SOFT_LABEL_KINDS:
            raise ValueError(f"soft_labels: use one of {SOFT_LABEL_KINDS} or None, got {soft_labels!r}")
        opts: List[str] = []
        for mode, split in (("train", "train"), ("valid", "dev")):
            opts += [
                f"--{mode}_data_path_and_name_and_type",
                f"{self.data / split / 'wav.scp'},speech,sound",
                f"--{mode}_data_path_and_name_and_type",
                f"{self.data / split / 'text'},text,text",
            ]
            if feats is not None:
                opts += [f"--{mode}_data_path_and_name_and_type", f"{self.feats_scp(feats, split)},plm_feats,kaldi_ark"]
            if soft_labels is not None:
                opts += [
                    f"--{mode}_data_path_and_name_and_type",
                    f"{self.feats_scp(soft_labels, split)},{SOFT_LABELS_KEY},kaldi_ark",
                ]
        if feats is not None or soft_labels is not None:
            opts += ["--allow_variable_data_keys", "true"]
        return opts

    def common_opts(self, seed: int) -> List[str]:
        return [
            "--use_preprocessor",
            "true",
            "--token_type",
            "char",
            "--token_list",
            str(self.token_list),
            "--ngpu",
            "0",
            "--seed",
            str(seed),
            "--num_workers",
            "0",
            "--postencoder_conf",
            f"plm_dim={self.plm_dim}",
        ]

    def collect_stats(self, config: Path) -> str:
        """Shapes and global MVN statistics (asr_train --collect_stats), once."""
        if (self.stats / "train" / "feats_stats.npz").is_file():
            return f"reusing {self.stats}"
        keys = self.stats / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        for mode, split in (("train", "train"), ("valid", "dev")):
            (keys / f"{mode}.scp").write_text(
                (self.data / split / "wav.scp").read_text(encoding="utf-8"), encoding="utf-8"
            )
        cmd = [
            self.python,
            "-m",
            "espnet2.bin.asr_train",
            "--collect_stats",
            "true",
            "--config",
            config,
            *self.common_opts(0),
            *self.data_opts(None),
            "--train_shape_file",
            keys / "train.scp",
            "--valid_shape_file",
            keys / "valid.scp",
            "--output_dir",
            self.stats,
        ]
        run_logged(cmd, self.stats / "stats.log", self.console, self.env(), "stats")
        n_tokens = len(self.token_list.read_text(encoding="utf-8").splitlines())
        for mode in ("train", "valid"):  # the token count is appended to text_shape, as asr.sh does
            shapes = (self.stats / mode / "text_shape").read_text(encoding="utf-8").splitlines()
            (self.stats / mode / "text_shape.char").write_text(
                "".join(f"{line},{n_tokens}\n" for line in shapes if line.strip()), encoding="utf-8"
            )
        return f"{self.stats}/train/feats_stats.npz"

    def run_dir(self, run: Run) -> Path:
        return self.exp / run.name

    def model_file(self, run: Run) -> Path:
        return self.run_dir(run) / f"{CRITERION}.ave.pth"

    def train(self, run: Run, extra: Sequence[str] = (), echo_all: bool = False) -> str:
        """Train with ESPnet's asr_train (resumes an interrupted run; a finished one is kept as it is)."""
        out = self.run_dir(run)
        if self.model_file(run).is_file():
            return f"reusing {self.model_file(run)}"
        cmd = [
            self.python,
            "-m",
            "espnet2.bin.asr_train",
            "--config",
            run.config,
            *self.common_opts(run.seed),
            *self.data_opts(run.feats, run.soft_labels),
            "--train_shape_file",
            self.stats / "train" / "speech_shape",
            "--train_shape_file",
            self.stats / "train" / "text_shape.char",
            "--valid_shape_file",
            self.stats / "valid" / "speech_shape",
            "--valid_shape_file",
            self.stats / "valid" / "text_shape.char",
            "--normalize",
            "global_mvn",
            "--normalize_conf",
            f"stats_file={self.stats / 'train' / 'feats_stats.npz'}",
            "--resume",
            "true",
            "--output_dir",
            out,
            *extra,
        ]
        if run.init is not None:
            cmd += ["--init_param", run.init]
        if run.feats is not None:
            # recorded in config.yaml so that plot_coupling finds the PLM; training reads the dumped Z_L
            cmd += ["--model_conf", f"plm={self.plm}"]
        echo = (
            (lambda line: True) if echo_all else (lambda line: bool(ECHO.search(line)) and not ECHO_SKIP.search(line))
        )
        log = out / "train.log"
        if log.is_file():  # keep the log of an interrupted attempt
            log.rename(out / f"train.{len(list(out.glob('train.*.log')))}.log")
        run_logged(cmd, log, self.console, self.env(), run.name, echo=echo)
        if not self.model_file(run).is_file():
            raise JobFailed(f"{run.name}: training finished without {self.model_file(run)}; see {log}")
        return str(self.model_file(run))

    # ------------------------------------------------------------------ decoding and scoring
    def hyp_file(self, run: Run, split: str) -> Path:
        return self.run_dir(run) / "decode_greedy" / split / "text"

    def decode(self, run: Run, splits: Sequence[str]) -> str:
        """Greedy CTC decoding of the averaged model on splits (in a subprocess, with this run's threads)."""
        todo = [s for s in splits if not self.hyp_file(run, s).is_file()]
        if not todo:
            return "reusing decodings"
        cmd = [
            self.python,
            "-m",
            "espnet_ot.bin.greedy_ctc_decode",
            "--config",
            self.run_dir(run) / "config.yaml",
            "--model_file",
            self.model_file(run),
        ]
        for split in todo:
            cmd += ["--wav_scp", self.data / split / "wav.scp", "--output", self.hyp_file(run, split)]
        run_logged(cmd, self.run_dir(run) / "decode_greedy.log", self.console, self.env(), f"{run.name} decode")
        return ", ".join(str(self.hyp_file(run, s)) for s in todo)

    def characters(self) -> List[str]:
        """The recogniser's characters: its token list without the special tokens (<blank>, <unk>, <sos/eos>)."""
        return [t for t in self.token_list.read_text(encoding="utf-8").split() if not t.startswith("<")]

    def refs(self, split: str) -> Dict[str, str]:
        return {u: "".join(t.split()) for u, t in read_2columns_text(self.data / split / "text").items()}

    def hyps(self, run: Run, split: str) -> Dict[str, str]:
        return {u: "".join(t.split()) for u, t in read_2columns_text(self.hyp_file(run, split)).items()}

    def error_counts(self, run: Run, split: str) -> ErrorCounts:
        return decompose(self.refs(split), self.hyps(run, split))

    def utterance_errors(self, run: Run, split: str) -> Tuple[List[str], List[int], List[int]]:
        return per_utterance(self.refs(split), self.hyps(run, split))

    def epoch_stats(self, run: Run) -> List[Dict[str, Dict[str, float]]]:
        """Per-epoch train/valid stats from the trainer log (ESPnet's `Nepoch results` lines)."""
        out = []
        logs = sorted(self.run_dir(run).glob("train*.log"))
        for log in logs:
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                m = EPOCH_RESULTS.search(line)
                if m:
                    row = {"epoch": int(m.group(1))}
                    for name, blob in (("train", m.group(2)), ("valid", m.group(3))):
                        row[name] = _numbers(blob)
                    out.append(row)
        return out

    def first_interval_stats(self, run: Run) -> Dict[str, float]:
        """The trainer's report of the first training batches of epoch 1 (lr still in warmup: near initialisation)."""
        for log in sorted(self.run_dir(run).glob("train*.log")):
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                m = FIRST_INTERVAL.search(line)
                if m:
                    return _numbers(m.group(1))
        return {}


def _numbers(blob: str) -> Dict[str, float]:
    """The numeric ``key=value`` pairs of a trainer report (``k1=v1, k2=v2, ...``)."""
    return {k: float(v) for k, v in (kv.split("=", 1) for kv in blob.split(", ") if "=" in kv) if _is_float(v)}


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
