"""One torch thread for a whole test module: the demo-model tests grade real images, and on a busy 2-core
machine torch's default threads make small models many times slower (OpenMP spin).  Import the fixture
into a module (``from tests.diffusion.threads import one_thread_per_module``) to apply it there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_module() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
