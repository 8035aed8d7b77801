"""`DGConv2d`: a convolution that learns its group count (DGConv, Zhang et al., "Differentiable
Learning-to-Group Channels via Groupable Convolutional Neural Networks", ICCV 2019).

The weight is masked by a Kronecker-structured relationship matrix U whose factors are switched
by binary gates (see `dgconv_mask`): gate k open (g_k = 1) joins n_k groups into one. Gates are
real parameters binarised in the forward (g = 1 where the parameter is >= 0) with a
straight-through gradient. With binary gates the layer is exactly a grouped conv between two
channel permutations, which is what the forward runs (`dgconv_grouped`) and what `to_inference`
returns.

Budget term: `cost_fraction()` = nnz(U) / C^2 = prod_k (1 + g_k (n_k - 1)) / n_k of the
straight-through gates, the fraction of the dense conv's weights and multiply-adds the layer
keeps (1 / G). `penalty()` = penalty_weight * relu(cost_fraction - budget): zero inside the
budget, a push on every gate toward closing outside it (each with d cost / d g_k =
cost * (n_k - 1) / (1 + g_k (n_k - 1))); no term without a budget.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .dgconv_grouped import block_weight, grouped_masked_conv2d, unblock_weight
from .dgconv_mask import (
    GroupPlan,
    cost_fraction,
    expand_blocks,
    gate_factors,
    group_plan,
    num_groups,
    prime_factors,
    relationship_matrix,
)
from .hard import HardShuffle
from .structure import LearnedStructure, ParamGroup

__all__ = ["DEFAULT_BUDGET_WEIGHT", "DEFAULT_GATE_INIT", "DGConv2d"]

# lambda of the budget term: a cost fraction 0.1 over budget weighs 0.1 next to the task loss.
DEFAULT_BUDGET_WEIGHT = 1.0
# |gate parameter| at the start: a unit straight-through step flips a gate.
DEFAULT_GATE_INIT = 1.0


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_pair(name: str, value: object, minimum: int) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        first, second = (_check_int(name, v, minimum) for v in value)
        return first, second
    if isinstance(value, str):
        raise TypeError(f"{name} must be an int or a pair of ints, got the string {value!r}")
    v = _check_int(name, value, minimum)
    return v, v


def _check_real(name: str, value: object, *, low: float, high: float, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    inside = (value > low if low_open else value >= low) and value <= high
    if not (math.isfinite(value) and inside):
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value}")
    return float(value)


def _check_gate_init_fits(gate_init: float, dtype: torch.dtype) -> None:
    """Raises ValueError unless gate_init is finite in the gates' dtype (1e39 in float32 or 7e4 in
    float16 would be inf: cost, penalty, mask and gradients NaN)."""
    if dtype.is_floating_point and gate_init > torch.finfo(dtype).max:
        raise ValueError(
            f"gate_init must be at most {torch.finfo(dtype).max:g} (the largest {dtype} of the "
            f"gates), got {gate_init:g}"
        )


class DGConv2d(LearnedStructure):
    """Drop-in for `nn.Conv2d` whose group count G is learned.

    Args:
        in_channels, out_channels: as `nn.Conv2d`; the gates come from the prime factors of
            C = gcd(in_channels, out_channels), so G ranges over the divisors of C (the group
            counts an `nn.Conv2d` of these widths allows). C = 1 leaves no gate: a dense conv.
        kernel_size, stride, padding, dilation: ints or pairs, as `nn.Conv2d` (zero padding
            given as numbers; no "same"/"valid").
        bias: add a learned bias.
        budget: the cost fraction (1 / G, in (0, 1]) the layer may keep before `penalty()` grows;
            None for no budget term.
        penalty_weight: lambda, the factor of the budget term.
        gate_init: |gate parameter| at the start (> 0).
        init_groups: the group count to start from (default 1, dense). Its prime factors become
            the leading gates, so the start is the ordinary contiguous `groups=init_groups` conv.
        device, dtype: of the parameters.

    Parameters: `weight` [out, in, kh, kw] (dense; entries outside the groups are kept and come
    back when a gate opens), `bias` [out] or None, `gates` [K] (the structure parameters). The
    buffer `gate_sizes` [K] holds the factors n_k, checked when a state dict is loaded.

    Forward: x [N, in, H, W] -> [N, out, H', W'] = conv2d(x, weight * mask) with the binary gates,
    run as the grouped conv it equals; the gates get their straight-through gradient through the
    dense weight gradient (only while they require grad). On CUDA each forward reads the gate
    signs on the host (the group count is a Python int).

    Raises:
        TypeError: a size that is not an int (or pair), a non-bool bias, a budget, penalty_weight
            or gate_init that is not a real number.
        ValueError: sizes below their minimum, budget outside (0, 1], penalty_weight negative
            or not finite, gate_init not > 0 or above the largest value of the gates' dtype,
            init_groups not dividing C; in the forward, an input that is not
            [N, in_channels, H, W].
    """

    param_group = "gate"  # the training program's --gate-lr

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = False,
        *,
        dilation: int | tuple[int, int] = 1,
        budget: float | None = None,
        penalty_weight: float = DEFAULT_BUDGET_WEIGHT,
        gate_init: float = DEFAULT_GATE_INIT,
        init_groups: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels, 1)
        self.out_channels = _check_int("out_channels", out_channels, 1)
        self.kernel_size = _check_pair("kernel_size", kernel_size, 1)
        self.stride = _check_pair("stride", stride, 1)
        self.padding = _check_pair("padding", padding, 0)
        self.dilation = _check_pair("dilation", dilation, 1)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__} {bias!r}")
        self.budget = (
            None if budget is None
            else _check_real("budget", budget, low=0.0, high=1.0, low_open=True)
        )  # fmt: skip
        self.penalty_weight = _check_real(
            "penalty_weight", penalty_weight, low=0.0, high=math.inf, low_open=False
        )
        self.gate_init = _check_real("gate_init", gate_init, low=0.0, high=math.inf, low_open=True)
        _check_gate_init_fits(self.gate_init, dtype or torch.get_default_dtype())
        _check_int("init_groups", init_groups, 1)
        self.factors = gate_factors(in_channels, out_channels, init_groups)

        kind = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, *self.kernel_size, **kind)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **kind)) if bias else None
        self.gates = nn.Parameter(torch.empty(len(self.factors), **kind))
        self.register_buffer(
            "gate_sizes", torch.tensor(self.factors, dtype=torch.int64, device=device)
        )
        # GroupPlan by (gate pattern, device): rebuilt only when a gate flips.
        self._plans: dict[tuple[tuple[bool, ...], torch.device], GroupPlan] = {}
        self.reset_parameters()
        self.set_groups_(init_groups)

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: nn.Conv2d, **options) -> DGConv2d:
        """A `DGConv2d` that computes what `conv` does: started on its groups
        (`init_groups=conv.groups`), its weights inside the groups' blocks and its bias; the
        entries outside the blocks (masked until a gate opens) keep their fresh init. `options`
        are the other keyword arguments (gate_init, budget, penalty_weight); an `init_groups`
        among them other than conv's gives a fresh layer of conv's shape instead.

        Raises:
            TypeError: conv not an `nn.Conv2d`.
            ValueError: a conv that DGConv2d cannot stand for (padding given as a string, a
                padding mode other than zeros), or options it refuses.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(
                "conv must pad with zeros given as numbers, got padding="
                f"{conv.padding!r}, padding_mode={conv.padding_mode!r}"
            )
        init_groups = options.pop("init_groups", conv.groups)
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.bias is not None,
            dilation=conv.dilation,
            init_groups=init_groups,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
            **options,
        )
        if init_groups != conv.groups:
            return layer
        inside = layer.mask().detach().bool()[:, :, None, None]
        dense = unblock_weight(conv.weight.detach(), layer.plan())
        layer.weight.copy_(torch.where(inside, dense, layer.weight))
        if conv.bias is not None:
            layer.bias.copy_(conv.bias)
        return layer

    def reset_parameters(self) -> None:
        """weight and bias as `nn.Conv2d` initialises them (fan-in of the dense conv)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @torch.no_grad()
    def set_groups_(self, groups: int) -> None:
        """Sets the gates (in place, to -gate_init closed / +gate_init open) so that the layer has
        `groups` groups: a gate of each prime factor of `groups`, the first ones of that size.

        Raises:
            TypeError: groups not an int.
            ValueError: groups does not divide C = gcd(in_channels, out_channels).
        """
        _check_int("groups", groups, 1)
        blocks = math.prod(self.factors)
        if blocks % groups:
            raise ValueError(
                f"groups must divide gcd(in_channels, out_channels) = {blocks}, got {groups}"
            )
        wanted = list(prime_factors(groups))
        closed = []
        for n in self.factors:
            closed.append(n in wanted)
            if n in wanted:
                wanted.remove(n)
        _check_gate_init_fits(self.gate_init, self.gates.dtype)
        signs = torch.tensor([-1.0 if c else 1.0 for c in closed], dtype=self.gates.dtype)
        self.gates.copy_(signs * self.gate_init)

    def binary_gates(self) -> torch.Tensor:
        """g [K]: 1 where the gate parameter is >= 0, else 0, with the straight-through gradient
        (d g / d parameter = 1)."""
        hard = (self.gates >= 0).to(self.gates.dtype)
        # (p - p.detach()) is exactly 0, so g is exactly 0 or 1 (the grouped forward relies on
        # it); (hard + p) - p would round.
        return hard + (self.gates - self.gates.detach())

    def closed_gates(self) -> tuple[bool, ...]:
        """Which gates are closed (g_k = 0), read on the host."""
        return tuple(bool(c) for c in (self.gates.detach() < 0).tolist())

    def num_groups(self) -> int:
        """G, the current group count: the product of the closed gates' sizes."""
        return num_groups(self.closed_gates(), self.factors)

    def relationship_matrix(self) -> torch.Tensor:
        """U [C, C] of the current gates, differentiable in them (straight-through)."""
        return relationship_matrix(self.binary_gates(), self.factors)

    def mask(self) -> torch.Tensor:
        """The weight mask [out, in] (0/1, weight's dtype), differentiable in the gates."""
        u = relationship_matrix(self.binary_gates().to(self.weight.dtype), self.factors)
        return expand_blocks(u, self.out_channels, self.in_channels)

    def cost_fraction(self) -> torch.Tensor:
        """nnz(U) / C^2 = 1 / G (0-d), differentiable in the gates (straight-through)."""
        return cost_fraction(self.binary_gates(), self.factors)

    def plan(self) -> GroupPlan:
        """The grouped conv and permutations the current gates amount to (cached per pattern)."""
        key = (self.closed_gates(), self.weight.device)
        plan = self._plans.get(key)
        if plan is None:
            plan = group_plan(key[0], self.factors, self.in_channels, self.out_channels, key[1])
            self._plans[key] = plan
        return plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"DGConv2d: input x must have shape [N, {self.in_channels}, H, W], got "
                f"{tuple(x.shape)}"
            )
        # The mask is only needed for the gates' gradient; without it the backward skips the
        # dense weight gradient.
        wants_gate_grad = torch.is_grad_enabled() and self.gates.requires_grad
        mask = self.mask() if wants_gate_grad else None
        return grouped_masked_conv2d(
            x, self.weight, mask, self.bias, self.plan(), self.stride, self.padding, self.dilation
        )

    def raw_penalty(self) -> torch.Tensor:
        """`relu(cost_fraction - budget)` (0-d, differentiable in the gates); zero without a
        budget."""
        if self.budget is None:
            return self.gates.new_zeros(())
        return torch.relu(self.cost_fraction() - self.budget)

    @torch.no_grad()
    def to_inference(self) -> nn.Module:
        """The exact `nn.Conv2d(groups=G)`, between `HardShuffle` gathers of the input and the
        output channels where those permutations are not the identity (then an
        `nn.Sequential`)."""
        plan = self.plan()
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            groups=plan.groups,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        conv.weight.copy_(block_weight(self.weight, plan))
        if self.bias is not None:
            bias = self.bias if plan.out_src is None else self.bias[plan.out_src]
            conv.bias.copy_(bias)
        if plan.in_src is None and plan.out_perm is None:
            return conv
        layers: list[nn.Module] = []
        if plan.in_src is not None:
            layers.append(HardShuffle(plan.in_src))
        layers.append(conv)
        if plan.out_perm is not None:
            layers.append(HardShuffle(plan.out_perm))
        return nn.Sequential(*layers)

    def report(self) -> dict:
        """groups (G), cost (nnz(U) / C^2), budget, gates (0/1 per factor), factors, penalty
        (the unweighted budget term), distance (0: the forward already runs the exact form)."""
        with torch.no_grad():
            cost = float(self.cost_fraction())
            over = 0.0 if self.budget is None else max(0.0, cost - self.budget)
            return {
                "groups": self.num_groups(),
                "cost": cost,
                "budget": self.budget,
                "gates": [int(not c) for c in self.closed_gates()],
                "factors": list(self.factors),
                "penalty": over,
                "distance": 0.0,
            }

    def param_groups(self) -> list[ParamGroup]:
        """The gates, in the group "gate" (the training program's --gate-lr); weight and bias
        are network parameters."""
        return [ParamGroup(self.param_group, (self.gates,), self.lr)]

    def macs(self, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """The grouped conv of the current gates, in training (what the forward runs) and at
        inference."""
        kh, kw = self.kernel_size
        grouped = output[0].numel() * (self.in_channels // self.num_groups()) * kh * kw
        return grouped, grouped

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Gates only mean something with their factors: refuse those of another factor order.
        sizes = state_dict.get(prefix + "gate_sizes")
        if isinstance(sizes, torch.Tensor) and sizes.tolist() != list(self.factors):
            raise ValueError(
                f"state_dict[{prefix + 'gate_sizes'!r}] must equal this layer's gate sizes "
                f"{list(self.factors)}, got {sizes.tolist()} (built with another init_groups?)"
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self) -> dict:
        # Plans are a cache of the gates: copies and pickles rebuild them.
        return {**self.__dict__, "_plans": {}}

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        s += f", bias={self.bias is not None}, factors={self.factors}, budget={self.budget}"
        return s
