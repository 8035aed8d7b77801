"""Plain PyTorch references of the package's kernels, the one truth that the tests and the
benchmarks (`bench/`) both compare against. Importable as `tests.references` (pyproject sets
pytest's `pythonpath` to the repository root)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

__all__ = [
    "ALL_DTYPES",
    "check_vector_path",
    "eager_and_compiled_mix",
    "reference_cat_gather",
    "reference_channel_gather",
    "reference_penalty",
    "reference_shuffle_mix",
    "run_with_cpu_capability",
    "to_layout",
]

# Every element size and kind the byte-moving gather ops must handle (1 to 16 bytes).
ALL_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.complex128,
]


def reference_channel_gather(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """out[:, c] = x[:, perm[c]] by plain indexing."""
    return x[:, perm]


def reference_cat_gather(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """out[:, c] = cat([a, b], 1)[:, perm[c]]: the concat, then plain indexing."""
    return torch.cat([a, b], 1)[:, perm]


def reference_penalty(M: torch.Tensor) -> torch.Tensor:
    """P(M) = sum_i (|M_i,:|_1 - |M_i,:|_2) + sum_j (|M_:,j|_1 - |M_:,j|_2), for [..., n, n]."""
    rows = M.abs().sum(-1) - torch.linalg.vector_norm(M, dim=-1)
    cols = M.abs().sum(-2) - torch.linalg.vector_norm(M, dim=-2)
    return rows.sum(-1) + cols.sum(-1)


def reference_shuffle_mix(x: torch.Tensor, M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, P(M)) with y[:, i, ...] = sum_j M[i, j] x[:, j, ...] (M cast to x's dtype)."""
    return torch.einsum("ij,nj...->ni...", M.to(x.dtype), x), reference_penalty(M)


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """x in the named layout: "contiguous", "channels_last" (4-D/5-D), or "strided" (a view
    with a stride-2 pixel dim)."""
    if layout == "channels_last":
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    if layout == "strided":
        wide = x.new_zeros(*x.shape[:-1], 2 * x.shape[-1])
        wide[..., ::2] = x
        return wide[..., ::2]
    return x.contiguous()


@torch.no_grad()
def randomize_structures_(model: torch.nn.Module, gates: bool = True) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters, a random permutation as every learned
    shuffle's matrix and (with `gates`) random gate patterns: a model whose frozen form has
    gathers wherever a trained one may have them. Returns the model in eval mode."""
    import autoshuffle_ext as asx

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.normal_()
            module.bias.normal_()
    for _, soft in asx.structures(model, asx.LearnedShuffle):
        n = soft.num_channels
        soft.weight.copy_(torch.eye(n)[torch.randperm(n)])
    if gates:
        for _, layer in asx.structures(model, asx.DGConv2d):
            layer.gates.copy_(torch.randn_like(layer.gates))
    return model.eval()


_CAPABILITIES = ["DEFAULT", "AVX2", "AVX512"]
VECTOR_PATHS = ["default", "avx2", "avx512"]


def check_vector_path(script: str, capability: str) -> None:
    """Runs `script` (which prints "ok" and ATen's capability when its checks pass) at
    `capability` in a fresh process: kernels compiled once per ISA (csrc/cpu/vectorised.h) run
    the copy that ATen's capability allows. Skips where this CPU lacks that ISA."""
    best = torch.backends.cpu.get_cpu_capability()
    if _CAPABILITIES.index(capability.upper()) > _CAPABILITIES.index(best):
        pytest.skip(f"this CPU has no {capability}")
    assert run_with_cpu_capability(script, capability) == f"ok {capability.upper()}\n"


def eager_and_compiled_mix(mix, x: torch.Tensor, M: torch.Tensor) -> tuple[tuple, tuple]:
    """((y, dx, dM) eager, (y, dx, dM) under torch.compile(fullgraph=True)) of the loss
    sum(y^2) + 0.5 P for a mixing op `mix(x, M) -> (y, P)`, each from fresh leaves."""

    def loss(x, M):
        y, p = mix(x, M)
        return (y * y).sum() + 0.5 * p, y

    results = []
    for fn in (loss, torch.compile(loss, fullgraph=True)):
        xl, Ml = x.clone().requires_grad_(), M.clone().requires_grad_()
        value, y = fn(xl, Ml)
        value.backward()
        results.append((y, xl.grad, Ml.grad))
    return results[0], results[1]


def run_with_cpu_capability(script: str, capability: str) -> str:
    """The stdout of `script` run in a fresh Python with ATEN_CPU_CAPABILITY=capability (the CPU
    kernels pick their SIMD path once per process, capped by ATen's capability); fails the test,
    with the child's stderr, if it does not exit cleanly."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# The head of a subprocess script that runs the package without its compiled library.
BLOCK_COMPILED_LIBRARY = """
import sys
import warnings

class BlockCompiledLibrary:
    def find_spec(self, name, path=None, target=None):
        if name == "autoshuffle_ext._C":
            raise ImportError("blocked by the test")
        return None

sys.meta_path.insert(0, BlockCompiledLibrary())
"""
