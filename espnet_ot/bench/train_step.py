"""Benchmark: training-step time (forward + backward) of a small conformer-CTC with and without the OT branch.

`python -m espnet_ot.bench train_step` prints one JSON line per alignment type with
`baseline_ms` (plain ESPnetASRModel, same encoder and CTC, no adapter), `adapter_ms`
(espnet_ot with `alignment: none`, i.e. only the adapter added), `ms` (espnet_ot with the
branch, PLM features cached) and `overhead` = ms / baseline_ms - 1; `branch_ms` times the OT
branch alone (L_ot + L_align forward + backward on H_A of the encoder's output shape) and
`branch_share` = branch_ms / baseline_ms, its share of a step; `baseline_step_ops` and `branch_ops` count the
tensor operations (leaf ATen operators, ~ GPU kernel launches) of a baseline step (encoder and CTC, forward and
backward) and of the branch, `branch_syncs` the branch's host synchronisations (torch.profiler). The same alignment
with the OT-aligned distillation (model_conf.distill_weight 1, top-16 soft labels) gives `distill_ms` (its step),
`distill_added_cpu` = distill_ms / ms - 1, and `distill_branch_ops` / `distill_branch_syncs` (its branch: L_ot, L_align
and L_distill with the CTC posteriors of H_at). Times are process CPU
time with one math thread by default, so other processes on a shared machine do not count;
wall-clock equivalents are `wall_*`. The variants run interleaved (order rotated every
repeat) and each time is the best of the repeats.
"""

import argparse
import contextlib
import json
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from espnet_ot.utils.measure import op_counts

SOFT_LABEL_K = 16
ALIGNMENT_CONFS = {
    "ot": {"eps": 0.5},
    "tot": {"eps": 0.5, "beta": 0.5},
    "gmot": {"eps": 0.5, "alpha": 0.5, "edges": "temporal", "beta": 0.5},
}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Model/data size options shared with the inference benchmark."""
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="utterance length")
    parser.add_argument("--chars_per_second", type=float, default=4.5, help="transcript rate")
    parser.add_argument("--d_model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--kernel", type=int, default=15)
    parser.add_argument("--n_mels", type=int, default=80)
    parser.add_argument("--plm_dim", type=int, default=768, help="d_t (bert-base: 768)")
    parser.add_argument("--vocab", type=int, default=4233, help="CTC vocabulary (AISHELL-1 chars)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default; 1 is robust to load)")
    parser.add_argument("--seed", type=int, default=0)


def model_config(args: argparse.Namespace) -> Dict:
    """The benchmark's model sizes, echoed in every JSON line."""
    return {
        k: getattr(args, k) for k in ("batch_size", "seconds", "d_model", "heads", "ffn", "blocks", "plm_dim", "vocab")
    }


def build_model(args: argparse.Namespace, kind: str, alignment: str = "none", distill_weight: float = 0.0):
    """kind 'baseline': ESPnetASRModel (no adapter); kind 'ot': ESPnetOTModel with cakt_adapter."""
    with contextlib.redirect_stdout(sys.stderr):  # ESPnet prints a flash-attention notice
        from espnet2.asr.espnet_model import ESPnetASRModel
        from espnet2.asr.frontend.default import DefaultFrontend

        from espnet_ot.asr.espnet_ot_model import ESPnetOTModel
        from espnet_ot.asr.model_parts import conformer_ctc_kwargs

    token_list = ["<blank>", "<unk>"] + [f"t{i}" for i in range(args.vocab - 3)] + ["<sos/eos>"]
    frontend = DefaultFrontend(fs=16000, n_fft=512, win_length=400, hop_length=160, n_mels=args.n_mels)
    encoder_conf = dict(
        output_size=args.d_model,
        attention_heads=args.heads,
        linear_units=args.ffn,
        num_blocks=args.blocks,
        input_layer="conv2d",
        macaron_style=True,
        rel_pos_type="latest",
        pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn",
        activation_type="swish",
        use_cnn_module=True,
        cnn_module_kernel=args.kernel,
    )
    parts = conformer_ctc_kwargs(
        token_list,
        args.n_mels,
        encoder_conf,
        plm_dim=args.plm_dim if kind != "baseline" else None,
        frontend=frontend,
        seed=args.seed,
    )
    parts.update(report_cer=False, report_wer=False)
    if kind == "baseline":
        return ESPnetASRModel(ctc_weight=1.0, **parts)
    return ESPnetOTModel(
        alignment=alignment, alignment_conf=ALIGNMENT_CONFS.get(alignment, {}), distill_weight=distill_weight, **parts
    )


def make_batch(args: argparse.Namespace, with_plm_feats: bool = True) -> Dict[str, torch.Tensor]:
    """Random speech (B, samples) of ~`seconds`, char ids, and cached PLM features [CLS] y [SEP]."""
    g = torch.Generator().manual_seed(args.seed)
    B = args.batch_size
    samples = int(16000 * args.seconds)
    speech_lengths = torch.tensor([samples - 1600 * (b % 4) for b in range(B)])
    text_lengths = (speech_lengths.float() / 16000 * args.chars_per_second).round().long()
    text = torch.randint(2, args.vocab - 1, (B, int(text_lengths.max())), generator=g)
    text = text.masked_fill(torch.arange(text.size(1))[None] >= text_lengths[:, None], -1)
    batch = dict(
        speech=torch.randn(B, samples, generator=g) * 0.1,
        speech_lengths=speech_lengths,
        text=text,
        text_lengths=text_lengths,
    )
    if with_plm_feats:
        z_lens = text_lengths + 2
        z = torch.randn(B, int(z_lens.max()), args.plm_dim, generator=g)
        batch["plm_feats"] = z * (torch.arange(z.size(1))[None, :, None] < z_lens[:, None, None])
        batch["plm_feats_lengths"] = z_lens
        k = SOFT_LABEL_K  # random top-k soft labels on the token rows ([CLS]/[SEP] and padding: zero)
        labels = torch.zeros(B, z.size(1), 2 * k)
        labels[..., :k] = torch.randint(2, args.vocab - 1, (B, z.size(1), k), generator=g).float()
        labels[..., k:] = torch.softmax(torch.randn(B, z.size(1), k, generator=g), -1)
        pos = torch.arange(z.size(1))[None, :]
        labels *= ((pos > 0) & (pos < (z_lens - 1)[:, None]))[..., None]
        batch["plm_soft_labels"] = labels
        batch["plm_soft_labels_lengths"] = z_lens.clone()
    return batch


