"""Mutation check of the knowledge-transfer mechanism: plant known bugs one at a time and report which survive.

Each mutant is a small textual patch of ``espnet_ot`` (a snippet and its replacement, with alternatives for
code that other changes may have reworded). For each one the script copies ``espnet_ot/`` and ``tests/`` into
a temporary directory, applies the patch there (the working tree is never touched), runs the mutant's own
tests if it names some (the study's instruments, the relaxed solvers), then the fast mechanism tests, against
that copy (``PYTHONPATH`` puts it first) and reports ``killed`` (a test failed), ``SURVIVED`` (every test
passed: the suite does not guard that behaviour) or ``not applied`` (no snippet found: the patch must be
updated; this is never counted as killed). An unmutated run of all those tests comes first and must pass.

    make mutants                                    # every mutant, default tests
    python tests/mutants.py --list                  # names and descriptions
    python tests/mutants.py --only gmot_alpha_zero cosine_halved
    python tests/mutants.py --tests tests/ot/   # one pytest run of these tests instead

Exit status: 0 when every applied mutant is killed and none is left unapplied, 1 otherwise.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
# Two pytest runs per mutant (the second only if the first passes), the one nearest the mutated file first:
# the OT-core tests import neither ESPnet nor transformers, so a mutant of espnet_ot/ot dies in seconds.
# (the other tests/ot/ files are left out: ~10x slower; add them with --tests for a broader run.)
CORE_TESTS = ("tests/ot/test_references.py",)
MODEL_TESTS = ("tests/asr/test_mechanism.py", "tests/asr/test_plot_coupling.py")


@dataclass(frozen=True)
class Mutant:
    """A planted bug: in ``path``, replace the first alternative (regex, replacement) that matches.

    ``tests``: the pytest run (files or test ids) nearest the bug, run before the default ones; empty for a bug
    the default runs guard.
    """

    name: str
    path: str
    alternatives: Tuple[Tuple[str, str], ...]
    description: str
    tests: Tuple[str, ...] = ()


MODEL = "espnet_ot/asr/espnet_ot_model.py"
DISTILL = "espnet_ot/asr/distill.py"
DISTILL_TESTS = "tests/asr/test_distill.py"
LOSS = "espnet_ot/ot/alignment.py"
MUTANTS: Tuple[Mutant, ...] = (
    Mutant(
        "h_a_detached",
        MODEL,
        ((r"h_a, h_lens = captured\.h_a, captured\.lengths", "h_a, h_lens = captured.h_a.detach(), captured.lengths"),),
        "H_A detached before the OT branch (no OT/align gradient reaches adapter or encoder)",
    ),
    Mutant(
        "align_detached",
        MODEL,
        (
            (
                r"(loss_align = \(\(1\.0 - cos\) \* align_mask\)\.sum\(\) / batch_size)",
                r"\1\n        loss_align = loss_align.detach()",
            ),
        ),
        "L_align detached",
    ),
    Mutant(
        "ot_loss_detached",
        MODEL,
        ((r"(loss_ot = result\.loss\.float\(\)\.sum\(\) / batch_size)", r"\1\n        loss_ot = loss_ot.detach()"),),
        "L_ot detached",
    ),
    Mutant(
        "gmot_edge_dropped",
        LOSS,
        ((r"return \(1\.0 - alpha\) \* node \+ alpha \* edge", "return (1.0 - alpha) * node"),),
        "GM-OT loss without its edge (Gromov) term",
    ),
    Mutant(
        "gmot_edge_sign",
        LOSS,
        ((r"return \(1\.0 - alpha\) \* node \+ alpha \* edge", "return (1.0 - alpha) * node - alpha * edge"),),
        "GM-OT edge term with its sign flipped",
    ),
    Mutant(
        "gmot_alpha_zero",
        LOSS,
        (
            (
                r"(fused_gromov_wasserstein\(\s*C_solve,\s*Sx_solve,\s*Sy_solve,\s*h_mask,\s*z_mask,\s*)alpha,",
                r"\g<1>0.0,",
            ),
            (r"(fused_gromov_wasserstein\((?:[^()]|\([^()]*\))*?)\balpha=alpha\b", r"\g<1>alpha=0.0"),
        ),
        "GM-OT solver called with alpha = 0 (plain Sinkhorn in disguise)",
    ),
    Mutant(
        "gw_gradient_without_edges",
        "espnet_ot/ot/gromov.py",
        (
            (
                r"G = M if alpha == 0 else \(1\.0 - alpha\) \* M \+ \(2\.0 \* alpha\) \* gw_tensor_product\(Sx, Sy, gamma, const\)",
                "G = M",
            ),
            (r"G = \(1\.0 - alpha\) \* M \+ \(2\.0 \* alpha\) \* gw_tensor_product\(Sx, Sy, gamma, const\)", "G = M"),
            (
                r"return torch\.add\(base, self\.Sx\.matmul\(self\.Sy\.rmatmul\(gamma\)\), alpha=-4\.0 \* self\.alpha\)",
                "return self.M",
            ),
        ),
        "mirror-descent step ignores the Gromov gradient",
    ),
    Mutant(
        "gw_tensor_sign",
        "espnet_ot/ot/gromov.py",
        (
            (r"return const - 2\.0 \* Sx\.matmul\(gamma_Sy\)", "return const + 2.0 * Sx.matmul(gamma_Sy)"),
            (
                r"return const - 2\.0 \* Sx\.matmul\(Sy\.rmatmul\(gamma\)\)",
                "return const + 2.0 * Sx.matmul(Sy.rmatmul(gamma))",
            ),
        ),
        "square-loss tensor product with the cross term's sign flipped",
    ),
    Mutant(
        "fgw_cross_sign",
        "espnet_ot/ot/gromov.py",
        ((r"alpha=-4\.0 \* self\.alpha\)", "alpha=4.0 * self.alpha)"),),
        "mirror-descent gradient with the cross term's sign flipped",
    ),
    Mutant(
        "mix_weights_swapped",
        LOSS,
        ((r"\[mix, 1\.0 - mix\]", "[1.0 - mix, mix]"),),
        "mixed edges weighted (1 - w) temporal + w feature",
    ),
    Mutant(
        "model_always_tot",
        MODEL,
        (
            (r"method=self\.alignment\b", 'method="tot"'),
            (
                r"\*\*self\.alignment_config\.solver_kwargs\(\)\)",
                '**{**self.alignment_config.solver_kwargs(), "method": "tot"})',
            ),
        ),
        "the model runs TOT whatever model_conf.alignment says",
    ),
    Mutant(
        "cosine_halved",
        "espnet_ot/ot/_utils.py",
        (
            (
                r"cost = 1\.0 - torch\.bmm\(xn, yn\.transpose\(1, 2\)\)",
                "cost = 0.5 * (1.0 - torch.bmm(xn, yn.transpose(1, 2)))",
            ),
        ),
        "cosine cost halved",
    ),
    Mutant(
        "tot_prior_linear",
        "espnet_ot/ot/cost.py",
        (
            (r"\+ beta \* d\.pow\(2\)", "+ beta * d"),
            (r"\+ beta \* d \*\* ?2", "+ beta * d"),
            (r"\+ beta \* d\.square\(\)", "+ beta * d"),
        ),
        "TOT prior beta * d instead of beta * d^2",
    ),
    Mutant(
        "temporal_distance_unnormalised",
        "espnet_ot/ot/cost.py",
        (
            (
                r"\(i / la - j / lt\)\.abs\(\) / torch\.sqrt\(1\.0 / la\*\*2 \+ 1\.0 / lt\*\*2\)",
                "(i / la - j / lt).abs()",
            ),
        ),
        "Eq. 13 without its 1 / sqrt(1/l_a^2 + 1/l_t^2) normalisation",
    ),
    Mutant(
        "temporal_edges_unnormalised",
        "espnet_ot/ot/structure.py",
        ((r"return self\._pos\.to\(dtype\) / self\._length\.to\(dtype\)", "return self._pos.to(dtype)"),),
        "temporal edges |i - k| instead of |i - k| / l",
    ),
    Mutant(
        "feature_edges_unnormalised",
        "espnet_ot/ot/structure.py",
        (
            (r"self\.xn = normalize_rows\(x\)", "self.xn = x"),
            (r"self\.xn = torch\.nn\.functional\.normalize\(x, dim=-1, eps=1e-8\) \* m", "self.xn = x * m"),
            (r"self\.xn = x / torch\.linalg\.vector_norm\(x, dim=-1, keepdim=True\)\.clamp_min\(1e-6\)", "self.xn = x"),
        ),
        "feature edges from raw dot products instead of cosines",
    ),
    Mutant(
        "ctc_lambda_swapped",
        MODEL,
        (
            (
                r"loss = self\.ctc_lambda \* loss_ctc \+ \(1\.0 - self\.ctc_lambda\) \*",
                "loss = (1.0 - self.ctc_lambda) * loss_ctc + self.ctc_lambda *",
            ),
        ),
        "Eq. 24 with lambda and 1 - lambda swapped",
    ),
    Mutant(
        "ot_weight_ignored",
        MODEL,
        (
            (r"self\.ot_weight \* \(loss_align \+ loss_ot\)", "(loss_align + loss_ot)"),
            (r"\(1\.0 - self\.ctc_lambda\) \* self\.ot_weight \*", "(1.0 - self.ctc_lambda) *"),
        ),
        "Eq. 24 without w (ot_weight)",
    ),
    Mutant(
        "ot_loss_mean_not_per_batch",
        MODEL,
        ((r"loss_ot = result\.loss\.float\(\)\.sum\(\) / batch_size", "loss_ot = result.loss.float().mean()"),),
        "L_ot averaged over non-empty utterances instead of summed / B",
    ),
    Mutant(
        "align_keeps_special_tokens",
        MODEL,
        ((r"\(pos > 0\) & \(pos < \(z_lens - 1\)\[:, None\]\)", "(pos >= 0) & (pos < z_lens[:, None])"),),
        "[CLS]/[SEP] not excluded from L_align",
    ),
    Mutant(
        "include_special_ignored",
        MODEL,
        ((r"if not self\.ot_include_special:", "if False:"),),
        "ot_include_special: false still couples [CLS]/[SEP]",
    ),
    Mutant(
        "projection_uses_z",
        MODEL,
        (
            (
                r"z_tilde = torch\.bmm\(gamma\.transpose\(1, 2\), h_a\.float\(\)\)",
                "z_tilde = torch.bmm(gamma.transpose(1, 2), h_a.float()) + z.float()",
            ),
        ),
        "barycentric projection contaminated by Z_L",
    ),
    Mutant(
        "plot_ignores_alignment_conf",
        "espnet_ot/asr/plot_coupling.py",
        (
            (r"conf = dict\(lm\.alignment_conf\)", "conf = {}"),
            (r"cfg = lm\.alignment_config\.replace\(method=method\)", "cfg = type(lm.alignment_config)(method=method)"),
        ),
        "plot_coupling draws a coupling with default settings, not the model's",
    ),
    Mutant(
        "sinkhorn_stops_early",
        "espnet_ot/ot/_sinkhorn_driver.py",
        (
            (r"active = ~\(err_b < tol\) & active", "active = active & False"),
            (r"todo = todo & ~\(fine & \(err_b < tol\)\)", "todo = todo & False"),
        ),
        "Sinkhorn stops after its first block whatever the marginal error",
    ),
    Mutant(
        "weights_count_padding",
        "espnet_ot/ot/_utils.py",
        ((r"return m / m\.sum\(-1, keepdim=True\)\.clamp_min\(1\.0\)", "return m / m.shape[-1]"),),
        "uniform weights 1/L of the padded length instead of 1/l",
    ),
    # the study's instruments and the relaxed paths, each with the test that guards it
    Mutant(
        "bootstrap_unpaired",
        "espnet_ot/toy/bootstrap.py",
        (
            (
                r"(\n\s*)diffs\[start : start \+ k\] = 100\.0 \* \(w @ delta\) / \(w @ n\)",
                r"\1w_b = rng.multinomial(n.size, np.full(n.size, 1.0 / n.size), size=k).astype(np.float64)"
                r"\1diffs[start : start + k] = 100.0 * ((w_b @ eb.mean(0)) / (w_b @ n) - (w @ ea.mean(0)) / (w @ n))",
            ),
        ),
        "paired bootstrap draws system b's resample independently of a's",
        tests=(
            "tests/toy/test_analysis.py::test_bootstrap_draws_one_resample_for_both_systems",
            "tests/toy/test_analysis.py::test_bootstrap_interval_is_the_percentile_interval_of_a_resampling_loop",
        ),
    ),
    Mutant(
        "shuffled_feats_own",
        "espnet_ot/toy/experiment.py",
        ((r"\{entries\[donor\[u\]\]\}", "{entries[u]}"),),
        "the shuffled-Z_L control's scp reads each utterance's own features",
        tests=("tests/toy/test_analysis.py::test_shuffled_control_scp_reads_another_utterance_of_the_same_length",),
    ),
    Mutant(
        "error_tie_swapped",
        "espnet_ot/toy/errors.py",
        ((r'_TIE = \{"homophone": 0\.0, "tone": 0\.5,', '_TIE = {"homophone": 0.5, "tone": 0.0,'),),
        "alignment tie-break prefers a tone pair to a homophone pair",
        tests=("tests/toy/test_analysis.py::test_decomposition_pairs_a_homophone_before_a_tone_error",),
    ),
    Mutant(
        "probe_scores_previous_position",
        "espnet_ot/toy/probe.py",
        ((r"scores = logits\[n, i \+ 1, ", "scores = logits[n, i, "),),
        "homophone probe scores the position before the mask",
        tests=("tests/toy/test_analysis.py::test_homophone_probe_scores_the_masked_position",),
    ),
    Mutant(
        "forced_choice_worst_other",
        "espnet_ot/toy/forced_choice.py",
        ((r"best_other\[n\] = min\(best_other\[n\], value\)", "best_other[n] = max(best_other[n], value)"),),
        "forced choice compares the reference with its least likely variant, not its most likely one",
        tests=("tests/toy/test_forced_choice.py",),
    ),
    Mutant(
        "forced_choice_knowledge_any_position",
        "espnet_ot/toy/forced_choice.py",
        ((r"if c\.plm_right and not c\.freq_right\]", "if c.plm_right]"),),
        "forced choice's knowledge positions include those frequency already gets right",
        tests=("tests/toy/test_forced_choice.py",),
    ),
    Mutant(
        "relaxed_gmot_uniform_constant",
        "espnet_ot/ot/gromov.py",
        (
            (r"if alpha > 0 and math\.isinf\(tau\):", "if alpha > 0:"),
            (r"if base is None and alpha > 0 and math\.isinf\(tau\):", "if base is None and alpha > 0:"),
        ),
        "relaxed GM-OT's square-loss constant from the uniform frame marginal, not the coupling's",
    ),
    Mutant(
        "relaxed_gmot_loss_uniform",
        LOSS,
        (
            (
                r"a = gamma\.sum\(2\)\.detach\(\)\.to\(C\.dtype\)",
                "a = h_mask.to(C.dtype) / h_mask.sum(-1, keepdim=True).clamp_min(1)",
            ),
        ),
        "relaxed GM-OT's loss from the uniform frame marginal, not the coupling's",
    ),
    Mutant(
        "unrolled_gmot_ignores_relax",
        "espnet_ot/ot/gromov.py",
        (
            (
                r"(?s)sinkhorn if math\.isinf\(tau\) else sinkhorn_unbalanced,(.*?)"
                r"\*\*\(\{\} if math\.isinf\(tau\) else \{\"reg_m\": \(tau, math\.inf\)\}\),?\s*\)",
                r"sinkhorn,\1**{})",
            ),
        ),
        "grad=unrolled GM-OT solves hard marginals whatever relax says",
    ),
    Mutant(
        "scalar_reg_m_frames_only",
        "espnet_ot/ot/sinkhorn.py",
        ((r"taus = \(reg_m, reg_m\)", "taus = (reg_m, math.inf)"),),
        "sinkhorn_unbalanced(reg_m=tau) relaxes the frames only",
        tests=("tests/ot/test_sinkhorn_unbalanced.py::test_a_single_penalty_relaxes_both_marginals",),
    ),
    Mutant(
        "empty_transcripts_assumed_last",
        MODEL,
        (
            (
                r"h_a, h_lens, z, z_lens = h_a\[idx\], h_lens\[idx\], z\[idx\], z_lens\[idx\]",
                "h_a, h_lens, z, z_lens = h_a[:n_valid], h_lens[:n_valid], z[:n_valid], z_lens[:n_valid]",
            ),
        ),
        "the OT branch keeps the first n_valid utterances instead of the non-empty ones",
    ),
    Mutant(
        "adapter_dropout_on_sum",
        "espnet_ot/asr/postencoder/cakt_adapter.py",
        (
            (
                r"h_at = input \+ self\.scale \* self\.dropout\(self\.norm_hat\(h_hat\)\)",
                "h_at = self.dropout(input + self.scale * self.norm_hat(h_hat))",
            ),
        ),
        "adapter dropout on the residual sum instead of the branch",
        tests=("tests/asr/test_espnet_ot_model.py::test_adapter_dropout_acts_on_the_branch_only",),
    ),
    # the OT-aligned distillation (espnet_ot/asr/distill.py, model_conf.distill_weight, the soft-label dump)
    Mutant(
        "distill_blank_kept",
        DISTILL,
        ((r"non_blank = q\.sum\(-1\) - q\[\.\.\., blank\]", "non_blank = q.sum(-1)"),),
        "pooled posteriors not renormalised without the blank",
        tests=(DISTILL_TESTS,),
    ),
    Mutant(
        "distill_pool_unnormalised",
        DISTILL,
        ((r"w = g / g\.sum\(1, keepdim=True\)\.clamp_min\(_TINY\)", "w = g"),),
        "frames pooled with the raw coupling instead of its normalised column",
        tests=(DISTILL_TESTS,),
    ),
    Mutant(
        "distill_gamma_not_detached",
        DISTILL,
        ((r"g = gamma\.detach\(\)\.to\(dtype\)", "g = gamma.to(dtype)"),),
        "the coupling not a constant of the distillation",
        tests=(DISTILL_TESTS,),
    ),
    Mutant(
        "distill_weight_ignored",
        MODEL,
        ((r"self\.distill_weight \* loss_distill", "loss_distill"),),
        "model_conf.distill_weight ignored (weight 1)",
        tests=(DISTILL_TESTS,),
    ),
    Mutant(
        "distill_posteriors_detached",
        MODEL,
        (
            (
                r"log_probs = self\.ctc\.log_softmax\(h_at\.float\(\)\)",
                "log_probs = self.ctc.log_softmax(h_at.float()).detach()",
            ),
        ),
        "no distillation gradient reaches the encoder and the CTC layer",
        tests=(DISTILL_TESTS,),
    ),
    Mutant(
        "soft_labels_shifted",
        MODEL,
        ((r"labels = labels\[:, :n_cols\]", "labels = labels[:, 1 : n_cols + 1]"),),
        "soft-label rows read one position off the coupling's columns",
        tests=(DISTILL_TESTS,),
    ),
    Mutant(
        "soft_labels_of_empty_utterances",
        MODEL,
        ((r"distill\[1\]\[idx\.to\(distill\[1\]\.device\)\]", "distill[1][: idx.numel()]"),),
        "soft labels not re-indexed when empty transcripts are left out",
        tests=(DISTILL_TESTS,),
    ),
    Mutant(
        "soft_labels_mask_previous_token",
        "espnet_ot/asr/soft_labels.py",
        ((r"masked\[n, j_idx\] = mask_id", "masked[n, j_idx - 1] = mask_id"),),
        "the masked-LM soft label of token j computed with token j-1 masked",
        tests=(
            "tests/asr/test_soft_labels.py::test_mlm_soft_labels_are_the_masked_lm_distribution_over_the_ctc_tokens",
        ),
    ),
)


def apply(mutant: Mutant, text: str) -> Optional[str]:
    """The mutated text, or None when no alternative's snippet occurs."""
    for pattern, replacement in mutant.alternatives:
        new, n = re.subn(pattern, replacement, text)
        if n:
            return new
    return None


