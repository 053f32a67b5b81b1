"""Seed statistics and the paired bootstrap confidence interval of a CER difference, pooled over seeds."""

from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

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


UtteranceErrors = Tuple[List[str], List[int], List[int]]  # utterance ids, edit distances, reference lengths


def paired_comparison(
    errors_a: Mapping[Hashable, UtteranceErrors], errors_b: Mapping[Hashable, UtteranceErrors]
) -> Dict[str, Any]:
    """CER(b) - CER(a) over matched replicates: per-replicate differences, their t interval and the bootstrap.

    ``errors_a[r]`` / ``errors_b[r]``: the per-utterance errors of systems a and b trained as replicate r (same
    seed, same initialisation). The replicate sets must be equal: an unmatched comparison is refused (compare on
    the intersection explicitly). Returns ``mean`` (mean of the per-replicate differences, CER points), ``sd``,
    ``n``, ``per_replicate``, ``t_ci95`` (None for one replicate) and ``bootstrap_ci95`` (utterances resampled
    once for both systems, error counts averaged over the replicates: :func:`paired_bootstrap_cer_diff`).
    """
    if set(errors_a) != set(errors_b):
        raise ValueError(
            f"replicates: system a has {sorted(errors_a, key=str)}, system b {sorted(errors_b, key=str)}; a paired "
            "comparison needs the same replicates (seeds) for both: compare on their intersection"
        )
    keys = sorted(errors_a, key=str)
    if not keys:
        raise ValueError("replicates: none to compare")
    utts, _, lens = errors_a[keys[0]]
    for k in keys:
        for name, errs in (("a", errors_a[k]), ("b", errors_b[k])):
            if errs[0] != utts:
                raise ValueError(f"system {name}, replicate {k}: decoded utterances differ from the others'")
    n_ref = float(sum(lens))
    per = [100.0 * (sum(errors_b[k][1]) - sum(errors_a[k][1])) / n_ref for k in keys]
    mean, sd = mean_sd(per)
    t = seed_paired_t_interval({i: 0.0 for i in range(len(per))}, dict(enumerate(per))) if len(per) > 1 else None
    boot = paired_bootstrap_cer_diff([errors_a[k][1] for k in keys], [errors_b[k][1] for k in keys], lens)
    return {
        "mean": mean,
        "sd": sd,
        "n": len(keys),
        "per_replicate": per,
        "t_ci95": [t["low"], t["high"]] if t else None,
        "bootstrap_ci95": [boot["low"], boot["high"]],
    }
