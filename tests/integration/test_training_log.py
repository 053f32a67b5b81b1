"""The checker of logged training statistics (tests/training_log.py) on ESPnet-formatted lines: it must reject
what the end-to-end tests rely on it to reject."""

import pytest

from training_log import check_training_stats, epoch_results

HEAD = "[host] 2026-01-01 10:00:00,000 (trainer:394) INFO: "
OT_LINE = (
    "{e}epoch results: [train] iter_time=0.012, forward_time=0.2, loss_ctc=81.2, loss_att=nan, acc=nan, cer=nan, "
    "wer=nan, cer_ctc=nan, loss=30.1, loss_ot={ot}, loss_align=2.1, band_mass={band}, coupling_entropy=3.2, coupling_entropy_rel=0.7, "
    "optim_step_time=0.01, optim0_lr0=1.0e-03, train_time=0.3, time=1 minute and 2.3 seconds, total_count=3, "
    "gpu_max_cached_mem_GB=0.0, [valid] loss_ctc=90.1, cer_ctc=0.9, loss_att=nan, acc=nan, cer=nan, wer=nan, "
    "loss=32.0, loss_ot=1.1, loss_align=2.0, band_mass=0.5, coupling_entropy=3.1, coupling_entropy_rel=0.6, time=0.2 seconds, total_count=2"
)
BASE_LINE = (
    "{e}epoch results: [train] iter_time=0.01, loss_ctc=80.0, loss_att=nan, acc=nan, cer=nan, wer=nan, "
    "cer_ctc=nan, loss=80.0, time=9.6 seconds, total_count=3, [valid] loss_ctc=90.0, cer_ctc=0.95, loss_att=nan, "
    "acc=nan, cer=nan, wer=nan, loss=90.0, time=0.2 seconds, total_count=2"
)


def log(*lines):
    return "\n".join(["[host] 2026-01-01 (abs_task:1) INFO: model built"] + [HEAD + line for line in lines]) + "\n"


def test_parses_every_epoch_and_phase():
    res = epoch_results(log(OT_LINE.format(e=1, ot=1.5, band=0.3), OT_LINE.format(e=2, ot=1.4, band=0.4)))
    assert sorted(res) == [1, 2] and sorted(res[2]) == ["train", "valid"]
    assert res[2]["train"]["loss_ot"] == 1.4 and res[1]["valid"]["band_mass"] == 0.5
    assert res[1]["train"]["time"] == 1.0  # spelled-out durations do not break the parse
    check_training_stats(log(OT_LINE.format(e=1, ot=1.5, band=0.3)), ot=True)
    check_training_stats(log(BASE_LINE.format(e=1)), ot=False)


@pytest.mark.parametrize(
    "bad, message",
    [
        (OT_LINE.format(e=2, ot="nan", band=0.3), "non-finite"),
        (OT_LINE.format(e=2, ot="inf", band=0.3), "non-finite"),
        (OT_LINE.format(e=2, ot=1.0, band=1.2), "band_mass"),
        (OT_LINE.format(e=2, ot=1.0, band=-0.1), "band_mass"),
        (
            OT_LINE.format(e=2, ot=1.0, band=0.3)
            .replace(", [valid]", ", cer_ctc=nan, [valid]")
            .replace("loss=32.0", "loss=nan"),
            "non-finite",
        ),
        (OT_LINE.format(e=2, ot=1.0, band=0.3).split(", [valid]")[0], "valid"),
        (OT_LINE.format(e=2, ot=1.0, band=0.3).replace("loss_align=2.0, ", ""), "loss_align"),
    ],
)
def test_rejects_a_bad_later_epoch_of_an_ot_model(bad, message):
    with pytest.raises(AssertionError, match=message):
        check_training_stats(log(OT_LINE.format(e=1, ot=1.5, band=0.3), bad), ot=True)


def test_rejects_ot_statistics_of_a_baseline_and_an_empty_log():
    with pytest.raises(AssertionError, match="without OT"):
        check_training_stats(log(OT_LINE.format(e=1, ot=1.5, band=0.3)), ot=False)
    with pytest.raises(AssertionError, match="without OT"):
        check_training_stats(log(BASE_LINE.format(e=1).replace("loss=80.0", "loss=80.0, ot_iters=12")), ot=False)
    with pytest.raises(AssertionError, match="missing"):
        check_training_stats(log(BASE_LINE.format(e=1)), ot=True)
    with pytest.raises(AssertionError, match="no '<N>epoch results:'"):
        check_training_stats("nothing here\n", ot=True)
