"""What the doctor's tests share."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches gain nothing from more, and a shared CI machine loses much
    yield
    torch.set_num_threads(threads)
