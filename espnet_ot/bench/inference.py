"""Benchmark: greedy-CTC decoding time of an espnet_ot model (encoder + adapter + CTC) vs the equal-size baseline.

`python -m espnet_ot.bench inference` decodes the same utterances one at a time (as
asr_inference with batch_size 1 does) with both models in eval mode and prints one JSON line
with `baseline_ms`, `ms` (process CPU time over all utterances, best of interleaved repeats; wall-clock as
`wall_*`) and `ratio` = ms / baseline_ms; `adapter_ms` times the adapter alone on the encoder
outputs (`adapter_share` = adapter_ms / baseline_ms). No PLM and no OT run at inference.
"""

import argparse
import json
from typing import Optional, Sequence

import torch

from espnet_ot.bench.train_step import (
    add_model_args,
    build_model,
    interleaved_times,
    model_config,
)


@torch.inference_mode()
def decode_all(model, utterances) -> None:
    """Encode and greedy-CTC-decode every utterance (batch size 1)."""
    for speech in utterances:
        enc, _ = model.encode(speech, torch.tensor([speech.size(1)]))
        ids = torch.unique_consecutive(model.ctc.argmax(enc)[0])
        _ = ids[ids != 0].tolist()


@torch.inference_mode()
def run_adapter(adapter, encoded) -> None:
    """The cakt_adapter postencoder on every (H_ca, lengths)."""
    for enc, lens in encoded:
        adapter(enc, lens)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print one JSON line with the decoding-time ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(parser)
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    baseline = build_model(args, "baseline").eval()
    ours = build_model(args, "ot", "tot").eval()
    g = torch.Generator().manual_seed(args.seed)
    samples = int(16000 * args.seconds)
    utts = [torch.randn(1, samples - 800 * (i % 5), generator=g) * 0.1 for i in range(args.utterances)]
    best = interleaved_times({"baseline": baseline, "ours": ours}, lambda m: decode_all(m, utts), args)
    base, mine = best["baseline"], best["ours"]
    # The adapter alone on encoder outputs: a low-noise view of the extra inference cost.
    with torch.inference_mode():
        encoded = [ours.encoder(*ours._extract_feats(u, torch.tensor([u.size(1)])))[:2] for u in utts]
    adapter = interleaved_times({"adapter": ours.postencoder}, lambda m: run_adapter(m, encoded), args)["adapter"]
    config = model_config(args)
    config.pop("batch_size")
    print(
        json.dumps(
            {
                "bench": "inference",
                "model": "espnet_ot (tot, cakt_adapter)",
                "baseline_ms": round(base["cpu"], 1),
                "ms": round(mine["cpu"], 1),
                "ratio": round(mine["cpu"] / base["cpu"], 4),
                "adapter_ms": round(adapter["cpu"], 1),
                "adapter_share": round(adapter["cpu"] / base["cpu"], 4),
                "clock": "process_time",
                "wall_baseline_ms": round(base["wall"], 1),
                "wall_ms": round(mine["wall"], 1),
                "wall_ratio": round(mine["wall"] / base["wall"], 4),
                "utterances": args.utterances,
                "threads": torch.get_num_threads(),
                "repeats": args.repeats,
                **config,
            }
        ),
        flush=True,
    )
