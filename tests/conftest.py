"""Pytest fixtures shared by the integration tests (offline: no hub access)."""

import os

import pytest

from helpers import OFFLINE_ENV, make_tiny_bert

os.environ.update(OFFLINE_ENV)


@pytest.fixture(scope="session")
def tiny_plm_dir(tmp_path_factory):
    """A random 2-layer, 32-wide BERT with a character vocabulary, saved with save_pretrained."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert") / "plm")


@pytest.fixture
def single_thread():
    """One torch math thread for tiny models (2 threads crawl on a loaded 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
