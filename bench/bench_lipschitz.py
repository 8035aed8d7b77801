"""The Lipschitz layers against the plain layers they replace, and the orthogonal shuffle against
the learned (doubly stochastic) one.

- BCOP convolution, forward + backward (input, matrix and bias gradients), [32, 64, 32, 32],
  3x3: `BCOPConv2d` (Björck of 5 matrices, kernel assembly, circular conv) against
  `nn.Conv2d(padding_mode="circular")` of the same shape;
- BCOP in evaluation mode (cached kernel) against that `nn.Conv2d`, batch 1 and 32: the goal is
  at most 1.05x;
- Björck orthonormalisation of a layer's 9 matrices of 64 x 64 (a 5x5 BCOP): one batched op
  against a loop over the matrices.

Run: `python -m pytest bench/bench_lipschitz.py --benchmark-only` (groups put the variants side
by side).

As a script, the hidden-permutation recovery benchmark (bench/hidden_permutation.py: same data,
steps, optimizer, penalty ramp and seeds) for `OrthogonalShuffle` next to `LearnedShuffle`:

    python -m bench.bench_lipschitz [--channels 16 64] [--rank R] [--seeds 5] [--steps 300]
"""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.lipschitz import BCOPConv2d, OrthogonalShuffle, bjorck_orthonormalize
from bench.hidden_permutation import activations
from bench.hidden_permutation import run as run_learned
from bench.timing import benchmark_inference, sync

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
C, K = 64, 3


def _layer(variant: str, device: str) -> nn.Module:
    torch.manual_seed(0)
    if variant == "bcop":
        return BCOPConv2d(C, C, K).to(device)
    return nn.Conv2d(C, C, K, padding=K // 2, padding_mode="circular").to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["bcop", "conv2d_circular"])
def test_conv_train_step(benchmark, variant, device):
    benchmark.group = f"{C}->{C} {K}x{K} [32, {C}, 32, 32] fwd+bwd {device}"
    layer = _layer(variant, device)
    x = torch.randn(32, C, 32, 32, device=device, requires_grad=True)
    grad_y = torch.randn(32, C, 32, 32, device=device)

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad_y)
        sync(device)

    step()
    benchmark(step)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("variant", ["bcop_eval", "conv2d_circular"])
def test_conv_inference(benchmark, variant, batch, device):
    benchmark.group = f"{C}->{C} {K}x{K} [{batch}, {C}, 32, 32] inference {device}"
    layer = _layer("bcop" if variant == "bcop_eval" else variant, device).eval()
    x = torch.randn(batch, C, 32, 32, device=device)
    if variant == "bcop_eval":  # the cached kernel computes what the plain conv would
        torch.testing.assert_close(layer(x), layer.to_inference()(x), rtol=1e-4, atol=1e-4)
    benchmark_inference(benchmark, layer, x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", ["batched", "loop"])
def test_bjorck(benchmark, variant, device):
    benchmark.group = f"Björck 20 steps, 9 x [64, 64] {device}"
    W = torch.randn(9, 64, 64, device=device)

    def orthonormalize():
        if variant == "batched":
            bjorck_orthonormalize(W)
        else:
            torch.stack([bjorck_orthonormalize(w) for w in W])
        sync(device)

    orthonormalize()
    benchmark(orthonormalize)


# ---- hidden-permutation recovery -------------------------------------------------------------


def run_orthogonal(channels: int, rank: int | None, seed: int, steps: int) -> dict:
    """bench/hidden_permutation.run's protocol (same data, SGD lr 0.5 momentum 0.9, penalty
    ramped to 0.05 over the first half) for an OrthogonalShuffle from a random orthogonal start.
    "recovered": the rounded permutation is perm*; "signed": and every sign is +1 (M cannot leave
    the determinant of its start: half the targets need one sign flip)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(channels, generator=g)
    x = activations(channels, rank, g)
    y = asx.channel_gather(x, perm)
    torch.manual_seed(seed)
    module = OrthogonalShuffle(channels, penalty_weight=0.0)
    opt = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    for step in range(steps):
        opt.zero_grad()
        module.penalty_weight = 0.05 * min(1.0, step / (steps / 2))
        loss = (module(x) - y).square().mean() + module.penalty()
        loss.backward()
        opt.step()
    with torch.no_grad():
        rounded, signs = module.signed_permutation()
        M = module.matrix()
        return {
            "recovered": bool(torch.equal(rounded, perm)),
            "signed": bool(torch.equal(rounded, perm) and bool((signs > 0).all())),
            "loss": (module(x) - y).square().mean().item(),
            "frozen": (asx.freeze(module)(x) - y).square().mean().item(),
            "penalty": asx.l1l2_penalty(M).item(),
            "distance": module.distance_to_signed_permutation().item(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="hidden-permutation recovery: orthogonal shuffle")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--rank", type=int, default=None, help="rank of the activations")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    header = "recovered (signs +1) | loss | loss after rounding | P(M) | distance"
    print(f"| C | rank | method | {header} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for channels in args.channels:
        for method in ("learned (penalty)", "orthogonal (penalty)"):
            rows = []
            for seed in range(args.seeds):
                if method.startswith("learned"):
                    row = run_learned("penalty", channels, args.rank, seed, args.steps)
                    row["signed"] = row["recovered"]
                else:
                    row = run_orthogonal(channels, args.rank, seed, args.steps)
                rows.append(row)
            keys = ("loss", "frozen", "penalty", "distance")
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
            hits = sum(r["recovered"] for r in rows)
            signed = sum(r["signed"] for r in rows)
            print(
                f"| {channels} | {args.rank or channels} | {method} | {hits}/{len(rows)} "
                f"({signed}/{len(rows)}) | {mean['loss']:.2e} | {mean['frozen']:.2e} | "
                f"{mean['penalty']:.3g} | {mean['distance']:.3g} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
