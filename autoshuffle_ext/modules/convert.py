"""`convert`: the one pass that puts learned structures into a network, ours or a user's.

In the style of torchao's `quantize_(model, config, filter_fn)`: each `StructureConfig` names the
sites it replaces and builds its module there. Shuffle sites are found by what the network's
shape ops compute (`shuffle_sites`), on a trace with example values (`shuffle_rewrite`); a
shuffle that is a module of its own (the package's `FixedShuffle`, an `nn.ChannelShuffle`) is
swapped in place, so the network keeps its classes and code, and only shuffles spelled in code
make the result a rewritten `torch.fx.GraphModule`. Module sites (`nn.Conv2d`...) are swapped in
place. `convert_shuffles` is the pass with one `ShuffleConfig`.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..ops.channel_gather import fixed_shuffle_perm
from .conversion_report import ConversionReport, ConvertedSite, ShuffleConversionError
from .hard import FixedShuffle, HardShuffle
from .shuffle_config import ShuffleConfig
from .shuffle_rewrite import Calls, ShuffleRewrite, probe
from .shuffle_sites import describe_permutation, shuffle_groups
from .structure import LearnedStructure
from .structure_config import ModuleSite, StructureConfig

__all__ = ["convert", "convert_shuffles"]

FilterFn = Callable[[nn.Module, str], bool]


def _example_args(example_input: torch.Tensor | tuple) -> tuple:
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, tuple) and any(isinstance(a, torch.Tensor) for a in example_input):
        return example_input
    raise TypeError(
        "example_input must be a torch.Tensor, or a tuple of the forward's arguments with "
        f"a tensor among them, got {type(example_input).__name__} {example_input!r:.80}"
    )


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent), child, module)


def _registrations(root: nn.Module) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _, module in root.named_modules(remove_duplicate=False):
        counts[id(module)] = counts.get(id(module), 0) + 1
    return counts


def _shuffle_modules_in_place(
    root: nn.Module,
    config: StructureConfig,
    calls: Calls | None,
    accept: FilterFn,
    build: Callable,
    report: ConversionReport,
) -> set[int]:
    """Swaps every shuffle module that stands at one site (registered once, called at most once)
    for the config's shuffle, under its own name."""
    registered = _registrations(root)
    done: set[int] = set()
    for name, module in list(root.named_modules()):
        if not isinstance(module, FixedShuffle | HardShuffle | nn.ChannelShuffle) or not name:
            continue
        key = id(module)
        if registered[key] > 1 or (calls is not None and calls.count.get(key, 0) > 1):
            continue  # one module at several sites: each site gets its own (the rewrite)
        if isinstance(module, nn.ChannelShuffle):
            if calls is None or key not in calls.first:
                continue  # its width is known from a call only
            channels = calls.first[key][0][0].shape[1]
            perm = fixed_shuffle_perm(channels, module.groups)
        else:
            channels, perm = module.num_channels, module.perm.cpu()
        if not accept(module, name):
            continue
        new = build(channels, shuffle_groups(perm), perm)
        _set_module(root, name, new)
        done.add(id(new))
        report.sites.append(
            ConvertedSite(
                name=name,
                code="",
                channels=channels,
                what=describe_permutation(perm),
                spelling=type(module).__name__,
                became=type(new).__name__,
                structure=config.name,
            )
        )
    return done


def _convert_modules(
    root: nn.Module,
    configs: Sequence[StructureConfig],
    calls: Calls | None,
    accept: FilterFn,
    report: ConversionReport,
) -> None:
    built: dict[int, list] = {id(c): [] for c in configs}
    replaced: list[str] = []
    registered = _registrations(root)
    for name, module in list(root.named_modules()):
        if not name or isinstance(module, LearnedStructure):
            continue
        if any(name.startswith(prefix + ".") for prefix in replaced):
            continue
        key = id(module)
        input_shape = output_shape = None
        if calls is not None and key in calls.first:
            first = calls.first[key][0]
            input_shape = tuple(first[0].shape) if first and hasattr(first[0], "shape") else None
            output_shape = calls.output.get(key)
        count = None if calls is None else calls.count.get(key, 0)
        site = ModuleSite(name, input_shape, output_shape, count)
        matching = [c for c in configs if c.matches(module, site) and accept(module, name)]
        if not matching:
            continue
        if registered[key] > 1:
            report.skipped.append(
                f"module {name}: registered under several names (one module shared); "
                f"{type(matching[0]).__name__} left it as it is"
            )
            continue
        config = matching[0]
        new = config.build(module, site)
        if new is None:
            continue
        if len(matching) > 1:
            others = ", ".join(type(c).__name__ for c in matching[1:])
            report.notes.append(f"{name}: {type(config).__name__} took it ({others} matched too)")
        _set_module(root, name, new)
        replaced.append(name)
        built[id(config)].append((site, new))
        report.sites.append(
            ConvertedSite(
                name=name,
                code="",
                channels=getattr(module, "out_channels", getattr(module, "num_channels", 0)),
                what=_describe_module(module),
                spelling=type(module).__name__,
                became=type(new).__name__,
                structure=config.name,
            )
        )
    for config in configs:
        report.notes += config.finish(root, built[id(config)])


