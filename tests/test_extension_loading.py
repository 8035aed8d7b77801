"""The compiled library is the one in use, and the package still works without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import autoshuffle_ext as asx
from tests.references import BLOCK_COMPILED_LIBRARY


def test_compiled_library_is_loaded():
    # CI must exercise the C++ kernels, not the ATen fallback.
    assert asx.extension_available(), asx._extension.load_error()
    assert asx._extension.load_error() is None


def test_package_import_alone_loads_compiled_library():
    # `python -m autoshuffle_ext.demo` imports the package before anything imports torch.
    code = "import autoshuffle_ext as a; assert a.extension_available(), a._extension.load_error()"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr


_WITHOUT_C = BLOCK_COMPILED_LIBRARY + textwrap.dedent(
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch
        import autoshuffle_ext as asx
        import autoshuffle_ext.ops  # a second import must not warn again

    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in runtime]
    assert "compiled library could not be loaded" in str(runtime[0].message)
    assert not asx.extension_available()
    assert "blocked by the test" in asx._extension.load_error()

    g = torch.Generator().manual_seed(0)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 12, 5, 4, generator=g).contiguous(memory_format=fmt)
        perm = torch.randperm(12, generator=g)
        y = asx.channel_gather(x, perm)
        assert torch.equal(y, x[:, perm])
        assert y.is_contiguous(memory_format=fmt)
        out = torch.empty_like(x)
        assert torch.equal(asx.channel_gather(x, perm, out=out), x[:, perm])
    shuffle = asx.fixed_shuffle_perm(12, 3)
    assert torch.equal(asx.channel_gather(x, shuffle), torch.nn.functional.channel_shuffle(x, 3))

    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    perm = torch.randperm(6)
    assert torch.autograd.gradcheck(lambda t: asx.channel_gather(t, perm), (x,))
    try:
        asx.channel_gather(x, torch.tensor([0, 1, 2, 3, 4, 6]), validate=False)
    except IndexError as e:
        assert "perm entries must lie in [0, 6)" in str(e)
    else:
        raise AssertionError("an out-of-range entry was accepted")

    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 12, 5, 4, generator=g).contiguous(memory_format=fmt)
        b = torch.randn(3, 6, 5, 4, generator=g).contiguous(memory_format=fmt)
        perm = torch.randperm(12, generator=g)
        y = asx.cat_gather(x[:, 6:], b, perm)
        assert torch.equal(y, torch.cat([x[:, 6:], b], 1)[:, perm])
        assert y.is_contiguous(memory_format=fmt)
    a = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    perm = torch.randperm(6, generator=g)
    assert torch.autograd.gradcheck(lambda s, t: asx.cat_gather(s, t, perm), (a, b))
    try:
        asx.cat_gather(a, b, torch.tensor([0, 1, 2, 3, 4, 6]), validate=False)
    except IndexError as e:
        assert "perm entries must lie in [0, 6)" in str(e)
    else:
        raise AssertionError("an out-of-range entry was accepted")
    model = asx.models.shufflenet_v2(0.5, num_classes=3, stem="cifar", shuffle="random").eval()
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 3)
    print("fallback ok")
    """
)


def test_fallback_without_compiled_library():
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_C], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "fallback ok" in result.stdout
