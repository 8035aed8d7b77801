"""The CPU gathers' paths, seen and forced: every path of `channel_gather` and `cat_gather`
(csrc/cpu/gather_plan.h) run through the public ops with the path forced, for every element size,
against plain indexing; forced paths that cannot take an input raise, naming the path and why;
`gather_path` / `cat_gather_path` report the path a call takes; AUTOSHUFFLE_GATHER_PATH forces
the same way as `force_gather_path`.

What each path needs is written down here on its own (`SPEC`), not read from the library, so a
planner that refuses an input it should take, or takes one it should refuse, fails.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import autoshuffle_ext as asx
from tests.references import reference_cat_gather, reference_channel_gather

pytestmark = pytest.mark.skipif(
    not asx.extension_available(), reason="the paths are the compiled library's"
)

GATHER = torch.ops.autoshuffle_ext.channel_gather.default
CAT_GATHER = torch.ops.autoshuffle_ext.cat_gather.default

# One dtype per element size: the kernels move bytes, so the size is all that picks a path.
DTYPE_OF_SIZE = {
    1: torch.uint8,
    2: torch.bfloat16,
    4: torch.float32,
    8: torch.float64,
    16: torch.complex128,
}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


_FLAGS = _cpu_flags()
CPU_HAS = {
    None: True,
    "avx2": "avx2" in _FLAGS,
    "avx512": {"avx512f", "avx512vl", "avx512bw"} <= _FLAGS,
}

# path -> (family, instruction set, element sizes (None: any), what the perm must be)
SPEC = {
    "planes": ("planes", None, None, "any"),
    "planes_avx2": ("planes", "avx2", None, "any"),
    "planes_avx512": ("planes", "avx512", None, "any"),
    "pixels": ("pixels", None, None, "any"),
    "pixels_gather_avx2": ("pixels", "avx2", {4, 8}, "any"),
    "pixels_gather_avx512": ("pixels", "avx512", {1, 2, 4, 8}, "any"),
    "pixels_transpose_avx2": ("pixels", "avx2", {2, 4}, "any"),
    "pixels_permute_avx512": ("pixels", "avx512", {4}, "any"),  # and at most 8 registers
    "near_shuffle_avx2": ("pixels", "avx2", {4}, "near 2-group shuffle"),
    "near_shuffle_avx512": ("pixels", "avx512", {2, 4}, "near shuffle"),
}
PATHS = list(SPEC)


def applies(path: str, element_size: int) -> bool:
    """Whether `path` takes the inputs of `_inputs` (their layout matching its family, their perm
    near the 2-group shuffle for the near-shuffle paths, 58 + 58 channels) on this CPU."""
    _, isa, sizes, _ = SPEC[path]
    return CPU_HAS[isa] and (sizes is None or element_size in sizes)


def near_shuffle_perm(c: int, groups: int, moved: int, seed: int) -> torch.Tensor:
    """F.channel_shuffle's perm with the entries at `moved` random positions rotated by one."""
    perm = asx.fixed_shuffle_perm(c, groups)
    at = torch.randperm(c, generator=torch.Generator().manual_seed(seed))[:moved]
    perm[at] = perm[at.roll(1)]
    return perm


def _inputs(path: str, element_size: int, op: str, seed: int = 0):
    """(args, reference) for `op` in the layout of `path`'s family: 116 channels (58 + 58 for
    cat_gather, the second input a channel slice read in place), a perm 3 channels from the
    2-group shuffle for the near-shuffle paths, a random one otherwise."""
    family = SPEC[path][0]
    g = torch.Generator().manual_seed(seed)
    dtype = DTYPE_OF_SIZE[element_size]
    fmt = torch.contiguous_format if family == "planes" else torch.channels_last
    x = (torch.randn(2, 116, 3, 5, generator=g) * 50).to(dtype).contiguous(memory_format=fmt)
    if SPEC[path][3] == "any":
        perm = torch.randperm(116, generator=g)
    else:
        perm = near_shuffle_perm(116, 2, 3, seed)
    if op == "channel_gather":
        return (x, perm), reference_channel_gather(x, perm)
    a, b = x[:, :58], x[:, 58:]
    return (a, b, perm), reference_cat_gather(a, b, perm)


def _run(op: str, args):
    return GATHER(*args) if op == "channel_gather" else CAT_GATHER(*args)


def _query(op: str, args) -> str:
    return asx.ops.gather_path(*args) if op == "channel_gather" else asx.ops.cat_gather_path(*args)


def test_the_spec_names_every_path():
    assert asx.ops.gather_path_names() == PATHS


@pytest.mark.parametrize("element_size", list(DTYPE_OF_SIZE))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("op", ["channel_gather", "cat_gather"])
def test_every_path_forced_through_the_op(op, path, element_size):
    args, expected = _inputs(path, element_size, op)
    with asx.ops.force_gather_path(path):
        if applies(path, element_size):
            assert _query(op, args) == path
            assert torch.equal(_run(op, args), expected)
        else:
            with pytest.raises(ValueError, match=f"forced gather path does not apply.*{path}"):
                _run(op, args)
            with pytest.raises(ValueError, match=path):
                _query(op, args)


