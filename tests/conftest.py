"""Pytest fixtures shared by the integration tests (offline: no hub access); under CI=true a skip is a failure."""

import os

import pytest
import torch

from helpers import IN_CI, OFFLINE_ENV, make_tiny_bert

os.environ.update(OFFLINE_ENV)


def _as_ci_failure(report) -> None:
    """CI=true: a missing prerequisite (ESPnet checkout, sclite, sox, a CJK font, a package) fails the run."""
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a missing prerequisite is a failure, not a skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _as_ci_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _as_ci_failure(outcome.get_result())


@pytest.fixture(scope="session")
def tiny_plm_dir(tmp_path_factory):
    """A random 2-layer, 32-wide BERT with a character vocabulary, saved with save_pretrained."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert") / "plm")


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device the OT code runs on: cpu, and cuda when a GPU is present (no CUDA case exists otherwise)."""
    return torch.device(request.param)


@pytest.fixture
def single_thread():
    """One torch math thread for tiny models (2 threads crawl on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
