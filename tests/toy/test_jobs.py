"""The toy pipelines' job runner: dependency-aware scheduling and ESPnet log formatting."""

import threading
import time

import pytest

from espnet_ot.toy import jobs


def test_run_tasks_respects_dependencies_and_parallelism():
    order, lock, active, peak = [], threading.Lock(), [0], [0]

    def make(name):
        def fn():
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.05)
            with lock:
                active[0] -= 1
                order.append(name)

        return fn

    tasks = [
        jobs.Task("c", make("c"), ["a", "b"]),
        jobs.Task("a", make("a")),
        jobs.Task("b", make("b")),
        jobs.Task("d", make("d"), ["c"]),
    ]
    times = jobs.run_tasks(tasks, 2, jobs.Console())
    assert order.index("c") > max(order.index("a"), order.index("b")) and order[-1] == "d"
    assert peak[0] == 2 and sorted(times) == ["a", "b", "c", "d"]

    def boom():
        raise jobs.JobFailed("x failed")

    with pytest.raises(jobs.JobFailed, match="x failed"):
        jobs.run_tasks([jobs.Task("x", boom), jobs.Task("y", make("y"), ["x"])], 2, jobs.Console())


def test_trainer_line_formatting_keeps_cer_and_losses():
    line = (
        "[vm] 2026-01-01 10:00:00,000 (trainer:394) INFO: 7epoch results: [train] iter_time=0.01, "
        "loss_ctc=8.1, loss=3.2, loss_ot=0.6, band_mass=0.69, time=9.6 seconds, total_count=48, "
        "[valid] loss_ctc=10.9, cer_ctc=0.466, loss_att=nan, loss=10.9, time=0.2 seconds, total_count=4"
    )
    out = jobs.format_trainer_line(line)
    assert out.startswith("epoch 7: train ") and "cer_ctc=0.466" in out and "band_mass=0.69" in out
    assert "nan" not in out and "iter_time" not in out
    assert jobs.ECHO.search(line) and not jobs.ECHO.search("[vm] x y (abs_task:1) INFO: z")
    assert (
        jobs.format_trainer_line(
            "[vm] 2026-01-01 10:00:00,000 (trainer:462) INFO: The best model has been updated: valid.cer_ctc"
        )
        == "The best model has been updated: valid.cer_ctc"
    )