def run_tests(root: Path, tests: Sequence[str], timeout: int) -> Tuple[str, str, float]:
    """Run pytest on the copy in ``root``; (outcome, first failing test or note, seconds)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-rf", *tests]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"no verdict within {timeout}s", time.time() - t0
    elapsed = time.time() - t0
    if proc.returncode == 0:
        return "passed", "", elapsed
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
    note = failed[0] if failed else (proc.stdout + proc.stderr).strip().splitlines()[-1:]
    return "failed", note if isinstance(note, str) else " ".join(note), elapsed


def stages_for(mutant: Optional[Mutant], tests: Optional[Sequence[str]]) -> List[Sequence[str]]:
    """The pytest runs for a mutant: --tests as one run, else its own tests (if any) and the two default runs,
    nearest first."""
    if tests:
        return [tests]
    own = [mutant.tests] if mutant is not None and mutant.tests else []
    if mutant is not None and not mutant.path.startswith("espnet_ot/ot/"):
        return own + [MODEL_TESTS, CORE_TESTS]
    return own + [CORE_TESTS, MODEL_TESTS]


def unmutated_stages(chosen: Sequence[Mutant], tests: Optional[Sequence[str]]) -> List[Sequence[str]]:
    """The runs of the unmutated copy: the default runs (or --tests) and the chosen mutants' own tests."""
    stages = stages_for(None, tests)
    own = tuple(dict.fromkeys(t for m in chosen for t in m.tests if t not in CORE_TESTS + MODEL_TESTS))
    return stages + [own] if own and not tests else stages