def timed(fn: Callable) -> Tuple[float, float]:
    """(process CPU ms, wall-clock ms) of fn()."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return (time.process_time() - cpu) * 1000.0, (time.perf_counter() - wall) * 1000.0


def train_step(model, batch: Dict[str, torch.Tensor]) -> None:
    """One forward + backward."""
    model.zero_grad(set_to_none=True)
    loss, _, _ = model(**{k: v.clone() for k, v in batch.items()})
    loss.backward()


def branch_step(
    model, h_a: torch.Tensor, h_lens: torch.Tensor, batch: Dict, h_at: Optional[torch.Tensor] = None
) -> None:
    """Forward + backward of the OT branch alone (L_ot + L_align on a given H_A; + L_distill on H_at if given)."""
    h = h_a.detach().requires_grad_(True)
    distill = None if h_at is None else (h_at.detach().requires_grad_(True), batch["plm_soft_labels"])
    loss_ot, loss_align, _, loss_distill = model._ot_branch(
        h, h_lens, batch["plm_feats"], batch["plm_feats_lengths"], h.size(0), distill
    )
    (loss_ot + loss_align + loss_distill).backward()


def interleaved_times(
    models: Dict[str, torch.nn.Module], run: Callable, args: argparse.Namespace
) -> Dict[str, Dict[str, float]]:
    """Best-of-repeats CPU and wall ms per model; order rotated every repeat, warm-up dropped."""
    names = list(models)
    times: Dict[str, List[Tuple[float, float]]] = {name: [] for name in names}
    for rep in range(args.warmup + args.repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            t = timed(lambda: run(models[name]))
            if rep >= args.warmup:
                times[name].append(t)
    return {name: {"cpu": min(c for c, _ in v), "wall": min(w for _, w in v)} for name, v in times.items()}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print one JSON line per alignment type."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.add_argument("--alignments", default="ot,tot,gmot")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    alignments = [a for a in args.alignments.split(",") if a]
    models = {"baseline": build_model(args, "baseline"), "adapter": build_model(args, "ot")}
    for a in alignments:
        models[a] = build_model(args, "ot", a)
        models[a + "+distill"] = build_model(args, "ot", a, distill_weight=1.0)
    for m in models.values():
        m.train()
    batch = make_batch(args)
    best = interleaved_times(models, lambda m: train_step(m, batch), args)
    # The branch alone, on H_A of the encoder's output shape: a low-noise view of the overhead.
    with torch.no_grad(), models["adapter"].postencoder.capture() as captured:
        models["adapter"].encode(batch["speech"], batch["speech_lengths"])
    h_a, h_lens, h_at = captured.h_a, captured.lengths, captured.h_at
    branch = interleaved_times({a: models[a] for a in alignments}, lambda m: branch_step(m, h_a, h_lens, batch), args)
    base = best["baseline"]
    # what a step launches (the GPU cost of the branch is launch-bound: estimate it from these on paper)
    base_ops = op_counts(lambda: train_step(models["baseline"], batch))
    branch_ops = {a: op_counts(lambda m=models[a]: branch_step(m, h_a, h_lens, batch)) for a in alignments}
    distill_ops = {
        a: op_counts(lambda m=models[a + "+distill"]: branch_step(m, h_a, h_lens, batch, h_at)) for a in alignments
    }
    for a in alignments:
        print(
            json.dumps(
                {
                    "bench": "train_step",
                    "alignment": a,
                    "baseline_ms": round(base["cpu"], 1),
                    "adapter_ms": round(best["adapter"]["cpu"], 1),
                    "ms": round(best[a]["cpu"], 1),
                    "overhead": round(best[a]["cpu"] / base["cpu"] - 1.0, 4),
                    "branch_ms": round(branch[a]["cpu"], 1),
                    "branch_share": round(branch[a]["cpu"] / base["cpu"], 4),
                    "baseline_step_ops": base_ops["ops"],
                    "branch_ops": branch_ops[a]["ops"],
                    "branch_syncs": branch_ops[a]["syncs"],
                    "distill_ms": round(best[a + "+distill"]["cpu"], 1),
                    "distill_added_cpu": round(best[a + "+distill"]["cpu"] / best[a]["cpu"] - 1.0, 4),
                    "distill_branch_ops": distill_ops[a]["ops"],
                    "distill_branch_syncs": distill_ops[a]["syncs"],
                    "clock": "process_time",
                    "wall_baseline_ms": round(base["wall"], 1),
                    "wall_ms": round(best[a]["wall"], 1),
                    "wall_overhead": round(best[a]["wall"] / base["wall"] - 1.0, 4),
                    "alignment_conf": ALIGNMENT_CONFS[a],
                    "threads": torch.get_num_threads(),
                    "repeats": args.repeats,
                    **model_config(args),
                }
            ),
            flush=True,
        )
