"""The paper's LipConvNets: their layers, one training step on the CPU (hinge loss, Adam, as the
reference code), 1-Lipschitz before and after it, freezing to plain modules that compute the
same logits, export of the frozen model, the whole-model helpers."""

import io

import pytest
import torch

import autoshuffle_ext as asx
from autoshuffle_ext.lipschitz import (
    BCOPConv2d,
    BjorckLinear,
    MaxMin,
    lipconvnet_large,
    lipconvnet_small,
    lipschitz_bound,
    margin_for_radius,
    multiclass_hinge_loss,
)


def layer_shapes(model):
    return [
        (type(m).__name__, getattr(m, "in_channels", getattr(m, "in_features", None)),
         getattr(m, "out_channels", getattr(m, "out_features", None)),
         getattr(m, "kernel_size", None), getattr(m, "stride", None))
        for m in model.children() if isinstance(m, (BCOPConv2d, BjorckLinear))
    ]  # fmt: skip


def test_small_and_large_are_the_papers_layers():
    assert layer_shapes(lipconvnet_small()) == [
        ("BCOPConv2d", 3, 16, 4, 2),
        ("BCOPConv2d", 16, 32, 4, 2),
        ("BjorckLinear", 2048, 100, None, None),
        ("BjorckLinear", 100, 10, None, None),
    ]
    assert layer_shapes(lipconvnet_large()) == [
        ("BCOPConv2d", 3, 32, 3, 1),
        ("BCOPConv2d", 32, 32, 4, 2),
        ("BCOPConv2d", 32, 64, 3, 1),
        ("BCOPConv2d", 64, 64, 4, 2),
        ("BjorckLinear", 4096, 512, None, None),
        ("BjorckLinear", 512, 512, None, None),
        ("BjorckLinear", 512, 10, None, None),
    ]
    model = lipconvnet_small(num_classes=5, in_channels=1, input_size=(28, 28))
    assert sum(isinstance(m, MaxMin) for m in model) == 3
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 5)


@pytest.mark.parametrize("build", [lipconvnet_small, lipconvnet_large])
def test_one_training_step_then_freeze(build):
    torch.manual_seed(0)
    model = build()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([3, 7])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    asx.attach_projection(opt, model)  # nothing to project; the helper accepts the layers
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = multiclass_hinge_loss(model(x), y, margin_for_radius(0.5)) + asx.penalty(model)
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert lipschitz_bound(model) == pytest.approx(1.0, abs=1e-4)
    rows = asx.structure_report(model)
    assert [r["kind"] for r in rows].count("BCOPConv2d") == (2 if build is lipconvnet_small else 4)
    assert all(r["orthogonality"] < 1e-4 for r in rows)
    model.eval()
    logits = model(x)
    frozen = asx.freeze(model).eval()
    assert not list(asx.structures(frozen))
    torch.testing.assert_close(frozen(x), logits, rtol=1e-5, atol=1e-5)


def test_frozen_small_exports_and_reloads():
    torch.manual_seed(1)
    model = lipconvnet_small().eval()
    frozen = asx.freeze(model).eval()
    x = torch.rand(3, 3, 32, 32)
    program = torch.export.export(frozen, (x,))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)


def test_first_conv_of_large_is_an_isometry_and_maxmin_keeps_gradients():
    torch.manual_seed(2)
    model = lipconvnet_large().double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    conv = model.conv1(x) - model.conv1.bias.view(1, -1, 1, 1)  # 3 -> 32: an isometry
    torch.testing.assert_close(
        conv.detach().flatten(1).norm(dim=1), x.detach().flatten(1).norm(dim=1)
    )
    out = model.act1(model.conv1(x))
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), x)
    # back through MaxMin (norm kept) and the isometry's transpose (may only shrink)
    assert 0 < float(grad.norm()) <= float(g.norm()) * (1 + 1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match=r"input_size must be a multiple of the strides"):
        lipconvnet_small(input_size=(30, 32))
    with pytest.raises(ValueError, match="num_classes must be >= 2, got 1"):
        lipconvnet_large(num_classes=1)
