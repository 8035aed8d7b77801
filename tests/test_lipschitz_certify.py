"""Certification from the logits (against a per-sample loop), the hinge loss (against its
formula), lipschitz_bound (exact for linear chains, above the exact spectrum for convs, ~1 for
the LipConvNets, trained or frozen), and that no certified prediction of a LipConvNet flips under
gradient attacks inside its radius."""

import math

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.lipschitz import (
    certified_accuracy,
    certified_radius,
    certify,
    circular_conv_singular_values,
    conv2d_lipschitz_bound,
    lipconvnet_small,
    lipschitz_bound,
    margin_for_radius,
    multiclass_hinge_loss,
)


def reference_radius(logits, labels, lipschitz):
    out = []
    for i, row in enumerate(logits.tolist()):
        if labels is None:
            top, second = sorted(row, reverse=True)[:2]
            out.append((top - second) / (math.sqrt(2) * lipschitz))
        else:
            y = int(labels[i])
            best_other = max(v for j, v in enumerate(row) if j != y)
            out.append(max(0.0, row[y] - best_other) / (math.sqrt(2) * lipschitz))
    return torch.tensor(out, dtype=logits.dtype)


@pytest.mark.parametrize("lipschitz", [1.0, 2.5])
def test_certified_radius_and_certify(lipschitz):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(7, (50,), generator=g)
    for lab in (None, labels):
        radius = certified_radius(logits, lab, lipschitz)
        torch.testing.assert_close(radius, reference_radius(logits, lab, lipschitz))
        eps = float(radius.median())
        assert torch.equal(certify(logits, eps, lab, lipschitz), radius > eps)
    wrong = logits.argmax(1) != labels
    assert bool((certified_radius(logits, labels)[wrong] == 0).all())
    assert not bool(certify(logits, 0.0, labels)[wrong].any())


def test_certify_is_strict_at_the_margin():
    logits = torch.tensor([[1.0 + math.sqrt(2) * 0.25, 1.0, 0.0]], dtype=torch.float64)
    assert not bool(certify(logits, 0.25))
    assert bool(certify(logits, 0.25 - 1e-9))
    assert margin_for_radius(36 / 255) == pytest.approx(math.sqrt(2) * 36 / 255)


def test_hinge_loss_equals_its_formula():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 5, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(5, (9,), generator=g)
    margin = 0.7
    per_sample = []
    for i in range(9):
        y = int(labels[i])
        terms = [(margin - logits[i, y] + logits[i, j]).clamp_min(0) for j in range(5) if j != y]
        per_sample.append(torch.stack(terms).sum() / 5)
    expected = torch.stack(per_sample)
    torch.testing.assert_close(multiclass_hinge_loss(logits, labels, margin, "none"), expected)
    torch.testing.assert_close(multiclass_hinge_loss(logits, labels, margin), expected.mean())
    # zero exactly when every margin holds
    separated = torch.eye(3, dtype=torch.float64) * 2
    assert float(multiclass_hinge_loss(separated, torch.arange(3), 1.99)) == 0.0
    assert float(multiclass_hinge_loss(separated, torch.arange(3), 2.01)) > 0.0


def test_certified_accuracy_over_a_loader():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 4))
    with torch.no_grad():
        model[0].weight.mul_(3)
    data = [(torch.randn(10, 6), torch.randint(4, (10,))) for _ in range(3)]
    L = lipschitz_bound(model)
    assert L == pytest.approx(float(torch.linalg.matrix_norm(model[0].weight.detach(), ord=2)))
    logits = torch.cat([model(x) for x, _ in data]).detach()
    labels = torch.cat([y for _, y in data])
    clean, cert = certified_accuracy(model, data, 0.1)
    assert clean == pytest.approx(float((logits.argmax(1) == labels).float().mean()))
    assert cert == pytest.approx(float(certify(logits, 0.1, labels, L).float().mean()))
    assert certified_accuracy(model, data, 0.1, lipschitz=1.0)[1] >= cert
    assert model.training  # mode restored


