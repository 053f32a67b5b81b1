"""Running the toy pipelines' subprocesses: logged jobs, a dependency-aware scheduler, ESPnet log formatting."""

import concurrent.futures
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# ESPnet trainer lines echoed to the console (the full log is in <out>/exp/<model>/train.log).
ECHO = re.compile(r"\((trainer|average_nbest_models):\d+\)|Traceback|\bERROR\b")
ECHO_SKIP = re.compile(r"batch:|^\[nltk_data\]")
ESPNET_PREFIX = re.compile(r"^\[[^\]]*\] \S+ \S+ \((\w+):\d+\) (INFO|WARNING|ERROR): ")
EPOCH_RESULTS = re.compile(r"(\d+)epoch results: \[train\] (.*?), \[valid\] (.*?)(, \[|$)")
# the trainer's first interval report of epoch 1 (`1epoch:train:1-31batch: k=v, ...`): the model near its initialisation
FIRST_INTERVAL = re.compile(r"\b1epoch:train:1-\d+batch: (.*)$")
SHOWN_STATS = ("loss", "loss_ctc", "cer_ctc", "loss_ot", "loss_align", "band_mass", "time")


def format_trainer_line(line: str) -> str:
    """Shorten an ESPnet trainer log line; epoch results keep the losses, CER and coupling band mass."""
    m = EPOCH_RESULTS.search(line)
    if m:
        parts = []
        for name, blob in (("train", m.group(2)), ("valid", m.group(3))):
            stats = dict(kv.split("=", 1) for kv in blob.split(", ") if "=" in kv)
            shown = [f"{k}={stats[k]}" for k in SHOWN_STATS if k in stats and stats[k] != "nan"]
            parts.append(f"{name} " + " ".join(shown))
        return f"epoch {m.group(1)}: " + " | ".join(parts)
    return ESPNET_PREFIX.sub("", line.rstrip())


class Console:
    """Thread-safe printing with one line per phase."""

    def __init__(self, tag: str = "demo") -> None:
        self.lock = threading.Lock()
        self.t0 = time.time()
        self.tag = tag

    def line(self, msg: str) -> None:
        with self.lock:
            print(f"[{self.tag} {time.time() - self.t0:6.0f}s] {msg}", flush=True)

    def raw(self, msg: str) -> None:
        with self.lock:
            print(msg, flush=True)


class JobFailed(RuntimeError):
    """A subprocess of a toy pipeline exited non-zero."""


_LIVE: Dict[int, subprocess.Popen] = {}
_LIVE_LOCK = threading.Lock()


def stop_live_jobs() -> None:
    """Terminate the subprocesses this process started that are still running (after another one failed)."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()


def job_env(threads: int) -> Dict[str, str]:
    """Environment of the subprocesses: offline Hugging Face, `threads` torch threads, Agg matplotlib."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        MPLBACKEND="Agg",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_logged(
    cmd: Sequence[str],
    log: Path,
    console: Console,
    env: Dict[str, str],
    tag: str,
    echo: Optional[Callable[[str], bool]] = None,
    cwd: Optional[Path] = None,
) -> None:
    """Run cmd with stdout+stderr into `log`; echo selected lines as `[tag] line`; raise JobFailed on error."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        f.write("# " + " ".join(str(c) for c in cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            errors="replace",
            cwd=str(cwd) if cwd else None,
        )
        assert proc.stdout is not None
        with _LIVE_LOCK:
            _LIVE[proc.pid] = proc
        for line in proc.stdout:
            f.write(line)
            f.flush()  # `tail -f` of the log follows the job line by line
            if echo is not None and echo(line):
                text = format_trainer_line(line)
                console.raw(f"[{tag}] {text[:400]}{' ...' if len(text) > 400 else ''}")
        rc = proc.wait()
        with _LIVE_LOCK:
            _LIVE.pop(proc.pid, None)
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        console.raw("\n".join(f"[{tag}] | {t}" for t in tail))
        raise JobFailed(f"{tag}: `{' '.join(str(c) for c in cmd[:4])} ...` exited with {rc}; full log: {log}")


@dataclass
class Task:
    """A unit of work for the scheduler: runs after all of `deps`."""

    name: str
    fn: Callable[[], None]
    deps: List[str] = field(default_factory=list)


def run_tasks(tasks: Sequence[Task], jobs: int, console: Console) -> Dict[str, float]:
    """Run tasks respecting dependencies, `jobs` at a time; returns wall seconds per task. Stops on failure."""
    pending = {t.name: t for t in tasks}
    done: Dict[str, float] = {}
    running: Dict[concurrent.futures.Future, Tuple[str, float]] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            ready = [t for t in pending.values() if all(d in done for d in t.deps)]
            for t in ready[: max(0, jobs - len(running))]:
                del pending[t.name]
                running[pool.submit(t.fn)] = (t.name, time.time())
            if not running:
                raise RuntimeError(f"tasks {sorted(pending)} wait for dependencies that never run")
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in finished:
                name, start = running.pop(fut)
                exc = fut.exception()
                if exc is not None:
                    pending.clear()
                    stop_live_jobs()
                    raise exc
                done[name] = time.time() - start
    return done