def run_stages(root: Path, stages: Sequence[Sequence[str]], timeout: int) -> Tuple[str, str, float]:
    """Run the stages in order until one does not pass; total seconds."""
    total = 0.0
    for tests in stages:
        outcome, note, secs = run_tests(root, tests, timeout)
        total += secs
        if outcome != "passed":
            return outcome, note, total
    return "passed", "", total


def fresh_copy(dest: Path) -> Path:
    """Copy espnet_ot/ and tests/ (sources only) into dest."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("espnet_ot", "tests"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "pytest.ini", "conftest.py"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    return dest


def check_import_path(root: Path) -> None:
    """Make sure the copy (not an installed espnet_ot) is what the tests import."""
    env = dict(os.environ, PYTHONPATH=str(root))
    code = "import espnet_ot.ot, espnet_ot.asr.espnet_ot_model as m; print(espnet_ot.ot.__file__); print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    files = [line.strip() for line in out.stdout.splitlines() if line.strip().endswith(".py")]
    if (
        out.returncode != 0
        or len(files) != 2
        or not all(Path(f).resolve().is_relative_to(root.resolve()) for f in files)
    ):
        sys.exit(f"mutants: the copy in {root} is not the imported espnet_ot:\n{out.stdout}{out.stderr}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="\n".join(__doc__.split("\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--tests",
        nargs="+",
        default=None,
        help="test files/ids relative to the repo, one pytest run (default: the OT-core tests and the "
        "model mechanism tests, as two runs)",
    )
    p.add_argument("--only", nargs="+", default=None, help="run only these mutants")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)

    if args.list:
        for m in MUTANTS:
            print(f"{m.name:32s} {m.path:40s} {m.description}")
        return 0
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    unknown = sorted(set(args.only or []) - {m.name for m in MUTANTS})
    if unknown:
        p.error(f"--only: unknown mutant(s) {unknown}; see --list")

    tmp = Path(tempfile.mkdtemp(prefix="espnet_ot_mutants_"))
    work = tmp / "repo"
    try:
        check_import_path(fresh_copy(work))
        outcome, note, secs = run_stages(work, unmutated_stages(chosen, args.tests), args.timeout)
        print(f"unmutated: {outcome} in {secs:.0f}s {note}", flush=True)
        if outcome != "passed":
            print("mutants: the unmutated tests must pass first", file=sys.stderr)
            return 2
        rows: List[Tuple[str, str, str, float]] = []
        for m in chosen:
            fresh_copy(work)
            target = work / m.path
            mutated = apply(m, target.read_text(encoding="utf-8")) if target.is_file() else None
            if mutated is None:
                rows.append((m.name, "not applied", f"snippet not found in {m.path}", 0.0))
            else:
                target.write_text(mutated, encoding="utf-8")
                outcome, note, secs = run_stages(work, stages_for(m, args.tests), args.timeout)
                status = {"failed": "killed", "passed": "SURVIVED", "timeout": "timeout"}[outcome]
                rows.append((m.name, status, note, secs))
            print(f"{rows[-1][0]:32s} {rows[-1][1]:12s} {rows[-1][3]:5.0f}s  {rows[-1][2]}", flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    counts = {s: sum(r[1] == s for r in rows) for s in ("killed", "SURVIVED", "timeout", "not applied")}
    print("\n| mutant | result | killed by / note |\n|---|---|---|")
    for name, status, note, _ in rows:
        print(f"| {name} | {status} | {note} |")
    print("\n" + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0 if counts["killed"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
