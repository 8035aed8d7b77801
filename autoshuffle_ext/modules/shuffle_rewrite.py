"""Rewriting the shuffle sites of a traced network: each chain of shape ops that computes a
channel shuffle (`find_shuffle_sites`) becomes one module that starts from the site's exact
permutation. The network is traced with torch.fx and example values (`capture`), so the asserts
and size branches of real ShuffleNet code do not stop it; where a module cannot be traced at all
(control flow on tensor data), its children are rewritten one by one and the module keeps its
own code. `asx.convert` drives it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from .capture import VALUE, capture
from .cat_shuffle import cat_shuffle
from .conversion_report import ConversionReport, ConvertedSite
from .hard import FixedShuffle, HardShuffle
from .shuffle_sites import ShuffleSite, describe_permutation, find_shuffle_sites, shuffle_groups
from .structure import LearnedStructure

__all__ = ["Calls", "ShuffleRewrite", "probe"]

# The package's own shuffles stay whole under tracing (their forward is not a channel shuffle).
_LEAVES = (LearnedStructure, HardShuffle, FixedShuffle)
# torch.nn modules whose code never holds a shuffle of the network's own: never traced into.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ChannelShuffle)


# Ops without which code cannot permute channels (reshapes and splits alone cannot).
_PERMUTING = frozenset(
    {"transpose", "permute", "channel_shuffle", "native_channel_shuffle", "swapaxes",
     "swapdims", "movedim", "moveaxis", "t"}
)  # fmt: skip


@dataclass
class Calls:
    """Every module's calls in one probe run: the first call's arguments and output shape, each
    call's tensor shapes, the number of calls, and how many permuting ops ran in the module's
    own code (not its children's)."""

    first: dict[int, tuple[tuple, dict]] = field(default_factory=dict)
    output: dict[int, tuple[int, ...]] = field(default_factory=dict)
    shapes: dict[int, set] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)
    permuting: dict[int, int] = field(default_factory=dict)


class _CountPermuting(TorchFunctionMode):
    def __init__(self, calls: Calls, stack: list[nn.Module]) -> None:
        super().__init__()
        self.calls, self.stack = calls, stack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.stack and getattr(func, "__name__", "") in _PERMUTING:
            key = id(self.stack[-1])
            self.calls.permuting[key] = self.calls.permuting.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def probe(model: nn.Module, args: tuple) -> Calls:
    """Runs `model(*args)` once (eval mode, no grad) and records every module's calls."""
    calls = Calls()
    stack: list[nn.Module] = []

    def enter(module: nn.Module, margs: tuple, mkwargs: dict) -> None:
        def detached(a):
            return a.detach().clone() if isinstance(a, torch.Tensor) else a

        stack.append(module)
        key = id(module)
        if key not in calls.first:
            calls.first[key] = (
                fx.node.map_aggregate(margs, detached),
                fx.node.map_aggregate(mkwargs, detached),
            )
        shapes = tuple(tuple(a.shape) for a in margs if isinstance(a, torch.Tensor))
        calls.shapes.setdefault(key, set()).add(shapes)
        calls.count[key] = calls.count.get(key, 0) + 1

    def leave(module: nn.Module, _args, output) -> None:
        stack.pop()
        if isinstance(output, torch.Tensor):
            calls.output.setdefault(id(module), tuple(output.shape))

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(enter, with_kwargs=True))
        handles.append(m.register_forward_hook(leave, always_call=True))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), _CountPermuting(calls, stack):
            model(*args)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return calls


def _owner(node: fx.Node) -> str:
    """Qualified name of the module whose code holds `node` ("" for the traced root)."""
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack), "") if stack else ""


def _code_place(node: fx.Node) -> str:
    """'file.py:12 in function': the innermost frame of the user's code that made `node`."""
    for line in reversed((node.stack_trace or "").splitlines()):
        line = line.strip()
        if not line.startswith("File "):
            continue
        path, _, rest = line[len("File ") :].partition(", line ")
        path = path.strip('"').replace("\\", "/")
        if "/torch/" in path or path.endswith("/modules/capture.py"):
            continue
        number, _, function = rest.partition(", in ")
        return f"{path.rsplit('/', 1)[-1]}:{number} in {function}"
    return "?"


def _free_name(root: nn.Module, wanted: str) -> str:
    name, index = wanted, 1
    while True:
        try:
            root.get_submodule(name)
        except AttributeError:
            return name
        name, index = f"{wanted}_{index}", index + 1


def _is_pure(node: fx.Node) -> bool:
    """Nodes that compute sizes or views only: safe to drop once nothing uses them."""
    if node.op == "call_method":
        return node.target in ("size", "dim", "numel", "contiguous", "view", "reshape")
    if node.op == "call_function":
        return node.target is getattr or getattr(node.target, "__module__", None) == "_operator"
    return False


