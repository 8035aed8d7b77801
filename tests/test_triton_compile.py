"""Every Triton kernel configuration compiled for sm_80 (A100) and sm_90 (H100), without a GPU.

The interpreter tests (test_triton_kernels.py) check what the kernels compute; the interpreter
accepts code that the compiler rejects. Here `autoshuffle_ext.kernels.gpu_compile` compiles every
configuration that the launchers choose (found by running them, `kernels/launches.py`) through
triton's real pipeline to a cubin, in a subprocess without TRITON_INTERPRET, and these tests fail
on a compile error, a spill, or a block that cannot launch on the GPU (shared memory, registers).
Compile results are cached by triton's cache key (`gpu_compile.cache_dir()`), so only changed
kernels are compiled again.

Not proven here: that the kernels compute the right values on a GPU, their speed, or the
specialisations of other input shapes (see the README, "GPU compile checks").
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARCHS = (80, 90)


def _triton_cuda_missing() -> str | None:
    """Why triton cannot compile for CUDA here, or None."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed: the Triton kernels are not compiled for a GPU"
    spec = importlib.util.find_spec("triton.backends.nvidia")
    if spec is None or spec.origin is None:
        return "triton has no CUDA backend (triton.backends.nvidia): kernels not compiled for a GPU"
    if not (Path(spec.origin).parent / "bin" / "ptxas").exists():
        return "triton's CUDA backend has no ptxas: the kernels cannot be compiled to cubins"
    return None


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """{'results': [...], 'output': str}: every configuration compiled for ARCHS (one run)."""
    reason = _triton_cuda_missing()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("gpu_compile") / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "autoshuffle_ext.kernels.gpu_compile", "--json", str(out),
           "--arch", *map(str, ARCHS)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    output = proc.stdout + proc.stderr
    if not out.exists():
        pytest.fail(f"gpu_compile produced no results (exit {proc.returncode}):\n{output[-4000:]}")
    return {"results": json.loads(out.read_text()), "output": output, "returncode": proc.returncode}


def _failures(results: list[dict]) -> str:
    return "\n".join(
        f"sm_{r['arch']} {r['label']}: {'; '.join(r['problems'])}\n    chosen by {r['source']}"
        for r in results
        if r["problems"]
    )


@pytest.mark.parametrize("arch", ARCHS, ids=[f"sm_{a}" for a in ARCHS])
def test_every_configuration_compiles_without_spills(compiled, arch):
    results = [r for r in compiled["results"] if r["arch"] == arch]
    assert results, f"no configuration compiled for sm_{arch}:\n{compiled['output'][-3000:]}"
    failures = _failures(results)
    assert not failures, f"{failures.count(chr(10) + '    chosen') + 1} failing on sm_{arch}:\n" + (
        failures
    )


def test_every_kernel_and_dtype_is_covered(compiled):
    """Each launchable kernel of the kernel files, in each dtype the ops send to Triton."""
    results = compiled["results"]
    kernels = {r["kernel"] for r in results}
    assert kernels == {
        "_penalty_fwd_kernel",
        "_penalty_bwd_kernel",
        "_shuffle_mix_fwd_kernel",
        "_shuffle_mix_bwd_kernel",
        "_spline_fwd_kernel",
        "_spline_bwd_kernel",
        "_ell_mix_kernel",
    }, kernels
    for kernel in kernels:
        first = {r["dtypes"][0] for r in results if r["kernel"] == kernel}
        assert first == {"fp32", "bf16", "fp16"}, (kernel, first)
    precisions = {
        r["constexprs"].get("PRECISION") for r in results if r["kernel"].startswith("_shuffle_mix")
    }
    assert precisions == {"ieee", "tf32"}
    assert compiled["returncode"] == (1 if _failures(results) else 0), compiled["output"][-2000:]
