"""`convert_shuffles`: put a shuffle of this package (learned, by default) in place of every
channel shuffle of an existing network, however the network spells it.

The network is traced with torch.fx and example values (`capture`), so the asserts and size
branches of real ShuffleNet code do not stop it; the shuffle sites are found by what their
chains of shape ops compute (`find_shuffle_sites`); each site becomes one module that starts
from the site's exact permutation. Where a module cannot be traced at all (control flow on
tensor data), its children are converted one by one, and the module keeps its own code.
"""

from __future__ import annotations

import copy
import operator
import warnings
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.overrides import TorchFunctionMode

from .capture import VALUE, capture
from .cat_shuffle import cat_shuffle
from .factory import SHUFFLE_KINDS, make_shuffle
from .hard import FixedShuffle, HardShuffle
from .shuffle_sites import ShuffleSite, describe_permutation, find_shuffle_sites, shuffle_groups
from .structure import LearnedStructure

__all__ = ["ConversionReport", "ConvertedSite", "ShuffleConversionError", "convert_shuffles"]

# The package's own shuffles stay whole under tracing (their forward is not a channel shuffle).
_LEAVES = (LearnedStructure, HardShuffle, FixedShuffle)
# torch.nn modules whose code never holds a shuffle of the network's own: never traced into.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ChannelShuffle)


class ShuffleConversionError(ValueError):
    """Raised by `convert_shuffles(strict=True)` when a shuffle site cannot be converted, or
    when the model has none."""


@dataclass
class ConvertedSite:
    """One converted shuffle site: a row of `ConversionReport`."""

    name: str  # qualified name of the new module in the converted model
    code: str  # where the shuffle was written ("file.py:12 in channel_shuffle")
    channels: int
    what: str  # "shuffle g=2", "inverse shuffle g=3", "shuffle g=2 + split in 2", "permutation"
    spelling: str  # the chain of ops it was written as ("view/transpose/contiguous/view")
    became: str  # class of the module put there


