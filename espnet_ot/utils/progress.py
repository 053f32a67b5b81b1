"""Progress of long loops: a tqdm bar on a terminal, one log line per interval otherwise (as in ESPnet's logs)."""

import datetime
import os
import sys
import time
from typing import Callable, Iterable, Iterator, Optional, TextIO, TypeVar

T = TypeVar("T")

# ESPNET_OT_PROGRESS=bar|log|off overrides the choice made from the output stream (a terminal: bar, else log).
MODES = ("auto", "bar", "log", "off")
DEFAULT_INTERVAL_S = 30.0


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(max(0.0, seconds)))))


class Progress:
    """Counts work done towards a known total and reports it with rate and time left.

    On a terminal this is a tqdm bar; when the stream is a file or a pipe (run.pl/slurm.pl logs, CI) it writes one
    line at most every ``interval`` seconds and one at the end, e.g.::

        2026-01-01T10:00:30 dump_plm_feats: 5120/120000 utt (4.3%), 170.2 utt/s, elapsed 0:00:30, left 0:11:16

    Parameters
    ----------
    total : int
        Amount of work (utterances, steps, ...).
    desc : str
        Label at the start of each line.
    unit : str
        Unit name of ``total``.
    interval : float
        Seconds between two log lines in log mode.
    initial : int
        Work already done (e.g. steps taken before the loop).
    mode : str
        ``auto`` (bar on a terminal, else log lines), ``bar``, ``log`` or ``off``; the environment variable
        ``ESPNET_OT_PROGRESS`` overrides ``auto``.
    file : TextIO, optional
        Output stream (default: ``sys.stderr``).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        interval: float = DEFAULT_INTERVAL_S,
        initial: int = 0,
        mode: str = "auto",
        file: Optional[TextIO] = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
        env_mode = os.environ.get("ESPNET_OT_PROGRESS", "")
        if mode == "auto" and env_mode:
            if env_mode not in MODES:
                raise ValueError(f"ESPNET_OT_PROGRESS: must be one of {MODES}, got {env_mode!r}")
            mode = env_mode
        self.file = file if file is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.file, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "log"
        self.mode = mode
        self.total, self.desc, self.unit, self.interval = int(total), desc, unit, float(interval)
        self.done = self.start_done = int(initial)
        self.t0 = time.monotonic()
        self.last_line = self.t0
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.done,
                desc=desc,
                unit=unit,
                file=self.file,
                dynamic_ncols=True,
                mininterval=0.5,
                smoothing=0.1,
            )

    def update(self, n: int = 1) -> None:
        """Add n units of finished work."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log" and time.monotonic() - self.last_line >= self.interval:
            self._write_line()

    def line(self) -> str:
        """The current state as one line (without time stamp)."""
        elapsed = time.monotonic() - self.t0
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        pct = f" ({100.0 * self.done / self.total:.1f}%)" if self.total > 0 else ""
        left = _clock((self.total - self.done) / rate) if rate > 0 else "?"
        return (
            f"{self.desc}: {self.done}/{self.total} {self.unit}{pct}, {rate:.3g} {self.unit}/s, "
            f"elapsed {_clock(elapsed)}, left {left}"
        )

    def _write_line(self) -> None:
        self.last_line = time.monotonic()
        stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
        print(f"{stamp} {self.line()}", file=self.file, flush=True)

    def close(self) -> None:
        """Finish: close the bar, or write the final log line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "log":
            self._write_line()
            self.mode = "off"

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(
    iterable: Iterable[T],
    total: int,
    desc: str,
    unit: str = "it",
    weight: Optional[Callable[[T], int]] = None,
    **kwargs,
) -> Iterator[T]:
    """Iterate and report progress; ``weight(item)`` units per item (default 1), counted once the item is done.

    Example: ``for chunk in progress(batches(utts, 32), total=len(utts), desc="dump", unit="utt", weight=len)``.
    Further keyword arguments go to :class:`Progress`.
    """
    with Progress(total, desc, unit=unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update(1 if weight is None else int(weight(item)))
