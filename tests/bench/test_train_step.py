"""`python -m espnet_ot.bench train_step` on a tiny model: one JSON line per alignment with times and op counts."""

import json

import pytest

pytest.importorskip("espnet2", reason="needs ESPnet (pip install -e . installs it)")

from espnet_ot.bench import train_step  # noqa: E402


def test_prints_times_and_op_counts_per_alignment(capsys, single_thread):
    train_step.main(
        [
            "--blocks",
            "1",
            "--d_model",
            "32",
            "--heads",
            "2",
            "--ffn",
            "64",
            "--batch_size",
            "2",
            "--seconds",
            "1",
            "--plm_dim",
            "16",
            "--vocab",
            "30",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["alignment"] for r in rows] == ["ot", "tot", "gmot"]
    for r in rows:
        assert r["baseline_ms"] > 0 and r["branch_ms"] > 0
        # the profiler saw the baseline's encoder/CTC step and the branch's own operations
        assert r["baseline_step_ops"] > 100 and r["branch_ops"] > 10, r
        assert r["branch_syncs"] >= 1, r  # the solver's convergence checks read the device
    # the temporal prior and FGW's outer iterations add operations to plain OT's
    ops = {r["alignment"]: r["branch_ops"] for r in rows}
    assert ops["ot"] < ops["tot"] and ops["ot"] < ops["gmot"], ops
