"""Every CUDA source (csrc/cuda/*.cu) compiled by nvcc for sm_80 and sm_90, on a machine with no GPU
and a CPU build of torch, and linked with the rest of the extension.

* compile: torch's CUDAExtension flags plus setup.py's, one nvcc run per file for both targets,
  warnings as errors (nvcc's and the host compiler's -Wall -Wextra); the .cu files use only
  c10's CUDA API and the CUDA runtime, so the CPU wheel's headers suffice
  (C10_CUDA_NO_CMAKE_CONFIGURE_FILE skips the one generated header, cuda_cmake_macros.h, which
  only sets Windows export macros);
* kernels: ptxas' report of every instantiated kernel: no spill, no stack frame;
* link: the objects linked into one shared library with the CPU extension as built
  (autoshuffle_ext/_C.abi3.so: csrc/*.cpp, csrc/cpu/*.cpp), libtorch, libc10 and libcudart;
  `ldd` resolves every library it needs, and each undefined symbol is defined by one of them, or
  is a c10::cuda function that the torch headers declare as exported by libc10_cuda.so.

Not checked: libc10_cuda.so and libtorch_cuda.so themselves (absent from a CPU torch), so the
c10::cuda symbols are checked against the headers' declarations, not a binary; and nothing runs.
Skipped, with the reason, where nvcc or the built extension is missing.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension as cpp_extension

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
ARCHS = (80, 90)
# setup.py's nvcc arguments for the CUDA build of the extension.
SETUP_NVCC = ["-O3", "--use_fast_math"]
CHECKS = [
    "--Werror", "all-warnings",
    "-Xcompiler", "-Wall,-Wextra,-Wno-unused-parameter,-Werror",
    "-Xptxas", "-v",
]  # fmt: skip


def find_nvcc() -> str | None:
    """nvcc on PATH, under CUDA_HOME / CUDA_PATH, /usr/local/cuda, or from PyPI's nvidia-cuda-nvcc
    wheel in this environment."""
    candidates = [shutil.which("nvcc")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates.append("/usr/local/cuda/bin/nvcc")
    candidates += [
        str(p) for p in Path(sysconfig.get_paths()["purelib"]).glob("nvidia/cu*/bin/nvcc")
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def cudart_dirs(nvcc: str) -> list[str]:
    """The library folders nvcc itself links from (its LIBRARIES line), where libcudart.so is."""
    dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True)  # fmt: skip
    line = next((x for x in dry.stderr.splitlines() if "LIBRARIES=" in x), "")
    dirs = re.findall(r'-L"?([^"\s]+)"?', line)
    return [d for d in dirs if (Path(d) / "libcudart.so").exists()]


def nvcc_command(nvcc: str, source: Path, obj: Path) -> list[str]:
    torch_includes = cpp_extension.include_paths()
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [nvcc, "-c", str(source), "-o", str(obj), "-std=c++17", "-Xcompiler", "-fPIC",
           *cpp_extension.COMMON_NVCC_FLAGS, *SETUP_NVCC, "-DTORCH_API_INCLUDE_EXTENSION_H",
           "-DTORCH_EXTENSION_NAME=_C", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
           "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", f"-I{ROOT / 'csrc'}"]  # fmt: skip
    for inc in torch_includes:
        cmd += ["-isystem", inc]
    for arch in ARCHS:
        cmd += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    return cmd + CHECKS


@pytest.fixture(scope="module")
def nvcc() -> str:
    found = find_nvcc()
    if found is None:
        pytest.skip("nvcc not found (PATH, CUDA_HOME, /usr/local/cuda, nvidia-cuda-nvcc): the CUDA "
                    "sources are not compiled on this machine")  # fmt: skip
    return found


@pytest.fixture(scope="module")
def objects(nvcc, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """{source name: nvcc's result}, every .cu compiled (in parallel) to <tmp>/<name>.o."""
    out = tmp_path_factory.mktemp("cuda")

    def build(source: Path) -> tuple[str, subprocess.CompletedProcess]:
        obj = out / (source.stem + ".o")
        proc = subprocess.run(nvcc_command(nvcc, source, obj), capture_output=True, text=True,
                              cwd=ROOT, timeout=1200)  # fmt: skip
        proc.obj = obj  # type: ignore[attr-defined]
        return source.name, proc

    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return dict(pool.map(build, SOURCES))


def test_there_are_cuda_sources():
    assert SOURCES, "csrc/cuda/*.cu: none found"


@pytest.mark.parametrize("source", [s.name for s in SOURCES])
def test_cuda_source_compiles_for_sm80_and_sm90(objects, source):
    proc = objects[source]
    assert proc.returncode == 0, f"nvcc failed on {source}:\n{proc.stderr[-6000:]}"
    assert proc.obj.exists()


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for 'sm_(\d+)\w*'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def ptxas_report(stderr: str) -> list[dict]:
    """[{kernel (demangled), arch, regs, stack, spill_stores, spill_loads}] from `ptxas -v`."""
    rows, current = [], None
    for line in stderr.splitlines():
        if m := _ENTRY.search(line):
            current = {"kernel": m.group(1), "arch": int(m.group(2))}
            rows.append(current)
        elif current and (m := _PROPS.search(line)):
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                           spill_loads=int(m.group(3)))  # fmt: skip
        elif current and (m := _REGS.search(line)):
            current["regs"] = int(m.group(1))
    names = subprocess.run(["c++filt"], input="\n".join(r["kernel"] for r in rows),
                           capture_output=True, text=True).stdout.splitlines()  # fmt: skip
    for row, name in zip(rows, names, strict=True):
        row["kernel"] = re.sub(r"\(anonymous namespace\)::|autoshuffle_ext::", "", name)
    return rows


