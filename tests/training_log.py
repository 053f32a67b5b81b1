"""Reads ESPnet's per-epoch results lines from a training log and checks the statistics of an espnet_ot training."""

import math
import re
from typing import Dict, Iterable

EPOCH_LINE = re.compile(r"(\d+)epoch results: (.*)$", re.M)
PHASE = re.compile(r"\[(\w+)\] ")
STAT = re.compile(r"(\w+)=([^,]+)")
OT_STATS = ("loss_ot", "loss_align", "band_mass", "coupling_entropy", "coupling_entropy_rel")
# ESPnetASRModel reports these as None for a pure-CTC model (no attention decoder); ESPnet logs None as nan.
ESPNET_NONE = frozenset({"loss_att", "acc", "cer", "wer"})
ESPNET_NONE_IN_TRAIN = frozenset({"cer_ctc"})  # CTC error rates are computed in validation only


def epoch_results(log: str) -> Dict[int, Dict[str, Dict[str, float]]]:
    """{epoch: {phase: {stat: value}}} from the ``<N>epoch results: [train] k=v, ... [valid] ...`` lines."""
    results: Dict[int, Dict[str, Dict[str, float]]] = {}
    for m in EPOCH_LINE.finditer(log):
        parts = PHASE.split(m.group(2))
        phases = results.setdefault(int(m.group(1)), {})
        for phase, body in zip(parts[1::2], parts[2::2]):
            stats = {}
            for key, value in STAT.findall(body):
                try:
                    stats[key] = float(value.split()[0])
                except ValueError:  # e.g. a duration spelled out in words
                    continue
            phases[phase] = stats
    return results


def check_training_stats(log: str, ot: bool, phases: Iterable[str] = ("train", "valid")) -> Dict:
    """Raise AssertionError unless every epoch has every phase, every statistic is finite (except ESPnet's
    placeholders for quantities a CTC model does not have), ``band_mass`` is in [0, 1], and the OT statistics
    are present exactly when ``ot``. Returns the parsed results."""
    phases = tuple(phases)
    results = epoch_results(log)
    if not results:
        raise AssertionError("no '<N>epoch results:' line in the training log")
    ot_keys = set(OT_STATS)
    for epoch, by_phase in sorted(results.items()):
        missing = set(phases) - set(by_phase)
        if missing:
            raise AssertionError(f"epoch {epoch}: no {sorted(missing)} results")
        for phase, stats in by_phase.items():
            if phase not in phases:  # e.g. ESPnet's [att_plot] phase: timing only, no model statistics
                continue
            allowed = ESPNET_NONE | (ESPNET_NONE_IN_TRAIN if phase == "train" else frozenset())
            bad = {k: v for k, v in stats.items() if not math.isfinite(v) and k not in allowed}
            if bad:
                raise AssertionError(f"epoch {epoch} {phase}: non-finite statistics {bad}")
            present = {k for k in stats if k in ot_keys or k.startswith("ot_")}
            if ot and not ot_keys <= present:
                raise AssertionError(f"epoch {epoch} {phase}: OT statistics {sorted(ot_keys - present)} missing")
            if not ot and present:
                raise AssertionError(f"epoch {epoch} {phase}: a model without OT reports {sorted(present)}")
            if ot and not 0.0 <= stats["band_mass"] <= 1.0 + 1e-6:
                raise AssertionError(f"epoch {epoch} {phase}: band_mass={stats['band_mass']} is not in [0, 1]")
    return results