class ShuffleRewrite:
    """One rewrite of the shuffle sites of (a copy of) a model: `build(channels, groups, perm)`
    makes each site's module; `accept(module, name)` may refuse a site (the module whose code
    holds it, or the shuffle module, and the new module's name)."""

    def __init__(
        self,
        calls: Calls,
        report: ConversionReport,
        build: Callable[[int, int | None, torch.Tensor], nn.Module],
        accept: Callable[[nn.Module, str], bool],
        structure: str = "shuffle",
        done: set[int] | None = None,
    ) -> None:
        self.calls = calls
        self.report = report
        self.build = build
        self.accept = accept
        self.structure = structure
        self.done = done or set()  # ids of modules the pass has put in already
        self.claimed: set[tuple[int, str]] = set()  # (graph module, name) of new shuffles

    def convert(self, module: nn.Module, prefix: str, args: tuple, kwargs: dict) -> nn.Module:
        """`module` with its shuffle sites converted (a GraphModule), or itself if it has none
        (its children possibly converted in place when it cannot be traced)."""
        try:
            captured = capture(module, args, kwargs, leaves=_LEAVES)
        except Exception as error:  # any tracing failure: convert below it, say so
            self._untraceable(module, prefix, error)
            return module
        modules = dict(module.named_modules())
        sites = [
            site
            for site in find_shuffle_sites(captured.graph, modules)
            if not any(
                n.op == "call_module" and id(modules[n.target]) in self.done for n in site.chain
            )
        ]
        fused = [
            n
            for n in captured.graph.nodes
            if _is_fused_cat_shuffle(n, module)
            and id(module.get_submodule(n.args[0].target)) not in self.done
        ]
        if not sites and not fused:
            return module
        shapes = self.calls.shapes.get(id(module), set())
        if len(shapes) > 1:
            self.report.skipped.append(
                f"{prefix or type(module).__name__}: called at several input shapes "
                f"({sorted(shapes)}); its {len(sites)} shuffle site(s) were left as they were"
            )
            return module
        self.report.specialized += captured.specialized
        graph_module = fx.GraphModule(module, captured.graph, class_name=type(module).__name__)
        changed = [self._replace(graph_module, modules, site, prefix) for site in sites]
        changed += [self._replace_fused(graph_module, node, prefix) for node in fused]
        if not any(changed):
            return module
        self._tidy(graph_module, module)
        only = [n for n in graph_module.graph.nodes if n.op not in ("placeholder", "output")]
        if len(only) == 1 and only[0].op == "call_module" and prefix:
            self.report.sites[-1].name = prefix  # the module was the shuffle: it takes its place
            return graph_module.get_submodule(only[0].target)
        return graph_module

    def _replace(self, root: fx.GraphModule, modules: dict, site: ShuffleSite, prefix: str) -> bool:
        graph = root.graph
        first = site.chain[0]
        if first.op == "call_module" and (id(root), first.target) not in self.claimed:
            local = first.target  # a shuffle module, at its first site: its successor's name
        elif first.op == "call_module":
            local = _free_name(root, first.target)  # the same module at another site
        else:
            owner = _owner(first)
            local = _free_name(root, f"{owner}.channel_shuffle" if owner else "channel_shuffle")
        name = ".".join(p for p in (prefix, local) if p)
        owner = modules.get(first.target) if first.op == "call_module" else None
        if not self.accept(owner or modules.get(_owner(first), root), name):
            return False
        self.claimed.add((id(root), local))
        shuffle = self.build(site.channels, shuffle_groups(site.perm), site.perm)
        root.add_submodule(local, shuffle)
        self.report.sites.append(
            ConvertedSite(
                name=name,
                code=_code_place(site.chain[-1]),
                channels=site.channels,
                what=describe_permutation(site.perm, len(site.pieces)),
                spelling=site.spelling(modules),
                became=type(shuffle).__name__,
                structure=self.structure,
            )
        )
        chain = set(site.chain)
        with graph.inserting_before(first):
            shuffled = graph.call_module(local, (site.source,))
        sizes = [held.numel() for _, held in site.pieces]
        if len(site.pieces) == 1 and sizes[0] == site.channels:
            outputs = [shuffled]
        else:
            with graph.inserting_before(first):
                parts = graph.call_function(torch.split, (shuffled, sizes), {"dim": 1})
                outputs = [
                    graph.call_function(operator.getitem, (parts, i)) for i in range(len(sizes))
                ]
        for (piece, _), output in zip(site.pieces, outputs, strict=True):
            output.meta[VALUE] = piece.meta.get(VALUE)
            piece.replace_all_uses_with(output, delete_user_cb=lambda user: user not in chain)
        for node in reversed(site.chain):
            if not node.users:
                graph.erase_node(node)
        return True

    def _replace_fused(self, root: fx.GraphModule, node: fx.Node, prefix: str) -> bool:
        """`cat_shuffle(shuffle, a, b)` (the package's concat and shuffle in one pass): the
        shuffle module it names is replaced under its own name."""
        local = node.args[0].target
        old = root.get_submodule(local)
        name = ".".join(p for p in (prefix, local) if p)
        if not self.accept(old, name):
            return False
        new = self.build(old.num_channels, shuffle_groups(old.perm), old.perm)
        root.add_submodule(local, new)
        self.claimed.add((id(root), local))
        self.report.sites.append(
            ConvertedSite(
                name=name,
                code=_code_place(node),
                channels=old.num_channels,
                what=describe_permutation(old.perm) + " of a concat",
                spelling=f"cat_shuffle({type(old).__name__})",
                became=type(new).__name__,
                structure=self.structure,
            )
        )
        return True

    def _tidy(self, root: fx.GraphModule, original: nn.Module) -> None:
        graph = root.graph
        for node in reversed(list(graph.nodes)):
            if not node.users and _is_pure(node):
                graph.erase_node(node)
        graph.lint()
        root.recompile()
        root.delete_all_unused_submodules()
        replaced = {name for key, name in self.claimed if key == id(root)}
        _keep_state(root, original, replaced)

    def _untraceable(self, module: nn.Module, prefix: str, error: Exception) -> None:
        reason = (str(error).strip().splitlines() or [""])[0]
        what = (
            f"{prefix or type(module).__name__}: {type(module).__name__} cannot be traced by "
            f"torch.fx ({type(error).__name__}: {reason})"
        )
        permuting = self.calls.permuting.get(id(module), 0)
        if permuting:
            self.report.skipped.append(
                f"{what}, and its own code ran {permuting} permuting op(s) (transpose, permute, "
                "channel_shuffle...): shuffles there were not converted (its submodules were)"
            )
        else:
            self.report.notes.append(
                f"{what}; its own code ran no permuting op on example_input, its submodules "
                "were converted"
            )
        for child_name, child in module.named_children():
            if _is_plain_torch(child) or isinstance(child, _LEAVES):
                continue
            called = self.calls.first.get(id(child))
            if called is None:
                continue
            converted = self.convert(
                child, f"{prefix}.{child_name}" if prefix else child_name, *called
            )
            if converted is not child:
                setattr(module, child_name, converted)


