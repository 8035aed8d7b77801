"""Setup shared by the tests (`tests/`) and the benchmarks (`bench/`).

Triton runs on CPU tensors only through its interpreter, which must be switched on before `triton`
is first imported; on a machine with a GPU the kernels run natively. Their plain PyTorch
references live in `tests/references.py`.
"""

import os
from collections.abc import Iterator

import pytest
import torch
from threadpoolctl import threadpool_limits

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch and the BLAS libraries (numpy's, scipy's) on one thread for the test, restored after:
    for many small products threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
