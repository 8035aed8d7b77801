"""End to end: learning a hidden channel permutation with the penalty and the projection.

The task `y = x[:, perm*]` has the permutation as its exact solution. AutoShuffleNet's recipe
(l1-l2 penalty, projection after each step, rounding) must find it and drive P(M) to ~0; the
convex relaxation (Sinkhorn, no penalty) runs on the same data side by side, and what it reaches
is checked only for being well formed: its outcome is measured in bench/RESULTS.md, not assumed.
"""

import torch

import autoshuffle_ext as asx

CHANNELS = 16


def hidden_permutation_task(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(CHANNELS, generator=g)
    x = torch.randn(512, CHANNELS, 2, 2, generator=g)
    return x, asx.channel_gather(x, perm), perm


def train(module: torch.nn.Module, x, y, steps: int = 300, lr: float = 0.5) -> list[float]:
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    if isinstance(module, asx.LearnedShuffle):
        asx.attach_projection(opt, module)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = (module(x) - y).square().mean()
        losses.append(loss.item())
        if isinstance(module, asx.LearnedShuffle):
            # Ramp the penalty weight up, as the training program does.
            module.penalty_weight = 0.05 * min(1.0, step / (steps / 2))
            loss = loss + module.penalty()
        loss.backward()
        opt.step()
    return losses


def test_penalty_recovers_the_hidden_permutation():
    x, y, perm = hidden_permutation_task(seed=0)
    torch.manual_seed(0)
    module = asx.LearnedShuffle(CHANNELS, init="uniform", noise=0.05)
    losses = train(module, x, y)
    assert losses[-1] < 1e-3 * losses[0]
    assert asx.l1l2_penalty(module.weight.detach()).item() < 1e-2
    assert torch.equal(module.perm, perm)
    assert torch.equal(asx.freeze(module)(x), y)


def test_relaxation_runs_side_by_side_and_rounds_to_a_permutation():
    x, y, _ = hidden_permutation_task(seed=0)
    torch.manual_seed(0)
    module = asx.SinkhornShuffle(CHANNELS, init="uniform", noise=0.05, iters=20)
    losses = train(module, x, y)
    assert losses[-1] < losses[0]
    perm = module.perm
    assert sorted(perm.tolist()) == list(range(CHANNELS))
    M = module.matrix().detach()
    # Sinkhorn ends on a column normalisation: columns exact, rows close.
    torch.testing.assert_close(M.sum(0), torch.ones(CHANNELS), atol=1e-5, rtol=0)
    torch.testing.assert_close(M.sum(1), torch.ones(CHANNELS), atol=1e-2, rtol=0)
