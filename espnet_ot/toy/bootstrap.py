"""Seed statistics and the paired bootstrap confidence interval of a CER difference, pooled over seeds."""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np


def mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("values: need at least one value")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def paired_bootstrap_cer_diff(
    errors_a: Sequence[Sequence[int]],
    errors_b: Sequence[Sequence[int]],
    ref_lengths: Sequence[int],
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> Dict[str, float]:
    """Bootstrap CI of CER(b) - CER(a) in CER points, resampling utterances; seeds pooled per utterance.

    ``errors_a[s][u]`` is the edit distance of model a trained with seed s on utterance u (same utterance
    order for a, b and ``ref_lengths``). Each bootstrap draw resamples the utterances with replacement and
    computes, for both systems, the CER of the seed-averaged error counts on that resample (the pooled CER
    over seeds); the differences' percentiles give the interval (Koehn 2004, "Statistical significance tests
    for machine translation evaluation", applied to CER; Bisani & Ney 2004 for ASR).

    Returns ``diff`` (on the full set), ``low``, ``high`` and ``p_below_zero`` (share of draws with b < a).
    """
    ea = np.asarray(errors_a, dtype=np.float64)
    eb = np.asarray(errors_b, dtype=np.float64)
    n = np.asarray(ref_lengths, dtype=np.float64)
    if ea.ndim != 2 or eb.ndim != 2 or ea.shape[1] != n.size or eb.shape[1] != n.size:
        raise ValueError(
            f"errors_a/errors_b: need (seeds, utterances) arrays over the same {n.size} utterances, "
            f"got {ea.shape} and {eb.shape}"
        )
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    delta = eb.mean(0) - ea.mean(0)  # per-utterance seed-averaged error difference
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    chunk = 1000
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        w = rng.multinomial(n.size, np.full(n.size, 1.0 / n.size), size=k).astype(np.float64)
        diffs[start : start + k] = 100.0 * (w @ delta) / (w @ n)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return {
        "diff": float(100.0 * delta.sum() / n.sum()),
        "low": float(low),
        "high": float(high),
        "p_below_zero": float((diffs < 0).mean()),
    }


def seed_paired_t_interval(
    cer_a: Mapping[int, float], cer_b: Mapping[int, float], level: float = 0.95
) -> Optional[Dict[str, float]]:
    """Student-t interval of the mean over seeds of CER(b) - CER(a), paired by training seed.

    Where :func:`paired_bootstrap_cer_diff` resamples test utterances (how sure the difference is for these
    trained models), this interval resamples nothing but treats the seeds as the sample: it contains the
    spread of training runs, which is what a claim that a method helps must survive. ``cer_a``/``cer_b`` map
    seed -> test CER; only the seeds both have count. Returns ``diff``, ``low``, ``high`` and ``n`` (seeds),
    or None with fewer than two shared seeds.
    """
    from scipy import stats

    seeds = sorted(set(cer_a) & set(cer_b))
    if len(seeds) < 2:
        return None
    d = np.array([cer_b[s] - cer_a[s] for s in seeds], dtype=np.float64)
    half = stats.t.ppf(0.5 + level / 2.0, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return {"diff": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half), "n": len(seeds)}