@dataclass
class ConversionReport:
    """What `convert_shuffles` did: the sites it converted, the places it could not look into
    or convert (`skipped`), and the Python decisions on sizes that the converted graph fixed to
    the example input's answer (`specialized`)."""

    sites: list[ConvertedSite] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    specialized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said, not warned: nothing was left behind

    def rows(self) -> list[dict]:
        return [vars(site) for site in self.sites]

    def __str__(self) -> str:
        head = ("site", "channels", "what", "written as", "at", "became")
        rows = [(s.name, str(s.channels), s.what, s.spelling, s.code, s.became) for s in self.sites]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [f"convert_shuffles: {len(self.sites)} shuffle site(s) converted"]
        for row in [head, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if self.specialized:
            lines.append(
                f"{len(self.specialized)} Python decision(s) on sizes fixed to the example "
                "input's: " + "; ".join(sorted(set(self.specialized)))
            )
        lines += [f"not converted: {why}" for why in self.skipped]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


# Ops without which code cannot permute channels (reshapes and splits alone cannot).
_PERMUTING = frozenset(
    {"transpose", "permute", "channel_shuffle", "native_channel_shuffle", "swapaxes",
     "swapdims", "movedim", "moveaxis", "t"}
)  # fmt: skip


@dataclass
class _Calls:
    """Every module's calls in one probe run: the first call's arguments, each call's tensor
    shapes, and how many permuting ops ran in the module's own code (not its children's)."""

    first: dict[int, tuple[tuple, dict]] = field(default_factory=dict)
    shapes: dict[int, set] = field(default_factory=dict)
    permuting: dict[int, int] = field(default_factory=dict)


class _CountPermuting(TorchFunctionMode):
    def __init__(self, calls: _Calls, stack: list[nn.Module]) -> None:
        super().__init__()
        self.calls, self.stack = calls, stack

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.stack and getattr(func, "__name__", "") in _PERMUTING:
            key = id(self.stack[-1])
            self.calls.permuting[key] = self.calls.permuting.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def _probe(model: nn.Module, args: tuple) -> _Calls:
    calls = _Calls()
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

    def leave(module: nn.Module, _args, _output) -> None:
        stack.pop()

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


class _Pass:
    """One `convert_shuffles` run over (a copy of) a model."""

    def __init__(self, model: nn.Module, args: tuple, kind: str, options: dict) -> None:
        self.model = model
        self.args = args
        self.kind = kind
        self.options = options
        self.report = ConversionReport()
        self.calls = _probe(model, args)
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
        sites = find_shuffle_sites(captured.graph, modules)
        fused = [n for n in captured.graph.nodes if _is_fused_cat_shuffle(n, module)]
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
        for site in sites:
            self._replace(graph_module, modules, site, prefix)
        for node in fused:
            self._replace_fused(graph_module, node, prefix)
        self._tidy(graph_module, module)
        only = [n for n in graph_module.graph.nodes if n.op not in ("placeholder", "output")]
        if len(only) == 1 and only[0].op == "call_module" and prefix:
            self.report.sites[-1].name = prefix  # the module was the shuffle: it takes its place
            return graph_module.get_submodule(only[0].target)
        return graph_module

    def _replace(self, root: fx.GraphModule, modules: dict, site: ShuffleSite, prefix: str):
        graph = root.graph
        first = site.chain[0]
        if first.op == "call_module" and (id(root), first.target) not in self.claimed:
            local = first.target  # a shuffle module, at its first site: its successor's name
        elif first.op == "call_module":
            local = _free_name(root, first.target)  # the same module at another site
        else:
            owner = _owner(first)
            local = _free_name(root, f"{owner}.channel_shuffle" if owner else "channel_shuffle")
        self.claimed.add((id(root), local))
        groups = shuffle_groups(site.perm)
        shuffle = make_shuffle(self.kind, site.channels, groups, perm=site.perm, **self.options)
        root.add_submodule(local, shuffle)
        name = ".".join(p for p in (prefix, local) if p)
        self.report.sites.append(
            ConvertedSite(
                name=name,
                code=_code_place(site.chain[-1]),
                channels=site.channels,
                what=describe_permutation(site.perm, len(site.pieces)),
                spelling=site.spelling(modules),
                became=type(shuffle).__name__,
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

    def _replace_fused(self, root: fx.GraphModule, node: fx.Node, prefix: str) -> None:
        """`cat_shuffle(shuffle, a, b)` (the package's concat and shuffle in one pass): the
        shuffle module it names is replaced under its own name."""
        local = node.args[0].target
        old = root.get_submodule(local)
        new = make_shuffle(self.kind, old.num_channels, None, perm=old.perm, **self.options)
        root.add_submodule(local, new)
        self.claimed.add((id(root), local))
        self.report.sites.append(
            ConvertedSite(
                name=".".join(p for p in (prefix, local) if p),
                code=_code_place(node),
                channels=old.num_channels,
                what=describe_permutation(old.perm) + " of a concat",
                spelling=f"cat_shuffle({type(old).__name__})",
                became=type(new).__name__,
            )
        )

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
            if _is_plain_torch(child):
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
    traced forward does not use, so that `original`'s state_dict still loads; those of the
    modules that new shuffles replaced (`replaced`, their names) stay out."""
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


def convert_shuffles(
    model: nn.Module,
    example_input: torch.Tensor | tuple,
    kind: str = "learned",
    *,
    strict: bool = False,
    verbose: bool = False,
    return_report: bool = False,
    **options,
) -> nn.Module | tuple[nn.Module, ConversionReport]:
    """A copy of `model` with every channel shuffle replaced by a shuffle of `kind`.

    A shuffle site is any chain of shape ops (view/reshape/flatten, transpose/permute,
    contiguous, indexing, chunk/split/unbind, `F.channel_shuffle`, `nn.ChannelShuffle`...) that
    maps an [N, C, ...] tensor onto a channel permutation of itself, or onto pieces of one (a
    shuffle fused with a split). Sites are found by running each chain on an input that holds
    every element's index, whatever the spelling; each becomes a module `make_shuffle(kind, C,
    g, perm=...)` that starts from the site's exact permutation ("learned" and "sinkhorn" start
    near it, "fixed" is it), named after the module whose code held it
    (`stage.0.channel_shuffle`), or the `nn.ChannelShuffle` it replaces. Frozen at once, a
    learned conversion computes what the original did.

    The model is traced with torch.fx on `example_input` (a tensor, or a tuple of the forward's
    arguments): asserts and Python branches on sizes take the example's answer (listed in the
    report); a module that cannot be traced (a branch on tensor data) keeps its code and has its
    children converted. The result is a `torch.fx.GraphModule` (the original class name, the
    original parameter and buffer names, plus the shuffles) when a site was converted, else an
    unchanged copy. `model` itself is not changed.

    Args:
        strict: raise `ShuffleConversionError` instead of warning when a site could not be
            converted or none was found.
        verbose: print the report (a table of the sites).
        return_report: return `(model, ConversionReport)`.
        options: keyword arguments of the shuffle's constructor (see `make_shuffle`).

    Raises:
        TypeError: example_input is neither a tensor nor a tuple holding one.
        ValueError: unknown kind.
        TypeError, ValueError: options the kind's constructor rejects (see `make_shuffle`).
    """
    if isinstance(example_input, torch.Tensor):
        args = (example_input,)
    elif isinstance(example_input, tuple) and any(
        isinstance(a, torch.Tensor) for a in example_input
    ):
        args = example_input
    else:
        raise TypeError(
            "example_input must be a torch.Tensor, or a tuple of the forward's arguments with "
            f"a tensor among them, got {type(example_input).__name__} {example_input!r:.80}"
        )
    if kind not in SHUFFLE_KINDS:
        raise ValueError(f"kind must be one of {SHUFFLE_KINDS}, got {kind!r}")
    work = _Pass(copy.deepcopy(model), args, kind, options)
    converted = work.convert(work.model, "", args, {})
    report = work.report
    for name, module in work.model.named_modules(remove_duplicate=False):
        if isinstance(module, nn.ChannelShuffle) and id(module) not in work.calls.first:
            report.skipped.append(f"module {name}: not reached by example_input")
    if not report.sites:
        found = f"no channel shuffle found in {type(model).__name__}"
        report.skipped.append(f"{found} ({'; '.join(report.notes)})" if report.notes else found)
    if verbose:
        print(report)
    if report.skipped:
        message = "convert_shuffles: " + "; ".join(report.skipped)
        if strict:
            raise ShuffleConversionError(message)
        warnings.warn(message, stacklevel=2)
    return (converted, report) if return_report else converted