def test_lipschitz_bound_of_a_chain_and_of_convs():
    torch.manual_seed(3)
    a, b = nn.Linear(5, 7), nn.Linear(7, 3)
    chain = nn.Sequential(a, nn.ReLU(), b, nn.Sigmoid())
    expected = (
        float(torch.linalg.matrix_norm(a.weight.double(), ord=2))
        * float(torch.linalg.matrix_norm(b.weight.double(), ord=2))
        / 4
    )
    assert lipschitz_bound(chain) == pytest.approx(expected, rel=1e-12)
    for k in (1, 2, 3):
        w = torch.randn(4, 3, k, k, dtype=torch.float64)
        bound = conv2d_lipschitz_bound(w)
        exact = max(
            float(circular_conv_singular_values(w, (n, n)).max()) for n in (5, 8, 13, 64, 128)
        )
        assert exact <= bound <= exact * 1.0099  # rigorous, at most ~1 % above its grid (64, 128)
    with pytest.raises(TypeError, match="no bound known for Softplus"):
        lipschitz_bound(nn.Sequential(nn.Softplus()))
    with pytest.raises(TypeError, match="CircularPad2d must be followed by an unpadded"):
        lipschitz_bound(nn.Sequential(nn.CircularPad2d(1)))


def test_bound_holds_for_strided_dilated_grouped_zero_padded_convs():
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2).double()
    bound = lipschitz_bound(conv)
    # power iteration on J^T J of the layer (linear once the bias is removed)
    v = torch.randn(1, 4, 9, 9, dtype=torch.float64)
    for _ in range(300):
        v = (v / v.norm()).requires_grad_(True)
        y = conv(v) - conv.bias.view(1, -1, 1, 1)
        (v,) = torch.autograd.grad(y, v, y)
    sigma = float(v.norm().sqrt())
    assert 0.5 * bound < sigma <= bound


def test_lipconvnet_bound_trained_and_frozen():
    torch.manual_seed(5)
    model = lipconvnet_small()
    assert lipschitz_bound(model) == pytest.approx(1.0, abs=1e-4)
    frozen = asx.freeze(model).eval()
    # each frozen conv's grid bound is at most ~1 % above its true norm (1)
    assert 1 - 1e-4 <= lipschitz_bound(frozen) <= 1.0099**2 * (1 + 1e-4)


def test_no_certified_prediction_flips_under_attack():
    # If the bound were wrong, gradient attacks inside the certified radius would find flips.
    torch.manual_seed(6)
    model = lipconvnet_small(num_classes=4, input_size=(8, 8)).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.rand(16, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(4, (16,))
    for _ in range(30):  # fit a little, so that margins are not all tiny
        loss = multiclass_hinge_loss(model(x), y, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    logits = model(x).detach()
    pred = logits.argmax(1)
    radius = certified_radius(logits)
    assert float(radius.max()) > 0
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(50):  # PGD on the margin, projected onto the certified ball of each sample
        out = model(x + delta)
        other = out.scatter(1, pred[:, None], float("-inf")).amax(1)
        margin = out.gather(1, pred[:, None])[:, 0] - other
        (grad,) = torch.autograd.grad(margin.sum(), delta)
        with torch.no_grad():
            delta -= 0.05 * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            ball = 0.999 * radius.view(-1, 1, 1, 1)
            delta *= torch.where(norm > ball, ball / norm.clamp_min(1e-12), torch.ones_like(norm))
    attacked = model(x + delta).argmax(1)
    assert torch.equal(attacked, pred)
    # and the attack is real: with 3x the radius some prediction flips
    with torch.no_grad():
        big = model(x + 3 * delta.detach() / 0.999 * 1.0).argmax(1)
    assert not torch.equal(big, pred)


def test_bad_input():
    with pytest.raises(ValueError, match=r"logits must have shape \[N, num_classes\]"):
        certified_radius(torch.randn(4))
    with pytest.raises(TypeError, match=r"labels must be an int64 tensor, got torch\.int32"):
        certify(torch.randn(2, 3), 0.1, torch.tensor([0, 1], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\], got values 0..3"):
        multiclass_hinge_loss(torch.randn(2, 3), torch.tensor([0, 3]), 1.0)
    with pytest.raises(ValueError, match=r"eps must be finite and lie in \[0.0, inf\], got -1"):
        certify(torch.randn(2, 3), -1)
    with pytest.raises(ValueError, match="data must hold at least one sample"):
        certified_accuracy(nn.Linear(3, 2), [], 0.1)
    with pytest.raises(TypeError, match=r"data must yield \(x, y\) pairs of tensors"):
        certified_accuracy(nn.Linear(3, 2), [torch.randn(2, 3)], 0.1)
