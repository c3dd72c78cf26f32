"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Run a test with one intra-op torch thread.

    The CI machine has two cores shared with the rest of the suite: one thread is faster than two
    fighting over them, and it keeps the learning tests' timing steady.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
