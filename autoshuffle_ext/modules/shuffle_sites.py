"""Channel shuffle sites of a traced graph, found by what a chain of shape ops computes.

A shuffle site is a chain of shape-only ops (view, reshape, flatten, transpose, permute,
contiguous, indexing, chunk/split/unbind, `channel_shuffle` calls and `nn.ChannelShuffle`
modules...) from one tensor `[N, C, ...]` to tensors `[N, k, ...]` that hold channels of it,
disjoint, in an order that is not the identity. Whatever the spelling, the chain is run on an
input whose every element holds its own index: the outputs then say exactly which source channel
each output channel is, or that the chain is not a channel permutation at all.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..ops.channel_gather import fixed_shuffle_perm
from .capture import VALUE
from .hard import FixedShuffle, HardShuffle

__all__ = ["ShuffleSite", "describe_permutation", "find_shuffle_sites", "shuffle_groups"]

_SHAPE_METHODS = frozenset(
    {
        "view", "reshape", "flatten", "unflatten", "transpose", "permute", "contiguous",
        "chunk", "split", "unbind", "tensor_split", "squeeze", "unsqueeze", "movedim",
        "moveaxis", "swapaxes", "swapdims", "narrow", "select", "t", "clone", "__getitem__",
    }
)  # fmt: skip
_SHAPE_FUNCTIONS = frozenset(
    {
        operator.getitem, torch.reshape, torch.flatten, torch.unflatten, torch.transpose,
        torch.permute, torch.chunk, torch.split, torch.unbind, torch.tensor_split,
        torch.squeeze, torch.unsqueeze, torch.movedim, torch.moveaxis, torch.swapaxes,
        torch.swapdims, torch.narrow, torch.select, torch.t, torch.clone,
        F.channel_shuffle, torch.channel_shuffle, torch.native_channel_shuffle,
    }
)  # fmt: skip
# The package's exact shuffles count too: a fixed or frozen model can be converted to learn.
_SHAPE_MODULES = (
    nn.ChannelShuffle,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    FixedShuffle,
    HardShuffle,
)
# Users that read a tensor's metadata only: they do not make a chain's tensor an output.
_META_METHODS = frozenset({"size", "dim", "numel", "nelement", "ndimension", "element_size"})
_META_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "layout"})


@dataclass
class ShuffleSite:
    """One channel shuffle in a graph.

    source: the node of the shuffled tensor [N, C, ...].
    chain: the shape ops of the shuffle, in graph order.
    pieces: the chain's outputs (nodes) and, for each, the source channel of each of its
        channels; together they take `perm` in order.
    perm: the permutation the site applies, `out[:, c] = x[:, perm[c]]` (pieces that do not
        take every channel are completed with the others, in increasing order).
    """

    source: fx.Node
    chain: list[fx.Node]
    pieces: list[tuple[fx.Node, torch.Tensor]]
    perm: torch.Tensor

    @property
    def channels(self) -> int:
        return self.perm.numel()

    def spelling(self, modules: dict[str, nn.Module]) -> str:
        """The chain as written: 'view/transpose/contiguous/view', 'nn.ChannelShuffle', ..."""
        words = []
        for node in self.chain:
            if node.op == "call_module":
                words.append(f"nn.{type(modules[node.target]).__name__}")
            elif node.target in (operator.getitem, "__getitem__"):
                words.append("[]")
            elif node.op == "call_method":
                words.append(node.target)
            else:
                words.append(node.target.__name__)
        return "/".join(words)


def _is_meta_user(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _META_METHODS
    return (
        node.op == "call_function" and node.target is getattr and node.args[1] in _META_ATTRIBUTES
    )


def _is_shape_op(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op == "call_function":
        return node.target in _SHAPE_FUNCTIONS
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _SHAPE_MODULES)
    return False


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    """The argument nodes whose example value is a tensor or a sequence of tensors."""
    found: list[fx.Node] = []

    def visit(a):
        if isinstance(a, fx.Node) and _holds_tensors(a.meta.get(VALUE)):
            found.append(a)
        return a

    fx.node.map_aggregate((node.args, node.kwargs), visit)
    return found


def _holds_tensors(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value)


def _used_outside(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True when the program uses `node` for more than shape ops and metadata reads."""
    return any(not _is_shape_op(u, modules) and not _is_meta_user(u) for u in node.users)