@pytest.mark.parametrize("path", [p for p in PATHS if SPEC[p][0] == "pixels"])
@pytest.mark.parametrize("op", ["channel_gather", "cat_gather"])
def test_pixel_paths_on_odd_shapes(op, path):
    # Pixel counts around the tiles (4 and 8 pixels), channels around the vectors and blocks, a
    # batch of several images (row cursors across images), 2-D [N, C] inputs; 4-byte elements.
    if not applies(path, 4):
        pytest.skip(f"{path}: not on this CPU")
    g = torch.Generator().manual_seed(7)
    cases = [((3, 32, 1, 3), 16), ((2, 48, 3, 3), 24), ((5, 16), 8), ((1, 8, 2, 9), 4)]
    if path != "pixels_permute_avx512":
        cases.append(((2, 240, 3, 3), 120))
    for shape, ca in cases:
        c = shape[1]
        x = torch.randn(shape, generator=g)
        if len(shape) == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        near = SPEC[path][3] != "any"
        moved = 2 if c >= 16 else 0  # at most c / 8
        perm = near_shuffle_perm(c, 2, moved, c) if near else torch.randperm(c, generator=g)
        with asx.ops.force_gather_path(path):
            if op == "channel_gather":
                assert torch.equal(GATHER(x, perm), x[:, perm]), shape
            else:
                a, b = x[:, :ca], x[:, ca:]
                assert torch.equal(CAT_GATHER(a, b, perm), torch.cat([a, b], 1)[:, perm]), shape


def test_a_forced_path_of_the_other_layout_raises():
    x = torch.randn(2, 8, 3, 3)
    perm = torch.randperm(8)
    with asx.ops.force_gather_path("pixels"):
        with pytest.raises(ValueError, match="pixels: it gathers pixel rows"):
            asx.channel_gather(x, perm)
    with asx.ops.force_gather_path("planes"):
        with pytest.raises(ValueError, match="planes: it copies planes"):
            asx.channel_gather(x.contiguous(memory_format=torch.channels_last), perm)


@pytest.mark.skipif(not CPU_HAS["avx512"], reason="needs AVX-512")
def test_forced_paths_that_do_not_fit_raise():
    x = torch.randn(1, 129, 2, 2).contiguous(memory_format=torch.channels_last)
    with asx.ops.force_gather_path("pixels_permute_avx512"):
        with pytest.raises(ValueError, match=r"\(129 \+ 0\) do not fit in 8 AVX-512 registers"):
            asx.channel_gather(x, torch.randperm(129))
        a = torch.randn(1, 116, 2, 2).contiguous(memory_format=torch.channels_last)
        with pytest.raises(ValueError, match=r"\(116 \+ 116\) do not fit"):
            asx.cat_gather(a, a.clone(), torch.randperm(232))
    with asx.ops.force_gather_path("near_shuffle_avx512"):
        with pytest.raises(ValueError, match="away from every channel shuffle"):
            asx.channel_gather(x, torch.randperm(129))
        # The 2-group shuffle of 50 + 66 channels: its groups straddle a and b.
        a = torch.randn(1, 50, 2, 2).contiguous(memory_format=torch.channels_last)
        b = torch.randn(1, 66, 2, 2).contiguous(memory_format=torch.channels_last)
        with pytest.raises(ValueError, match="within one input"):
            asx.cat_gather(a, b, asx.fixed_shuffle_perm(116, 2))


@pytest.mark.skipif(not CPU_HAS["avx2"], reason="needs AVX2")
def test_the_avx2_near_shuffle_takes_two_groups_only():
    x = torch.randn(2, 120, 2, 3).contiguous(memory_format=torch.channels_last)
    three = asx.fixed_shuffle_perm(120, 3)
    with asx.ops.force_gather_path("near_shuffle_avx2"):
        with pytest.raises(ValueError, match="the 2-group channel shuffle"):
            asx.channel_gather(x, three)
        two = asx.fixed_shuffle_perm(120, 2)
        assert torch.equal(asx.channel_gather(x, two), torch.nn.functional.channel_shuffle(x, 2))


def test_a_list_runs_the_first_path_that_applies():
    x = torch.randn(2, 40, 3, 3).contiguous(memory_format=torch.channels_last)
    perm = torch.randperm(40)
    with asx.ops.force_gather_path("near_shuffle_avx512, planes_avx2,pixels"):
        assert asx.ops.gather_path(x, perm) == "pixels"
        assert torch.equal(asx.channel_gather(x, perm), x[:, perm])
        if CPU_HAS["avx2"]:
            assert asx.ops.gather_path(x.contiguous(), perm) == "planes_avx2"
    with asx.ops.force_gather_path("planes,planes_avx2"):
        with pytest.raises(ValueError, match="none of the forced gather paths applies"):
            asx.channel_gather(x, perm)


