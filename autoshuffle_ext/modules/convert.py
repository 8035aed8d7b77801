"""`convert_shuffles`: put a shuffle of this package (learned, by default) in place of every
channel shuffle of an existing network, `nn.ChannelShuffle` modules and functional
`F.channel_shuffle` / `torch.channel_shuffle` calls alike."""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .factory import SHUFFLE_KINDS, make_shuffle
from .hard import FixedShuffle, HardShuffle
from .structure import LearnedStructure

__all__ = ["ShuffleConversionError", "convert_shuffles"]

_FUNCTIONS = (F.channel_shuffle, torch.channel_shuffle)
# The package's own shuffles stay whole under tracing (their forward is not a channel shuffle).
_LEAVES = (LearnedStructure, HardShuffle, FixedShuffle)


class ShuffleConversionError(ValueError):
    """Raised by `convert_shuffles(strict=True)` when a call site cannot be converted."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)


def _input_channels(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Input channels of every `nn.ChannelShuffle` the example input reaches, by name."""
    seen: dict[str, int] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            seen.setdefault(name, args[0].shape[1])

        return hook

    handles = [
        module.register_forward_pre_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.ChannelShuffle)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return seen


def _convert_modules(
    model: nn.Module, example_input: torch.Tensor, kind: str, options: dict, skipped: list[str]
) -> None:
    channels = _input_channels(model, example_input)
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.ChannelShuffle):
            continue
        if name not in channels:
            skipped.append(f"module {name}: not reached by example_input")
            continue
        parent, _, child = name.rpartition(".")
        shuffle = make_shuffle(kind, channels[name], module.groups, **options)
        setattr(model.get_submodule(parent), child, shuffle)


def _convert_calls(
    model: nn.Module, example_input: torch.Tensor, kind: str, options: dict, skipped: list[str]
) -> nn.Module:
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # any tracing failure: report it and keep the model
        skipped.append(
            f"functional channel shuffles, if any: {type(model).__name__} cannot be traced by "
            f"torch.fx ({type(error).__name__}: {error})"
        )
        return model
    calls = [n for n in graph.nodes if n.op == "call_function" and n.target in _FUNCTIONS]
    if not calls:
        return model
    traced = fx.GraphModule(model, graph, class_name=type(model).__name__)
    was_training = traced.training
    try:
        traced.eval()  # no BatchNorm statistics change for a shape probe
        with torch.no_grad():
            ShapeProp(traced).propagate(example_input)
    finally:
        traced.train(was_training)
    for index, node in enumerate(calls):
        source = node.args[0] if node.args else node.kwargs.get("input")
        groups = node.args[1] if len(node.args) > 1 else node.kwargs.get("groups")
        meta = source.meta.get("tensor_meta") if isinstance(source, fx.Node) else None
        if not isinstance(groups, int) or meta is None:
            why = "groups is not a constant int" if meta is not None else "input shape unknown"
            skipped.append(f"call {node.name} ({node.target.__name__}): {why}")
            continue
        name = f"channel_shuffle_{index}"
        traced.add_submodule(name, make_shuffle(kind, meta.shape[1], groups, **options))
        with traced.graph.inserting_after(node):
            replacement = traced.graph.call_module(name, (source,))
        node.replace_all_uses_with(replacement)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.recompile()
    return traced


def convert_shuffles(
    model: nn.Module,
    example_input: torch.Tensor,
    kind: str = "learned",
    *,
    strict: bool = False,
    **options,
) -> nn.Module:
    """A copy of `model` with every channel shuffle replaced by a shuffle of `kind`.

    `nn.ChannelShuffle` modules are replaced in place in the copy; `F.channel_shuffle` and
    `torch.channel_shuffle` calls are found by tracing with `torch.fx`, and the copy is then a
    `GraphModule` with one submodule `channel_shuffle_<i>` per call. Each new shuffle has the
    channel count seen at its site when `example_input` runs through the model, and the call's
    groups. `kind` and `options` are those of `make_shuffle` ("learned" with `init="shuffle"`,
    its default, starts at the shuffle it replaces, so the converted model frozen at once
    computes what the original did).

    Sites that cannot be converted (a module the example input does not reach, a model that
    torch.fx cannot trace, a groups that is not a constant) are listed in one warning, or raise
    `ShuffleConversionError` with `strict=True`; the rest is converted.

    Raises:
        TypeError: example_input is not a tensor.
        ValueError: unknown kind.
        TypeError, ValueError: options the kind's constructor rejects (see `make_shuffle`).
    """
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    if kind not in SHUFFLE_KINDS:
        raise ValueError(f"kind must be one of {SHUFFLE_KINDS}, got {kind!r}")
    converted = copy.deepcopy(model)
    skipped: list[str] = []
    _convert_modules(converted, example_input, kind, options, skipped)
    converted = _convert_calls(converted, example_input, kind, options, skipped)
    if skipped:
        message = "convert_shuffles left these channel shuffles as they were: " + "; ".join(skipped)
        if strict:
            raise ShuffleConversionError(message)
        warnings.warn(message, stacklevel=2)
    return converted