def _chain_from(first: fx.Node, source: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """The shape ops reachable from `first` through shape ops fed by the chain only, stopping
    at tensors the program uses otherwise (a chain from there is a site of its own)."""
    chain = [first]
    members = {first, source}
    stack = [first]
    while stack:
        node = stack.pop()
        if _used_outside(node, modules):
            continue
        for user in node.users:
            if user in members or not _is_shape_op(user, modules):
                continue
            if all(a in members for a in _tensor_inputs(user)):
                members.add(user)
                chain.append(user)
                stack.append(user)
    order = {n: i for i, n in enumerate(source.graph.nodes)}
    return sorted(chain, key=order.__getitem__)


def _run(node: fx.Node, env: dict[fx.Node, object], modules: dict[str, nn.Module]):
    def value(a):
        if isinstance(a, fx.Node):
            return env[a] if a in env else a.meta.get(VALUE)
        return a

    args = fx.node.map_aggregate(node.args, value)
    kwargs = fx.node.map_aggregate(node.kwargs, value)
    if node.op == "call_module":
        return modules[node.target](*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    return node.target(*args, **kwargs)


def _channels_held(piece, code: torch.Tensor) -> torch.Tensor | None:
    """The source channels of `piece`, when it is `code[:, channels]` exactly; else None."""
    if not isinstance(piece, torch.Tensor) or piece.dim() != code.dim():
        return None
    if piece.shape[0] != code.shape[0] or piece.shape[2:] != code.shape[2:] or piece.shape[1] < 1:
        return None
    plane = math.prod(code.shape[2:])
    first = piece[0].reshape(piece.shape[1], -1)[:, 0]
    channels = torch.div(first, plane, rounding_mode="floor").long()
    if (channels < 0).any() or (channels >= code.shape[1]).any():
        return None
    return channels if torch.equal(piece, code[:, channels]) else None


def _evaluate(source: fx.Node, chain: list[fx.Node], modules) -> ShuffleSite | None:
    value = source.meta[VALUE]
    code = torch.arange(value.numel(), dtype=torch.float64).view(value.shape)
    env: dict[fx.Node, object] = {source: code}
    members = set(chain)
    try:
        with torch.no_grad():
            for node in chain:
                env[node] = _run(node, env, modules)
    except Exception:  # a chain that does not run on the index code is no shuffle
        return None
    pieces = []
    for node in chain:
        if not any(u not in members and not _is_meta_user(u) for u in node.users):
            continue  # feeds the chain only
        held = _channels_held(env[node], code)
        if held is None:
            return None
        pieces.append((node, held))
    if not pieces:
        return None
    taken = torch.cat([held for _, held in pieces])
    channels = value.shape[1]
    if taken.unique().numel() != taken.numel():
        return None  # a channel used twice: not a permutation
    if all(torch.equal(h, torch.arange(h[0], h[0] + h.numel())) for _, h in pieces):
        return None  # plain slices (a split), or nothing moved
    rest = torch.ones(channels, dtype=torch.bool)
    rest[taken] = False
    perm = torch.cat([taken, rest.nonzero().flatten()])
    return ShuffleSite(source, chain, pieces, perm)


def find_shuffle_sites(graph: fx.Graph, modules: dict[str, nn.Module]) -> list[ShuffleSite]:
    """Every channel shuffle site of `graph`, whose nodes carry example values (`capture`).

    `modules` maps call_module targets to modules (`dict(root.named_modules())`)."""
    sites = []
    for source in graph.nodes:
        value = source.meta.get(VALUE)
        if not isinstance(value, torch.Tensor) or value.dim() < 2 or value.shape[1] < 2:
            continue
        if (
            _is_shape_op(source, modules)
            and not _used_outside(source, modules)
            and any(isinstance(a.meta.get(VALUE), torch.Tensor) for a in _tensor_inputs(source))
        ):
            continue  # inside a chain: the chain's source starts it
        for first in list(source.users):
            if _is_shape_op(first, modules) and _tensor_inputs(first) == [source]:
                site = _evaluate(source, _chain_from(first, source, modules), modules)
                if site is not None:
                    sites.append(site)
    return sites


def shuffle_groups(perm: torch.Tensor) -> int | None:
    """g when `perm` is ShuffleNet's shuffle of g groups (`fixed_shuffle_perm`), else None."""
    channels = perm.numel()
    if channels < 4 or perm[0] != 0 or perm[1] < 1 or channels % int(perm[1]):
        return None
    groups = channels // int(perm[1])
    if groups < 2 or groups == channels:
        return None
    return groups if torch.equal(perm, fixed_shuffle_perm(channels, groups)) else None


def describe_permutation(perm: torch.Tensor, pieces: int = 1) -> str:
    """'shuffle g=2', 'inverse shuffle g=3' (the shuffle of C/3 groups), 'permutation', with
    '+ split in 2' when the site hands its result on in pieces."""
    groups = shuffle_groups(perm)
    if groups is None:
        what = "permutation"
    elif groups * groups <= perm.numel():
        what = f"shuffle g={groups}"
    else:
        what = f"inverse shuffle g={perm.numel() // groups}"
    return what + (f" + split in {pieces}" if pieces > 1 else "")