def _describe_module(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k = "x".join(str(s) for s in module.kernel_size)
        text = f"conv {k} {module.in_channels}->{module.out_channels}"
        return text + (f" g={module.groups}" if module.groups > 1 else "")
    return type(module).__name__


def convert(
    model: nn.Module,
    configs: StructureConfig | Iterable[StructureConfig],
    example_input: torch.Tensor | tuple | None = None,
    *,
    filter_fn: FilterFn | None = None,
    generator: torch.Generator | None = None,
    strict: bool = False,
    verbose: bool = False,
    return_report: bool = False,
) -> nn.Module | tuple[nn.Module, ConversionReport]:
    """A copy of `model` with learned structures put in place by `configs` (one config or a
    list; e.g. `ShuffleConfig("learned")`, `GroupsConfig("learned", budget=0.4)`).

    Shuffle sites (a config with `sites == "shuffles"`, at most one): any chain of shape ops
    (view/reshape/flatten, transpose/permute, contiguous, indexing, chunk/split/unbind,
    `F.channel_shuffle`, `nn.ChannelShuffle`, the package's shuffles) that maps an [N, C, ...]
    tensor onto a channel permutation of itself, or onto pieces of one; each becomes the
    config's module, started from the site's exact permutation. A shuffle module standing at
    one site is swapped in place; shuffles written in code are found by tracing the model on
    `example_input` with torch.fx (asserts and Python branches on sizes take the example's
    answer, listed in the report; a module that cannot be traced keeps its code and has its
    children converted), and the result is then a `torch.fx.GraphModule` with the original
    class name and parameter names. Without `example_input` only the package's own shuffle
    modules are converted.

    Module sites: every module that a config `matches` (first config wins) and `filter_fn(module,
    name)` accepts is replaced in place by `config.build`; a config may then add a model-level
    term (`finish`). `filter_fn` also sees each shuffle site (the module whose code holds it, or
    the shuffle module, and the new module's name).

    Args:
        example_input: a tensor, or a tuple of the forward's arguments; the model runs once on
            it (eval mode, no grad) to find shuffles and sizes.
        generator: the random draws of the built modules (random permutations, noise), in
            site order; None: torch's global generator.
        strict: raise `ShuffleConversionError` instead of warning when a site could not be
            converted or nothing was found.
        verbose: print the report (a table of the sites).
        return_report: return `(model, ConversionReport)`.

    The model itself is not changed.

    Raises:
        TypeError: a config that is not a StructureConfig; example_input neither a tensor nor a
            tuple holding one.
        ValueError: two shuffle configs; options a structure's constructor rejects.
    """
    configs = [configs] if isinstance(configs, StructureConfig) else list(configs)
    for i, config in enumerate(configs):
        if not isinstance(config, StructureConfig):
            raise TypeError(
                f"configs[{i}] must be a StructureConfig, got {type(config).__name__} {config!r}"
            )
    shuffle_configs = [c for c in configs if c.sites == "shuffles"]
    if len(shuffle_configs) > 1:
        raise ValueError(
            "configs may hold one config of the shuffle sites, got "
            + ", ".join(type(c).__name__ for c in shuffle_configs)
        )
    args = None if example_input is None else _example_args(example_input)
    accept: FilterFn = filter_fn or (lambda module, name: True)
    work = copy.deepcopy(model)
    report = ConversionReport()
    calls = probe(work, args) if args is not None else None
    if shuffle_configs:
        config = shuffle_configs[0]

        def build(channels: int, groups: int | None, perm: torch.Tensor) -> nn.Module:
            return config.build_shuffle(channels, groups, perm, generator)

        done = _shuffle_modules_in_place(work, config, calls, accept, build, report)
        if calls is not None:
            rewrite = ShuffleRewrite(calls, report, build, accept, config.name, done)
            work = rewrite.convert(work, "", args, {})
            for name, module in work.named_modules(remove_duplicate=False):
                if isinstance(module, nn.ChannelShuffle) and id(module) not in calls.first:
                    report.skipped.append(f"module {name}: not reached by example_input")
        else:
            report.notes.append(
                "without example_input only the package's shuffle modules were looked for "
                "(shuffles written in code and nn.ChannelShuffle need one)"
            )
    module_configs = [c for c in configs if c.sites != "shuffles"]
    if module_configs:
        _convert_modules(work, module_configs, calls, accept, report)
    if not report.sites:
        found = f"nothing converted in {type(model).__name__}"
        if shuffle_configs:
            found = f"no channel shuffle found in {type(model).__name__}"
        report.skipped.append(f"{found} ({'; '.join(report.notes)})" if report.notes else found)
    if verbose:
        print(report)
    if report.skipped:
        message = "convert: " + "; ".join(report.skipped)
        if strict:
            raise ShuffleConversionError(message)
        warnings.warn(message, stacklevel=2)
    return (work, report) if return_report else work


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
    """A copy of `model` with every channel shuffle replaced by a shuffle of `kind`: the pass
    `convert(model, ShuffleConfig(kind, **options), example_input)` (see `convert`).

    `options` are `ShuffleConfig` fields (penalty_weight, init, blend, noise, projection_iters,
    lr) and `generator`. Each site's module starts from the site's exact permutation ("learned" and
    "sinkhorn" start near it, "fixed" is it), named after the module whose code held it
    (`stage.0.channel_shuffle`), or the shuffle module it replaces. Frozen at once, a learned
    conversion computes what the original did.

    Raises:
        TypeError: example_input is neither a tensor nor a tuple holding one; an option that is
            not a ShuffleConfig field.
        ValueError: unknown kind, or options out of range.
    """
    generator = options.pop("generator", None)
    fields = {f.name for f in dataclasses.fields(ShuffleConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(
            f"convert_shuffles got options that are not ShuffleConfig fields: {unknown} "
            f"(fields: {sorted(fields - {'kind'})})"
        )
    _example_args(example_input)
    config = ShuffleConfig(kind=kind, **options)
    return convert(
        model,
        config,
        example_input,
        generator=generator,
        strict=strict,
        verbose=verbose,
        return_report=return_report,
    )
