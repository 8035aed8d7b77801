"""Every Triton kernel configuration compiled for real GPU targets, on a machine with no GPU.

`launches.recorded_launches()` gives each configuration that the launchers choose; this module
compiles each one with triton's own pipeline (ttir, ttgir, llir, ptx, then ptxas to a cubin) for
the targets in `TARGETS` and reads what a GPU engineer checks first from ptxas' report and
triton's metadata: registers per thread, spill stores and loads, stack frame, shared memory per
block. Against each GPU's limits it names the problems that would stop or slow a launch (a spill,
more shared memory than a block may have, no block fitting on an SM) and the occupancy the
registers and shared memory allow.

    python -m autoshuffle_ext.kernels.gpu_compile               # table, exit 1 on a problem
    python -m autoshuffle_ext.kernels.gpu_compile --arch 90 --json out.json --markdown
    python -m autoshuffle_ext.kernels.gpu_compile --device  # on a GPU: driver's figures beside

Run it with TRITON_INTERPRET unset (the interpreter replaces `@triton.jit` functions). Compiles
run in a process pool; results are cached under `cache_dir()` by triton's own cache key (the
kernel sources with their helpers, the target, the options, triton's and ptxas' versions), so an
unchanged kernel is not compiled twice. `AUTOSHUFFLE_GPU_COMPILE_CACHE=off` switches the cache
off. Figures are those of the compiler, not measurements on a GPU; what a launch specialises by
value (an integer argument equal to 1 or divisible by 16) is that of the recorded launch.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["TARGETS", "Gpu", "Result", "cache_dir", "compile_all", "main"]


@dataclass(frozen=True)
class Gpu:
    """Per-SM and per-block limits of one GPU (CUDA C Programming Guide, compute capabilities)."""

    name: str
    capability: int
    sms: int
    regs_per_sm: int = 65536
    regs_per_thread: int = 255
    warps_per_sm: int = 64
    blocks_per_sm: int = 32
    smem_per_sm: int = 0  # bytes, shared memory carve-out at its largest
    smem_per_block: int = 0  # bytes, the opt-in maximum of one block
    smem_reserved: int = 1024  # bytes the driver reserves per block (sm_80 and later)


TARGETS = {
    80: Gpu("A100 (sm_80)", 80, sms=108, smem_per_sm=164 * 1024, smem_per_block=163 * 1024),
    90: Gpu("H100 SXM (sm_90)", 90, sms=132, smem_per_sm=228 * 1024, smem_per_block=227 * 1024),
}


@dataclass
class Result:
    """One configuration compiled for one target."""

    arch: int
    kernel: str
    label: str
    source: str  # the launcher call that chose it
    constexprs: dict
    dtypes: list
    num_warps: int = 0
    num_stages: int = 0
    regs: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    shared: int = 0  # bytes per block: triton's dynamic shared memory + ptxas' static
    compile_s: float = 0.0
    cached: bool = False
    error: str = ""
    problems: list = field(default_factory=list)
    blocks_per_sm: int = 0
    occupancy: float = 0.0  # resident warps / the SM's maximum

    def check(self, gpu: Gpu) -> None:
        """Fills blocks_per_sm, occupancy and problems against the limits of `gpu`."""
        self.problems = []
        if self.error:
            self.problems.append(f"compile error: {self.error}")
            return
        if self.spill_stores or self.spill_loads:
            self.problems.append(
                f"spills: {self.spill_stores} bytes stored, {self.spill_loads} bytes loaded "
                f"per thread ({self.regs} registers)"
            )
        if self.shared > gpu.smem_per_block:
            self.problems.append(
                f"cannot launch: {self.shared} bytes of shared memory per block, "
                f"{gpu.name} allows {gpu.smem_per_block}"
            )
        threads = self.num_warps * 32
        if threads > 1024 or self.regs > gpu.regs_per_thread:
            self.problems.append(f"cannot launch: {threads} threads of {self.regs} registers")
        self.blocks_per_sm = blocks_per_sm(gpu, self.num_warps, self.regs, self.shared)
        if self.blocks_per_sm == 0 and not self.problems:
            self.problems.append("cannot launch: no block fits on one SM")
        self.occupancy = self.blocks_per_sm * self.num_warps / gpu.warps_per_sm


def blocks_per_sm(gpu: Gpu, num_warps: int, regs: int, shared: int) -> int:
    """Resident blocks per SM allowed by warps, registers and shared memory (the CUDA occupancy
    calculator's rules: registers allocated per warp in units of 256, shared memory in units of
    128 bytes plus the per-block reservation)."""
    by_warps = gpu.warps_per_sm // num_warps
    regs_per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = (gpu.regs_per_sm // regs_per_warp) // num_warps
    smem = math.ceil((shared + gpu.smem_reserved) / 128) * 128
    by_smem = gpu.smem_per_sm // smem
    return min(by_warps, by_regs, by_smem, gpu.blocks_per_sm)


def cache_dir() -> Path:
    """Where compile results are cached (XDG_CACHE_HOME, else ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autoshuffle_ext" / "gpu-compile"


_PTXAS = {
    "regs": re.compile(r"Used (\d+) registers"),
    "spills": re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "smem": re.compile(r"(\d+) bytes smem"),
}


def _job(
    module: str,
    kernel: str,
    signature: dict,
    constexprs: dict,
    attrs: dict,
    options: dict,
    capability: int,
) -> dict:
    """Compiles one configuration (in a pool worker): resources from ptxas' verbose report."""
    import importlib

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(module), kernel)
    start = time.perf_counter()
    log = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        # A private triton cache: every compile here runs ptxas, whose report is read.
        knobs.cache.dir = tmp
        knobs.nvidia.dump_ptxas_log = True
        try:
            with contextlib.redirect_stdout(log), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = triton.compile(
                    ASTSource(fn, signature, constexprs, attrs),
                    target=GPUTarget("cuda", capability, 32),
                    options=options,
                )
        except Exception as e:  # a compile error is a result, reported per configuration
            return {"error": compile_error(e), "compile_s": time.perf_counter() - start}
    text = log.getvalue()
    out = {"compile_s": time.perf_counter() - start}
    regs = _PTXAS["regs"].search(text)
    spills = _PTXAS["spills"].search(text)
    if not regs or not spills:
        return {**out, "error": f"no ptxas report in the compile output: {text[-500:]!r}"}
    stack = _PTXAS["stack"].search(text)
    smem = _PTXAS["smem"].search(text)
    md = compiled.metadata
    out.update(
        regs=int(regs.group(1)),
        spill_stores=int(spills.group(1)),
        spill_loads=int(spills.group(2)),
        stack=int(stack.group(1)) if stack else 0,
        shared=int(md.shared) + (int(smem.group(1)) if smem else 0),
        num_warps=int(md.num_warps),
        num_stages=int(md.num_stages),
    )
    return out


