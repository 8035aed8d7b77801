"""Builds autoshuffle_ext._C: the C++ ops (CPU) plus their CUDA kernels when torch has CUDA."""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def extensions():
    # Every source under csrc/ but the C++ tests: an op's new files need no edit here.
    sources = sorted(
        p for p in glob.glob("csrc/**/*.cpp", recursive=True) if not p.startswith("csrc/test/")
    )
    # OpenMP: without it at::parallel_for runs every loop on one thread. No contraction of a * b + c
    # into FMA: the kernels' AVX-512 copies (csrc/cpu/vectorised.h) then round as the baseline
    # and AVX2 copies do, so results proven on one CPU hold on the others.
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off", "-DPy_LIMITED_API=0x030A0000"]
    link = ["-fopenmp"]
    # CUDA kernels whenever torch is a CUDA build and nvcc is found (a GPU need not be present);
    # AUTOSHUFFLE_CPU_ONLY=1 skips them.
    with_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    with_cuda = with_cuda and os.environ.get("AUTOSHUFFLE_CPU_ONLY") != "1"
    if with_cuda:
        sources += sorted(glob.glob("csrc/**/*.cu", recursive=True))
        return [
            CUDAExtension(
                "autoshuffle_ext._C",
                sources,
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math"]},
                extra_link_args=link,
                py_limited_api=True,
            )
        ]
    return [
        CppExtension(
            "autoshuffle_ext._C",
            sources,
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
            py_limited_api=True,
        )
    ]


setup(
    # The Triton kernels live at the top level (kernels/) and install as autoshuffle_ext.kernels.
    packages=[
        *find_packages(include=["autoshuffle_ext*"]),
        "autoshuffle_ext.kernels",
        "autoshuffle_ext.matching.examples",  # data only: the QAPLIB-format example
    ],
    package_dir={"autoshuffle_ext.kernels": "kernels"},
    package_data={"autoshuffle_ext.matching.examples": ["*.dat"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
