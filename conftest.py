"""Setup shared by the tests (`tests/`) and the benchmarks (`bench/`).

Triton runs on CPU tensors only through its interpreter, which must be switched on before `triton`
is first imported; on a machine with a GPU the kernels run natively. Their plain PyTorch
references live in `tests/references.py`.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
