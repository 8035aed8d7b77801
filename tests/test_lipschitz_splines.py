"""LipConvNet with spline activations: 1-Lipschitz splines (slopes clipped after each step) in
place of MaxMin, and a bound that reads the splines' slopes."""

import pytest
import torch
import torch.nn.functional as F

import autoshuffle_ext as asx
from autoshuffle_ext import lipschitz as lip


def test_spline_lipconvnet_stays_one_lipschitz_through_training():
    torch.manual_seed(0)
    model = lip.lipconvnet_small(10, input_size=(16, 16), activation="spline")
    splines = [m for _, m in asx.structures(model, asx.LinearSpline)]
    assert len(splines) == 3 and not any(isinstance(m, lip.MaxMin) for m in model.modules())
    assert lip.lipschitz_bound(model) == pytest.approx(1.0, abs=1e-4)
    start = [s.coefficients.detach().clone() for s in splines]
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    asx.attach_projection(opt, model)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    for _ in range(2):
        loss = F.multi_margin_loss(model(x), y, margin=0.2) + asx.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not torch.equal(s.coefficients, c) for s, c in zip(splines, start, strict=True))
    assert max(s.lipschitz_constant() for s in splines) <= 1.0 + 1e-6
    assert lip.lipschitz_bound(model) <= 1.0 + 1e-4
    frozen = asx.freeze(model.eval())
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="activation must be 'maxmin' or 'spline'"):
        lip.lipconvnet_large(activation="relu")