def compile_error(e: BaseException) -> str:
    """One line for a compile error: the innermost cause (the compiler's own message) and the
    source line that triton points at (its `^` marker) in the innermost jit function."""
    chain = [e]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(nxt)
    root = chain[-1]
    where = ""
    for err in reversed(chain):
        lines = str(err).splitlines()
        marks = [k for k, line in enumerate(lines) if line.strip() == "^"]
        if marks and marks[-1] > 0:
            where = f" at `{lines[marks[-1] - 1].strip()}`"
            break
    message = " ".join(str(root).split()) or type(root).__name__
    return f"{type(root).__name__}: {message[:1500]}{where}"


def _prepare(launch, capability: int) -> tuple[str, dict]:
    """(cache key, job arguments) of one recorded launch for one target, bound as
    JITFunction.run binds a launch."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.cache import get_cache_key
    from triton.runtime.jit import get_cache_invalidating_env_vars

    from .launches import bind

    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    fn = launch.kernel
    bound, spec, opts = bind(launch, target)
    kwargs = dict(launch.kwargs)
    kwargs.setdefault("debug", False)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
    key = get_cache_key(
        ASTSource(fn, signature, constexprs, attrs),
        backend,
        options,
        get_cache_invalidating_env_vars(),
    )
    job = {
        "module": fn.fn.__module__,
        "kernel": fn.fn.__name__,
        "signature": signature,
        "constexprs": constexprs,
        "attrs": attrs,
        "options": options.__dict__,
        "capability": capability,
    }
    return key, job


def compile_all(
    archs=(80, 90), workers: int | None = None, use_cache: bool = True, progress=None
) -> list[Result]:
    """Every recorded launch configuration compiled for every arch in `archs`, checked against
    TARGETS[arch]. `workers` processes (default: the CPU count)."""
    import hashlib

    from .launches import recorded_launches

    launches = recorded_launches()
    results: list[Result] = []
    pending = []
    store = cache_dir()
    for capability in archs:
        for launch in launches:
            key, job = _prepare(launch, capability)
            digest = hashlib.sha256(key.encode()).hexdigest()
            result = Result(
                capability,
                launch.name,
                launch.label(),
                launch.source,
                dict(launch.constexprs),
                list(launch.dtypes),
            )
            results.append(result)
            path = store / f"{digest}.json"
            if use_cache and path.exists():
                with contextlib.suppress(ValueError, OSError):
                    _fill(result, json.loads(path.read_text()), cached=True)
                    continue
            pending.append((result, job, path))
    workers = workers or os.cpu_count() or 1
    if pending:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(_job, **job): (result, path) for result, job, path in pending}
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                result, path = futures[future]
                out = future.result()
                _fill(result, out, cached=False)
                if use_cache and not out.get("error"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(out))
                    tmp.replace(path)
                if progress:
                    progress(done, len(pending), result)
    for result in results:
        result.check(TARGETS[result.arch])
    return results


def _fill(result: Result, out: dict, cached: bool) -> None:
    for name, value in out.items():
        setattr(result, name, value)
    result.cached = cached


def table(results: list[Result]) -> str:
    """A Markdown table, one row per configuration and arch."""
    head = (
        "| arch | kernel | dtypes (pointers) | constexprs | warps | regs | spills (st/ld B) | "
        "shared B | blocks/SM | occupancy | problems |"
    )
    rows = [head, "|" + " --- |" * 11]
    for r in sorted(results, key=lambda r: (r.arch, r.kernel, r.label)):
        consts = " ".join(f"{k}={v}" for k, v in r.constexprs.items())
        rows.append(
            f"| sm_{r.arch} | {r.kernel} | {'/'.join(r.dtypes)} | {consts} | {r.num_warps} | "
            f"{r.regs} | {r.spill_stores}/{r.spill_loads} | {r.shared} | {r.blocks_per_sm} | "
            f"{r.occupancy:.0%} | {'; '.join(r.problems)} |"
        )
    return "\n".join(rows)


def summary(results: list[Result]) -> str:
    """Per kernel and arch: configurations, register range, most shared memory, lowest
    occupancy, problems."""
    groups: dict[tuple, list[Result]] = {}
    for r in results:
        groups.setdefault((r.arch, r.kernel), []).append(r)
    lines = [
        "| arch | kernel | configs | registers | spills | shared B (max) | occupancy (min) "
        "| problems |",
        "|" + " --- |" * 8,
    ]
    for (arch, kernel), rs in sorted(groups.items()):
        ok = [r for r in rs if not r.error]
        regs = f"{min(r.regs for r in ok)}-{max(r.regs for r in ok)}" if ok else "-"
        spills = sum(1 for r in ok if r.spill_stores or r.spill_loads)
        shared = max((r.shared for r in ok), default=0)
        occ = min((r.occupancy for r in ok), default=0.0)
        problems = sum(1 for r in rs if r.problems)
        lines.append(
            f"| sm_{arch} | {kernel} | {len(rs)} | {regs} | {spills} configs | {shared} "
            f"| {occ:.0%} | {problems} |"
        )
    return "\n".join(lines)


def run_on_device(channels=(24, 116, 232, 1024)) -> None:
    """Runs every launcher on the current CUDA device (each dtype pair, both memory formats, both
    float32 matmul precisions), so that the driver loads their kernels for `device_report`."""
    import torch

    from . import ell_mix, mixing, penalty, spline
    from .launches import (
        _ell_dtype_pairs,
        _matmul_precision,
        _mix_dtype_pairs,
        _penalty_dtypes,
        _spline_dtypes,
        _spline_knots,
    )

    for precision in ("highest", "high"):
        with _matmul_precision(precision):
            for C in channels:
                for dtype in _penalty_dtypes():
                    M = torch.rand(C, C, device="cuda", dtype=dtype)
                    _, row, col = penalty.penalty_forward(M)
                    penalty.penalty_backward(
                        torch.ones((), device="cuda", dtype=dtype), M, row, col
                    )
                for x_dtype, m_dtype in _mix_dtype_pairs():
                    for fmt in (torch.contiguous_format, torch.channels_last):
                        x = torch.randn(8, C, 14, 14, device="cuda", dtype=x_dtype)
                        x = x.contiguous(memory_format=fmt)
                        M = torch.rand(C, C, device="cuda", dtype=m_dtype)
                        _, p, row, col = mixing.shuffle_mix_forward(x, M, torch.empty_like(x))
                        mixing.shuffle_mix_backward(
                            x,
                            torch.ones_like(p),
                            x,
                            M,
                            row,
                            col,
                            torch.empty_like(x),
                            torch.empty_like(M),
                        )
    for C in channels:
        for dtype in _spline_dtypes():
            for fmt in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(8, C, 14, 14, device="cuda", dtype=dtype)
                x = x.contiguous(memory_format=fmt)
                c = torch.randn(C, 51, device="cuda")
                spline.spline_forward(x, c, 0.1, torch.empty_like(x))
                for K in _spline_knots():
                    c = torch.randn(C, K, device="cuda")
                    spline.spline_backward(x, x, c, 0.1, torch.empty_like(x), True)
        for x_dtype, a_dtype in _ell_dtype_pairs():
            for fmt in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(8, C, 14, 14, device="cuda", dtype=x_dtype)
                x = x.contiguous(memory_format=fmt)
                M = torch.rand(C, C, device="cuda", dtype=a_dtype)
                index = torch.randint(-1, C, (C, 3), device="cuda")
                ell_mix.ell_mix_forward(x, M, index, torch.empty_like(x))
                ell_mix.ell_mix_forward(x, M.t(), index, torch.empty_like(x))
    torch.cuda.synchronize()


def device_report(results: list[Result]) -> list[str]:
    """On a CUDA machine, after the kernels ran: every kernel the driver loaded, its registers and
    spills as the driver reports them next to the compile-time figures of the same configuration
    (kernel, constexprs, pointer dtypes) and the occupancy both allow on this device. Returns the
    problems: a spill. Registers that differ from the compile-time figure are printed as notes:
    the shapes run may specialise differently (an argument equal to 1, divisible by 16)."""
    import torch

    from .launches import KERNEL_MODULES, kernels_of

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    gpu = Gpu(
        props.name,
        props.major * 10 + props.minor,
        sms=props.multi_processor_count,
        regs_per_sm=props.regs_per_multiprocessor,
        warps_per_sm=props.max_threads_per_multi_processor // 32,
        smem_per_sm=props.shared_memory_per_multiprocessor,
        smem_per_block=props.shared_memory_per_block_optin,
    )
    expected = {(r.kernel, tuple(r.constexprs.items()), tuple(r.dtypes)): r for r in results}
    problems, notes = [], []
    print(
        f"| kernel | dtypes | constexprs | warps | regs (driver / compile) | spills | shared B | "
        f"blocks/SM | occupancy |\n|{' --- |' * 9}"
    )
    for module in KERNEL_MODULES:
        for name, fn in kernels_of(module).items():
            for cache in (c[0] for c in fn.device_caches.values()):
                for kernel in cache.values():
                    if getattr(kernel, "n_regs", None) is None or kernel.src is None:
                        continue
                    names = fn.arg_names
                    consts = {
                        names[k[0]]: v
                        for k, v in kernel.src.constants.items()
                        if fn.params[k[0]].is_constexpr
                    }
                    dtypes = tuple(
                        t[1:]
                        for t in kernel.src.signature.values()
                        if isinstance(t, str) and t.startswith("*")
                    )
                    warps = kernel.metadata.num_warps
                    shared = kernel.metadata.shared
                    blocks = blocks_per_sm(gpu, warps, kernel.n_regs, shared)
                    ref = expected.get((name, tuple(consts.items()), dtypes))
                    ref_regs = ref.regs if ref else "-"
                    print(
                        f"| {name} | {'/'.join(dtypes)} | "
                        f"{' '.join(f'{k}={v}' for k, v in consts.items())} | {warps} | "
                        f"{kernel.n_regs} / {ref_regs} | {kernel.n_spills} | {shared} | {blocks} "
                        f"| {blocks * warps / gpu.warps_per_sm:.0%} |"
                    )
                    if kernel.n_spills:
                        problems.append(f"{name} {consts}: {kernel.n_spills} spills on {gpu.name}")
                    if ref and kernel.n_regs != ref.regs:
                        notes.append(
                            f"NOTE {name} {consts} {'/'.join(dtypes)}: {kernel.n_regs} registers "
                            f"on the device, {ref.regs} at compile time"
                        )
    print("\n".join(notes))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch",
        type=int,
        nargs="+",
        default=sorted(TARGETS),
        choices=sorted(TARGETS),
        help="compute capabilities (default: all)",
    )
    parser.add_argument("--workers", type=int, default=None, help="compile processes")
    parser.add_argument("--json", type=Path, help="write every result to this file")
    parser.add_argument("--markdown", action="store_true", help="print every configuration")
    parser.add_argument("--no-cache", action="store_true", help="compile everything again")
    parser.add_argument(
        "--device",
        action="store_true",
        help="on a CUDA machine: compile for its arch, run the kernels, and compare "
        "the driver's registers and spills with the compile-time figures",
    )
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("TRITON_INTERPRET=1 replaces the kernels by the interpreter: unset it")
    use_cache = not args.no_cache and os.environ.get("AUTOSHUFFLE_GPU_COMPILE_CACHE") != "off"
    if args.device:
        import torch

        major, minor = torch.cuda.get_device_capability()
        args.arch = [a for a in (major * 10 + minor,) if a in TARGETS]
        if not args.arch:
            print(f"sm_{major}{minor} has no limits in TARGETS: no compile-time figures to compare")
    start = time.perf_counter()
    results = compile_all(tuple(args.arch), args.workers, use_cache)
    elapsed = time.perf_counter() - start
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(table(results) if args.markdown else summary(results))
    compiled = sum(1 for r in results if not r.cached)
    print(
        f"\n{len(results)} configurations, {compiled} compiled, {len(results) - compiled} from "
        f"the cache, {elapsed:.0f} s"
    )
    bad = [r for r in results if r.problems]
    for r in bad:
        print(f"FAIL sm_{r.arch} {r.label}: {'; '.join(r.problems)}\n    chosen by {r.source}")
    if args.device:
        run_on_device()
        print("\nKernels loaded by the driver on this GPU:\n")
        device_problems = device_report(results)
        for problem in device_problems:
            print(f"FAIL on the device: {problem}")
        bad += device_problems
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