@pytest.mark.parametrize("source", [s.name for s in SOURCES])
def test_cuda_kernels_do_not_spill(objects, source):
    proc = objects[source]
    if proc.returncode != 0:
        pytest.fail(f"{source} did not compile")
    rows = ptxas_report(proc.stderr)
    assert {r["arch"] for r in rows} == set(ARCHS), proc.stderr[-3000:]
    bad = [r for r in rows if r.get("spill_stores") or r.get("spill_loads") or r.get("stack")
           or "regs" not in r]  # fmt: skip
    assert not bad, "\n".join(map(str, bad))


def _dynamic_symbols(lib: str, *flags: str) -> set[str]:
    out = subprocess.run(["nm", "-D", *flags, lib], capture_output=True, text=True, check=True)
    return {line.split()[-1].split("@")[0] for line in out.stdout.splitlines() if line.strip()}


def _c10_cuda_exports() -> str:
    """The text of the torch headers that declare libc10_cuda's exported API."""
    include = Path(cpp_extension.include_paths()[0]) / "c10" / "cuda"
    return "\n".join(p.read_text() for p in include.rglob("*.h"))


def declared_by_c10_cuda(name: str, headers: str) -> bool:
    """Whether `name` (demangled) is c10::cuda API that the headers mark exported (C10_CUDA_API):
    a function or variable declared with it, or a member of a class declared with it."""
    m = re.match(r"c10::cuda::((?:\w+::)*)(\w+)(\(|$)", name)
    if not m:
        return False
    owner = m.group(1).rstrip(":").split("::")[-1]
    if re.search(rf"C10_CUDA_API[^;{{}}]*\b{m.group(2)}\b", headers):
        return True
    return bool(owner) and re.search(rf"(class|struct) C10_CUDA_API {owner}\b", headers) is not None


def test_cuda_objects_link_with_the_extension(objects, nvcc, tmp_path):
    if any(p.returncode for p in objects.values()):
        pytest.fail("a CUDA source did not compile")
    import autoshuffle_ext

    ext = next(Path(autoshuffle_ext.__file__).parent.glob("_C*.so"), None)
    if ext is None:
        pytest.skip("the extension (autoshuffle_ext/_C*.so) is not built: nothing to link with")
    cuda_libs = cudart_dirs(nvcc)
    if not cuda_libs:
        pytest.fail(f"no libcudart.so where {nvcc} links from: the link cannot be checked")
    cuda_lib = cuda_libs[0]
    torch_lib = Path(cpp_extension.library_paths()[0])
    lib = tmp_path / "libautoshuffle_ext_cuda.so"
    # --no-as-needed: every library stays a dependency, so that ldd checks them all.
    cmd = ["g++", "-shared", "-o", str(lib), *(str(p.obj) for p in objects.values()),
           "-Wl,--no-as-needed", str(ext), f"-L{torch_lib}", "-lc10", "-ltorch", "-ltorch_cpu",
           f"-L{cuda_lib}", "-lcudart", "-Wl,--as-needed",
           f"-Wl,-rpath,{torch_lib}:{cuda_lib}:{ext.parent}"]  # fmt: skip
    link = subprocess.run(cmd, capture_output=True, text=True)
    assert link.returncode == 0, link.stderr[-4000:]

    ldd = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, check=True).stdout
    missing_libs = [line.strip() for line in ldd.splitlines() if "not found" in line]
    assert not missing_libs, missing_libs
    libs = [m.group(1) for m in re.finditer(r"=> (/\S+)", ldd)]
    provided: set[str] = set()
    for dep in libs:
        provided |= _dynamic_symbols(dep, "--defined-only")
    nm = ["nm", "-D", "--undefined-only", str(lib)]
    listing = subprocess.run(nm, capture_output=True, text=True, check=True).stdout
    undefined = {
        line.split()[-1].split("@")[0] for line in listing.splitlines() if line.split()[0] == "U"
    }
    unresolved = sorted(undefined - provided)
    demangled = subprocess.run(["c++filt"], input="\n".join(unresolved), capture_output=True,
                               text=True).stdout.splitlines()  # fmt: skip
    headers = _c10_cuda_exports()
    not_declared = [
        f"{name} ({mangled})"
        for mangled, name in zip(unresolved, demangled, strict=True)
        if not declared_by_c10_cuda(name, headers)
    ]
    assert not not_declared, (
        "undefined symbols that neither libtorch, libc10, libcudart, the CPU extension nor "
        "libc10_cuda's declared API provide:\n" + "\n".join(not_declared)
    )
    # The .cu objects need nothing of libtorch_cuda (whose API the CPU torch lacks entirely).
    assert not [n for n in demangled if n.startswith("at::cuda::")], demangled