def test_unknown_names_raise_and_settings_nest():
    with pytest.raises(ValueError, match=r"unknown gather path 'pixel'.*pixels_gather_avx2"):
        with asx.ops.force_gather_path("pixel"):
            pass
    x = torch.randn(2, 8, 1, 3).contiguous(memory_format=torch.channels_last)
    perm = torch.randperm(8)
    automatic = asx.ops.gather_path(x, perm)
    with asx.ops.force_gather_path("pixels"):
        with asx.ops.force_gather_path("auto"):
            assert asx.ops.gather_path(x, perm) == automatic
        assert asx.ops.gather_path(x, perm) == "pixels"
    assert asx.ops.gather_path(x, perm) == automatic


def test_the_automatic_choice():
    capability = torch.backends.cpu.get_cpu_capability()
    avx512 = capability == "AVX512" and CPU_HAS["avx512"]
    avx2 = capability in ("AVX2", "AVX512") and CPU_HAS["avx2"]
    x = torch.randn(2, 116, 3, 5)
    perm = torch.randperm(116)
    planes = "planes_avx512" if avx512 else "planes_avx2" if avx2 else "planes"
    assert asx.ops.gather_path(x, perm) == planes
    assert asx.ops.cat_gather_path(x, x, torch.randperm(232)) == planes
    cl = x.contiguous(memory_format=torch.channels_last)
    near = near_shuffle_perm(116, 2, 3, 0)
    expected_near = "near_shuffle_avx512" if avx512 else "near_shuffle_avx2" if avx2 else "pixels"
    assert asx.ops.gather_path(cl, near) == expected_near
    assert asx.ops.cat_gather_path(cl[:, :58], cl[:, 58:], near) == expected_near
    if avx512:
        assert asx.ops.gather_path(cl, perm) == "pixels_permute_avx512"
    assert asx.ops.gather_path(cl.to(torch.complex128), perm) == "pixels"
    assert asx.ops.gather_path(torch.empty(0, 4, 2, 2), torch.randperm(4)) == "none"


def test_queries_check_their_arguments():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="perm must have length C"):
        asx.ops.gather_path(x, torch.randperm(3))
    with pytest.raises(ValueError, match="perm must be a permutation"):
        asx.ops.gather_path(x, torch.tensor([0, 1, 1, 2]))
    with pytest.raises(ValueError, match="b must have a's size"):
        asx.ops.cat_gather_path(x, torch.randn(2, 4, 3, 4), torch.randperm(8))


def _run_python(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


_ENV_SCRIPT = """
import torch
import autoshuffle_ext as asx
x = torch.randn(2, 116, 3, 5).contiguous(memory_format=torch.channels_last)
perm = torch.randperm(116)
print(asx.ops.gather_path(x, perm), asx.ops.cat_gather_path(x[:, :58], x[:, 58:], perm))
assert torch.equal(asx.channel_gather(x, perm), x[:, perm])
with asx.ops.force_gather_path("auto"):
    print(asx.ops.gather_path(x, perm) != "pixels")
"""


def test_the_environment_variable_forces_a_path():
    result = _run_python(_ENV_SCRIPT, AUTOSHUFFLE_GATHER_PATH="pixels")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["pixels", "pixels", str(CPU_HAS["avx2"])]


def test_the_environment_variable_is_checked():
    result = _run_python(_ENV_SCRIPT, AUTOSHUFFLE_GATHER_PATH="pixels,transpose")
    assert result.returncode != 0
    assert "AUTOSHUFFLE_GATHER_PATH=pixels,transpose: unknown gather path 'transpose'" in (
        result.stderr
    )
    result = _run_python(_ENV_SCRIPT, AUTOSHUFFLE_GATHER_PATH="planes")
    assert result.returncode != 0
    assert "forced by AUTOSHUFFLE_GATHER_PATH=planes" in result.stderr


@pytest.mark.skipif(not CPU_HAS["avx2"], reason="needs AVX2")
def test_the_automatic_choice_capped_at_avx2():
    # ATEN_CPU_CAPABILITY caps the automatic choice (not a forced one).
    script = """
import torch
import autoshuffle_ext as asx
from tests.test_gather_paths import near_shuffle_perm
x = torch.randn(2, 116, 3, 5).contiguous(memory_format=torch.channels_last)
print(asx.ops.gather_path(x.contiguous(), torch.randperm(116)))
print(asx.ops.gather_path(x, near_shuffle_perm(116, 2, 3, 0)))
print(asx.ops.gather_path(x, torch.randperm(116)))
print(asx.ops.gather_path(x.double(), torch.randperm(116)))
"""
    result = _run_python(script, ATEN_CPU_CAPABILITY="avx2")
    assert result.returncode == 0, result.stderr
    planes, near, random, doubles = result.stdout.split()
    assert (planes, near, doubles) == ("planes_avx2", "near_shuffle_avx2", "pixels_gather_avx2")
    assert random in ("pixels_transpose_avx2", "pixels_gather_avx2")  # timed once per process