def _is_fused_cat_shuffle(node: fx.Node, root: nn.Module) -> bool:
    if node.op != "call_function" or node.target is not cat_shuffle:
        return False
    shuffle = node.args[0]
    return shuffle.op == "get_attr" and isinstance(
        root.get_submodule(shuffle.target), (FixedShuffle, HardShuffle)
    )


def _is_plain_torch(module: nn.Module) -> bool:
    """A torch.nn module other than the containers: never holds a shuffle of its own."""
    return type(module).__module__.startswith("torch.nn") and not isinstance(module, _CONTAINERS)


def _keep_state(root: nn.Module, original: nn.Module, replaced: set[str]) -> None:
    """Puts back into `root` (a GraphModule of `original`) the parameters and buffers that the
    traced forward does not use, so that `original`'s state_dict still loads, and the learned
    structures it does not call (a shared budget); those of the modules that new shuffles
    replaced (`replaced`, their names) stay out."""
    present = set(root.state_dict().keys())
    for key in original.state_dict().keys():
        if key in present or any(key.startswith(name + ".") for name in replaced):
            continue
        path, _, leaf = key.rpartition(".")
        target = root
        for depth, part in enumerate(path.split(".") if path else []):
            if not hasattr(target, part):
                source = original.get_submodule(".".join(path.split(".")[: depth + 1]))
                target.add_module(part, source)
                break
            target = getattr(target, part)
        else:
            owner = original.get_submodule(path)
            if leaf in owner._parameters:
                target.register_parameter(leaf, owner._parameters[leaf])
            else:
                target.register_buffer(leaf, owner._buffers[leaf])
        present = set(root.state_dict().keys())
    # Structures that hold no state and are never called (a Regularizer over other layers).
    for name, module in original.named_modules():
        if not name or not isinstance(module, LearnedStructure) or name in replaced:
            continue
        try:
            root.get_submodule(name)
        except AttributeError:
            parent, _, child = name.rpartition(".")
            try:
                root.get_submodule(parent).add_module(child, module)
            except AttributeError:
                root.add_module(name.replace(".", "_"), module)
