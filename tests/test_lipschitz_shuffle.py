"""OrthogonalShuffle: M orthogonal at every step, the forward against a plain einsum, the penalty
(zero exactly at signed permutations), rounding to the exact signed gather, folding that gather
into the next layer (against the unfolded pair), recovery of a hidden permutation, bad input."""

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.lipschitz import (
    BCOPConv2d,
    OrthogonalShuffle,
    SignedShuffle,
    fold_signed_shuffle,
)
from tests.references import reference_penalty


def signed_permutation_matrix(perm, signs):
    S = torch.zeros(len(perm), len(perm), dtype=torch.float64)
    S[torch.arange(len(perm)), perm] = signs.double()
    return S


def test_matrix_is_orthogonal_and_forward_is_the_mixing():
    shuffle = OrthogonalShuffle(12, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        shuffle.weight.add_(0.5 * torch.randn(12, 12, dtype=torch.float64))
    M = shuffle.matrix()
    torch.testing.assert_close(M @ M.T, torch.eye(12, dtype=torch.float64), rtol=0, atol=1e-10)
    x = torch.randn(3, 12, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(shuffle(x), torch.einsum("ij,njhw->nihw", M, x))
    torch.testing.assert_close(shuffle(x).norm(), x.norm())  # 1-Lipschitz, norm-preserving
    assert shuffle.lipschitz_bound() == pytest.approx(1.0, abs=1e-10)


def test_penalty_is_the_l1_l2_penalty_of_m_and_vanishes_at_signed_permutations():
    g = torch.Generator().manual_seed(1)
    shuffle = OrthogonalShuffle(8, generator=g, penalty_weight=0.3).double()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    shuffle(x)
    expected = reference_penalty(shuffle.matrix())
    torch.testing.assert_close(shuffle.raw_penalty(), expected)
    torch.testing.assert_close(shuffle.penalty(), 0.3 * expected)  # the forward's value reused
    assert float(expected.detach()) > 1.0
    perm = torch.randperm(8, generator=g)
    signs = torch.tensor([1.0, -1, -1, 1, 1, -1, 1, 1])
    with torch.no_grad():
        shuffle.weight.copy_(signed_permutation_matrix(perm, signs))
    assert float(shuffle.raw_penalty().detach()) == pytest.approx(0.0, abs=1e-10)


def test_penalty_gradient_joins_the_backward():
    shuffle = OrthogonalShuffle(6, penalty_weight=0.7).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    (shuffle(x).square().sum() + shuffle.penalty()).backward()
    fused = shuffle.weight.grad.clone()
    shuffle.weight.grad = None
    M = shuffle.matrix()
    (torch.einsum("ij,nj->ni", M, x).square().sum() + 0.7 * reference_penalty(M)).backward()
    torch.testing.assert_close(fused, shuffle.weight.grad)


@pytest.mark.parametrize("negative", [True, False])
def test_freezes_to_the_exact_signed_gather(negative):
    g = torch.Generator().manual_seed(2)
    perm = torch.randperm(10, generator=g)
    signs = torch.where(torch.rand(10, generator=g) < 0.5, -1.0, 1.0) if negative else None
    signs = signs if negative else torch.ones(10)
    shuffle = OrthogonalShuffle(10, init=perm, noise=0.0).double()
    with torch.no_grad():
        shuffle.weight.copy_(signed_permutation_matrix(perm, signs))
        shuffle.weight.add_(0.05 * torch.randn(10, 10, generator=g, dtype=torch.float64))
    got_perm, got_signs = shuffle.signed_permutation()
    assert torch.equal(got_perm, perm) and torch.equal(got_signs, signs)
    assert torch.equal(shuffle.perm, perm)
    frozen = asx.freeze(shuffle)
    assert type(frozen) is (SignedShuffle if negative else asx.HardShuffle)
    x = torch.randn(3, 10, 4, 4, dtype=torch.float64)
    expected = signs.double().view(1, -1, 1, 1) * x[:, perm]
    torch.testing.assert_close(frozen(x), expected, rtol=0, atol=0)
    row = asx.structure_report(nn.Sequential(shuffle))[0]
    assert row["negatives"] == int((signs < 0).sum()) and row["distance"] > 0
    assert row["orthogonality"] < 1e-10


def _pair_check(shuffle, layer, x):
    folded = fold_signed_shuffle(shuffle, layer)
    torch.testing.assert_close(folded(x), layer(shuffle(x)), rtol=1e-12, atol=1e-12)
    return folded


def test_fold_into_conv_linear_and_frozen_bcop():
    g = torch.Generator().manual_seed(3)
    C = 8
    shuffle = SignedShuffle(
        torch.randperm(C, generator=g), torch.where(torch.rand(C, generator=g) < 0.5, -1.0, 1.0)
    )
    x = torch.randn(2, C, 8, 8, dtype=torch.float64)
    conv = nn.Conv2d(C, 5, 3, padding=1).double()
    folded = _pair_check(shuffle, conv, x)
    assert type(folded) is nn.Conv2d and torch.equal(folded.bias, conv.bias)
    _pair_check(shuffle, nn.Linear(C, 3).double(), torch.randn(4, C, dtype=torch.float64))
    # frozen BCOP convs: circular Conv2d, CircularPad2d + Conv2d, PixelUnshuffle + ...
    for k, stride in [(3, 1), (2, 1), (4, 2)]:
        frozen = BCOPConv2d(C, 6, k, stride).double().to_inference()
        _pair_check(shuffle, frozen, x)
    _pair_check(asx.HardShuffle(torch.randperm(C, generator=g)), conv, x)


def test_fold_refuses_what_a_signed_shuffle_does_not_pass():
    shuffle = SignedShuffle(torch.arange(4), torch.tensor([1.0, -1, 1, 1]))
    with pytest.raises(TypeError, match="got MaxMin"):
        fold_signed_shuffle(shuffle, asx.lipschitz.MaxMin())
    with pytest.raises(TypeError, match=r"ungrouped nn\.Conv2d .* got groups=2"):
        fold_signed_shuffle(shuffle, nn.Conv2d(4, 4, 1, groups=2))
    with pytest.raises(ValueError, match="take the shuffle's 4 channels as input, got a Linear "):
        fold_signed_shuffle(shuffle, nn.Linear(5, 2))


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_recovers_a_hidden_signed_permutation(seed):
    # y = signs * x[:, perm*]: the orthogonal Procrustes problem. M moves continuously within the
    # orthogonal matrices of its start's determinant, so the target's signs are chosen of that
    # determinant (one sign flipped when perm*'s parity differs); the rounded shuffle must then
    # be exact. Same protocol as bench/hidden_permutation.py: SGD, penalty ramped to 0.05.
    g = torch.Generator().manual_seed(seed)
    C, steps = 16, 300
    perm = torch.randperm(C, generator=g)
    x = torch.randn(256, C, generator=g)
    shuffle = OrthogonalShuffle(C, generator=g, penalty_weight=0.0)
    start_det = torch.linalg.det(shuffle.matrix().detach())
    signs = torch.ones(C)
    if float(start_det * torch.linalg.det(asx.permutation_matrix(perm))) < 0:
        signs[int(torch.randint(C, (1,), generator=g))] = -1.0
    y = x[:, perm] * signs
    opt = torch.optim.SGD(shuffle.parameters(), lr=0.5, momentum=0.9)
    for step in range(steps):
        shuffle.penalty_weight = 0.05 * min(1.0, step / (steps / 2))
        loss = (shuffle(x) - y).square().mean() + shuffle.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    got_perm, got_signs = shuffle.signed_permutation()
    assert torch.equal(got_perm, perm) and torch.equal(got_signs, signs)
    assert float(shuffle.distance_to_signed_permutation()) < 0.1
    torch.testing.assert_close(asx.freeze(shuffle)(x), y, rtol=0, atol=0)
    end_det = torch.linalg.det(shuffle.matrix().detach())
    torch.testing.assert_close(end_det, start_det, rtol=0, atol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match=r"init must be one of .* got 'uniform'"):
        OrthogonalShuffle(4, init="uniform")
    with pytest.raises(ValueError, match=r"init must be a permutation of 0\.\.3"):
        OrthogonalShuffle(4, init=torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match=r"penalty_weight must be finite and lie in \[0.0, inf\]"):
        OrthogonalShuffle(4, penalty_weight=-1.0)
    with pytest.raises(ValueError, match=r"input x must have shape \[N, 4, ...\], got \(2, 5\)"):
        OrthogonalShuffle(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="signs must be a tensor of"):
        SignedShuffle(torch.arange(3), torch.tensor([1.0, 0.5, -1.0]))
