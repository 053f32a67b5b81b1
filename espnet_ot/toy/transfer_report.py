"""The transfer study's report page: per-arm CERs, paired differences, secondary endpoints, OT statistics."""

from pathlib import Path
from typing import Any, Dict, List, Optional

from espnet_ot.toy.bootstrap import mean_sd
from espnet_ot.toy.errors import CATEGORIES
from espnet_ot.toy.transfer import TARGET_HALF_WIDTH


def transfer_markdown(summary: Dict[str, Any]) -> str:
    """The report page of :meth:`TransferStudy.report`'s summary."""
    reps = summary["replicates"]
    final = bool(summary["comparisons"])
    lines = [
        "# Toy transfer study (warm starts, matched replicates)",
        "",
        f"Protocol: [{Path(summary['protocol']).name}]({Path(summary['protocol']).name}) (committed before the "
        f"study's first training). Replicates (warm start, seed): "
        + ", ".join(f"(W{r['warm_start']}, {r['seed']})" for r in reps)
        + ". "
        + (
            "Test decoded once per model (`--final`)."
            if final
            else "**Test not decoded yet**: these are dev numbers, for sizing and the OT statistics only."
        ),
        "",
    ]
    lines += ["![per-replicate CERs and paired differences](transfer_study.png)", ""]
    if conclusions(summary):
        lines += ["## Conclusions (the protocol's decision rule, test)", ""]
        lines += [f"- {c}" for c in conclusions(summary)] + [""]
    for w, info in summary["warm_starts"].items():
        cers = [c for c in info["dev_cer_per_epoch"] if c is not None]
        if cers:
            lines.append(
                f"- warm start W{w} (seed {info['seed']}): dev CER (%) per epoch "
                + ", ".join(f"{100 * c:.1f}" for c in cers)
            )
    lines += [
        "",
        "| arm | what | replicates done | dev CER mean ± sd | test CER mean ± sd |",
        "|---|---|---:|---:|---:|",
    ]
    for key, e in summary["arms"].items():
        row = [key, e["title"] + ("" if e["primary"] else " (secondary)")]
        dev = [c for c in e["dev_cer"] if c is not None]
        test = [c for c in e["test_cer"] if c is not None]
        row.append(str(len(dev)))
        row += [f"{mean_sd(v)[0]:.2f} ± {mean_sd(v)[1]:.2f}" if v else "—" for v in (dev, test)]
        lines.append("| " + " | ".join(row) + " |")
    for title, key in (("Paired differences on test", "comparisons"), ("Paired differences on dev", "dev_comparisons")):
        if not summary[key]:
            continue
        lines += [
            "",
            f"{title} (CER points; b - a on the replicates both have; t: Student-t 95% over replicates; "
            "bootstrap: paired over utterances, 10000 draws, error counts pooled over the replicates):",
            "",
            "| b - a | n | mean | sd | t 95% | bootstrap 95% |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, c in summary[key].items():
            t = c["t_ci95"]
            t = f"[{t[0]:+.2f}, {t[1]:+.2f}]" if t else "—"
            bs = c["bootstrap_ci95"]
            lines.append(
                f"| {name} | {c['n']} | {c['mean']:+.2f} | {c['sd']:.2f} | {t} | [{bs[0]:+.2f}, {bs[1]:+.2f}] |"
            )
    if "sizing" in summary:
        s = summary["sizing"]
        lines += [
            "",
            f"Sizing (protocol rule, dev): largest sd of the primary differences {s['largest_primary_dev_sd']:.2f}"
            f" -> n = {s['n']} replicates for a t half-width <= {TARGET_HALF_WIDTH}.",
        ]
    tested = {k: e["test_error_points"] for k, e in summary["arms"].items() if "test_error_points" in e}
    if tested:
        lines += [
            "",
            "Error decomposition on test (CER points, pooled over the replicates; homophone and tone errors "
            "are those a language model could fix):",
            "",
            "| arm | " + " | ".join(CATEGORIES) + " |",
            "|---|" + "---:|" * len(CATEGORIES),
        ]
        lines += [f"| {k} | " + " | ".join(f"{p[c]:.2f}" for c in CATEGORIES) + " |" for k, p in tested.items()]
    if summary.get("plm_ceiling"):
        c = list(summary["plm_ceiling"].values())
        lines += [
            "",
            f"Decode-time ceiling (arm A's test output, same-syllable characters re-chosen by the PLM, mean "
            f"over {len(c)} replicates): CER {sum(x['cer'] for x in c) / len(c):.2f} -> "
            f"{sum(x['cer_plm_rechosen'] for x in c) / len(c):.2f}; homophone + tone points "
            f"{sum(x['linguistic_points'] for x in c) / len(c):.2f} -> "
            f"{sum(x['linguistic_points_rechosen'] for x in c) / len(c):.2f}.",
        ]
    forced = {
        k: [r for r in e["test_forced_choice"] if r] for k, e in summary["arms"].items() if "test_forced_choice" in e
    }
    if forced:
        n_pos = next(r["n_knowledge"] for rs in forced.values() for r in rs)
        lines += [
            "",
            f"Forced choice on test: the CTC branch's choice among same-syllable characters (reference elsewhere) at "
            f"the {n_pos} positions where the masked PLM chooses right and frequency wrong (`knowledge`), and at "
            "all ambiguous positions (`ambiguous`); accuracy in %, mean ± sd over replicates; arm - A in points on "
            "matched replicates with its t 95% interval:",
            "",
            "| arm | knowledge | ambiguous | arm - A (knowledge) | t 95% |",
            "|---|---:|---:|---:|---:|",
        ]
        diffs = summary.get("forced_choice_comparisons", {})
        for key, rs in forced.items():
            know = mean_sd([100 * r["knowledge_acc"] for r in rs])
            amb = mean_sd([100 * r["ambiguous_acc"] for r in rs])
            cells = [key, f"{know[0]:.1f} ± {know[1]:.1f}", f"{amb[0]:.1f} ± {amb[1]:.1f}"]
            if f"{key}-A" in diffs:
                d, t = diffs[f"{key}-A"], diffs[f"{key}-A"]["t_ci95"]
                cells += [f"{d['mean']:+.2f}", f"[{t[0]:+.2f}, {t[1]:+.2f}]" if t else "—"]
            else:
                cells += ["—", "—"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "OT statistics (mean over replicates), start of fine-tuning -> last epoch (validation):",
        "",
        "| arm | band_mass | coupling_entropy_rel | pool_peak | pool_span |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, e in summary["arms"].items():
        cells = []
        for stat in ("band_mass", "coupling_entropy_rel", "pool_peak", "pool_span"):
            first = [s[stat] for s in e["initial_train_stats"] if stat in s]
            last = [s[stat] for s in e["final_valid_stats"] if stat in s]
            cells.append(f"{sum(first) / len(first):.3g} → {sum(last) / len(last):.3g}" if first and last else "—")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def transfer_figure(summary: Dict[str, Any], path: Path, split: str = "test") -> Path:
    """Left: each arm's CER per replicate (one line per replicate, so paired differences show as slopes); right:
    the paired differences of the split with their Student-t 95% intervals over replicates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [k for k, e in summary["arms"].items() if any(c is not None for c in e[f"{split}_cer"])]
    comparisons = summary["comparisons" if split == "test" else "dev_comparisons"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    for i, rep in enumerate(summary["replicates"]):
        cers = [
            summary["arms"][k][f"{split}_cer"][i] if i < len(summary["arms"][k][f"{split}_cer"]) else None for k in arms
        ]
        xs = [x for x, c in enumerate(cers) if c is not None]
        left.plot(xs, [cers[x] for x in xs], "o-", alpha=0.6, lw=1, label=f"W{rep['warm_start']}, seed {rep['seed']}")
    left.set_xticks(range(len(arms)), arms)
    left.set_ylabel(f"{split} CER (%)")
    left.set_title("per replicate")
    left.legend(fontsize=6, ncol=2)
    names = list(comparisons)
    for y, name in enumerate(names):
        c = comparisons[name]
        if c["t_ci95"]:
            right.plot(c["t_ci95"], [y, y], "-", color="C0", lw=2)
        right.plot([c["mean"]], [y], "o", color="C0")
    right.axvline(0.0, color="k", lw=0.8)
    right.set_yticks(range(len(names)), [f"{n} (n={comparisons[n]['n']})" for n in names])
    right.invert_yaxis()
    right.set_xlabel(f"paired {split} CER difference (points), t 95%")
    right.set_title("b - a on matched replicates")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _verdict(c: Optional[Dict[str, Any]]) -> str:
    """below 0 / above 0 / contains 0 (no evidence) for a comparison's t interval."""
    if not c or not c.get("t_ci95"):
        return "no interval"
    lo, hi = c["t_ci95"]
    return "below 0" if hi < 0 else "above 0" if lo > 0 else "contains 0"


def _cite(name: str, c: Optional[Dict[str, Any]]) -> str:
    if not c:
        return f"{name}: not run"
    t = c.get("t_ci95")
    return f"{name} {c['mean']:+.2f} [{t[0]:+.2f}, {t[1]:+.2f}] (n={c['n']})" if t else f"{name} {c['mean']:+.2f}"


def conclusions(summary: Dict[str, Any]) -> List[str]:
    """The protocol's decision rule applied to the test comparisons (docs/results/transfer_protocol.md), one
    sentence per claim with its numbers. Empty before --final."""
    comp = summary["comparisons"]
    if not comp:
        return []
    beats = {x: _verdict(comp.get(f"{x}-A")) == "below 0" and _verdict(comp.get(f"{x}-C")) == "below 0" for x in "BDE"}
    out = [
        "TOT-CAKT (B) "
        + ("transfers" if beats["B"] else "shows no evidence of transferring")
        + " the PLM's knowledge (the protocol's rule: B-A and B-C both below 0): "
        + "; ".join(_cite(n, comp.get(n)) for n in ("B-A", "B-C"))
        + "."
    ]
    for x, what in (("D", "masked Z_L (D)"), ("E", "our distillation (E)")):
        verdicts = {n: _verdict(comp.get(n)) for n in (f"{x}-A", f"{x}-C")}
        line = f"{what}: " + "; ".join(f"{_cite(n, comp.get(n))}, {v}" for n, v in verdicts.items())
        if beats[x] and _verdict(comp.get("B-C")) != "below 0":
            line += " -> the toy can show transfer and the papers' branch does not provide it"
        out.append(line + ".")
    e_e0 = comp.get("E-E0")
    if e_e0:
        out.append(
            f"E's difference from its one-hot control: {_cite('E-E0', e_e0)}, {_verdict(e_e0)}"
            + (" -> E's gain is knowledge from context." if beats["E"] and _verdict(e_e0) == "below 0" else ".")
        )
    a_test = [c for c in summary["arms"].get("A", {}).get("test_cer", []) if c is not None]
    e_a = comp.get("E-A")
    if a_test and e_a:
        goal = -0.10 * sum(a_test) / len(a_test)
        met = e_a["mean"] <= goal and _verdict(e_a) == "below 0" and _verdict(e_e0) == "below 0"
        out.append(
            f"Moonshot (E-A <= {goal:+.2f}, 10% of A's CER, t below 0, E-E0 below 0): {'met' if met else 'not met'}."
        )
    for x in ("B-GM", "B-OT"):
        if f"{x}-A" in comp:
            out.append(f"{x} (secondary): {_cite(f'{x}-A', comp[f'{x}-A'])}, {_verdict(comp[f'{x}-A'])}.")
    return out
