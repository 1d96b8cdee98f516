"""Shared fixtures of the tokenizer tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    # Small convolutions on a busy 2-core machine run ~15x faster on one thread than on two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
