"""`capture`: a torch.fx graph of a module's forward, traced with concrete example values.

Plain `torch.fx.symbolic_trace` fails on code that real networks are full of: `assert` on
sizes, Python branches on sizes, `len(x.shape)`, `int(x.size(1))`. Here every node also carries
the value it had when the example inputs ran (`node.meta["value"]`), so such Python decisions on
sizes take the example's answer (each one is recorded: the graph is specialised to the example's
shapes there), while a decision on tensor *data* still fails, as it must (the graph could not
stand for the other branch). Modules of `torch.nn` stay whole (leaves), as in `symbolic_trace`.
"""

from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import Callable

import torch
from torch import fx, nn
from torch.fx import _symbolic_trace
from torch.fx.node import map_aggregate

__all__ = ["VALUE", "Capture", "capture"]

VALUE = "value"  # node.meta key of the example value


class Capture:
    """The result of `capture`: the traced graph, and what it assumed about the example."""

    def __init__(self, graph: fx.Graph, specialized: list[str]) -> None:
        self.graph = graph
        # One line per Python decision that took the example's answer ("file.py:12 in forward").
        self.specialized = specialized


class _ConcreteProxy(fx.Proxy):
    """A proxy whose node knows its example value, so Python can ask for sizes."""

    def _value(self):
        return self.node.meta[VALUE]

    def _number(self, kind: Callable, what: str):
        value = self._value()
        if isinstance(value, torch.Tensor):
            raise fx.proxy.TraceError(f"{what} of a tensor depends on its data")
        self.tracer.specialize(what)
        return kind(value)

    def __len__(self) -> int:
        value = self._value()
        if isinstance(value, torch.Tensor):
            return len(value)  # the leading size: a shape, not data
        self.tracer.specialize("len()")
        return len(value)

    def __index__(self) -> int:
        return self._number(int, "an index")

    def __int__(self) -> int:
        return self._number(int, "int()")

    def __float__(self) -> float:
        return self._number(float, "float()")

    def __getattr__(self, name: str):
        return _ConcreteAttribute(self, name)


class _ConcreteAttribute(fx.proxy.Attribute, _ConcreteProxy):
    pass


class _Tracer(fx.Tracer):
    def __init__(self, root: nn.Module, inputs: dict[str, object], leaves: tuple[type, ...]):
        super().__init__()
        self.record_stack_traces = True
        self._root_module = root
        self._inputs = inputs
        self._leaves = leaves
        self._specialized: list[str] = []

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self._leaves) or super().is_leaf_module(m, qualname)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def specialize(self, what: str) -> None:
        frame = _user_frame()
        self._specialized.append(f"{what} at {frame}" if frame else what)

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = obj.node.meta[VALUE]
        if isinstance(value, torch.Tensor):
            raise fx.proxy.TraceError(
                "control flow on tensor data (a branch or assert on a tensor's values) "
                f"at {_user_frame() or 'an unknown place'}"
            )
        self.specialize("a branch or assert on sizes")
        return bool(value)

    def iter(self, obj: fx.Proxy):
        value = obj.node.meta[VALUE]
        return iter([obj[i] for i in range(len(value))])

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, *rest):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, *rest)
        if VALUE not in proxy.node.meta:
            proxy.node.meta[VALUE] = self._evaluate(kind, target, args, kwargs)
        return proxy

    def _evaluate(self, kind: str, target, args, kwargs):
        def concrete(a):
            return a.node.meta[VALUE] if isinstance(a, fx.Proxy) else a

        args = map_aggregate(args, concrete)
        kwargs = map_aggregate(kwargs, concrete)
        with torch.no_grad():
            if kind == "placeholder":
                return self._inputs.get(target, args[0] if args else None)
            if kind == "get_attr":
                return functools.reduce(getattr, target.split("."), self._root_module)
            if kind == "call_function":
                return target(*args, **kwargs)
            if kind == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            if kind == "call_module":
                return _run_leaf(self._root_module.get_submodule(target), args, kwargs)
        return None


def _run_leaf(module: nn.Module, args, kwargs):
    """`module(*args, **kwargs)` in eval mode (a probe must not move BatchNorm statistics),
    with nn.Module's call restored: while fx traces, it patches that call to record nodes."""
    patched = nn.Module.__call__, nn.Module.__getattr__
    was_training = module.training
    nn.Module.__call__ = _symbolic_trace._orig_module_call
    nn.Module.__getattr__ = _symbolic_trace._orig_module_getattr
    try:
        module.eval()
        return module(*args, **kwargs)
    finally:
        nn.Module.__call__, nn.Module.__getattr__ = patched
        module.train(was_training)


def _user_frame() -> str | None:
    """'file.py:line in function' of the innermost frame outside torch and this file."""
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename.replace("\\", "/")
        if "/torch/" in path or path.endswith("/modules/capture.py"):
            continue
        return f"{path.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}"
    return None


def capture(
    module: nn.Module, args: tuple, kwargs: dict | None = None, leaves: tuple[type, ...] = ()
) -> Capture:
    """Traces `module.forward(*args, **kwargs)` with example values on every node.

    Tensor arguments become placeholders; other arguments are fixed to their values (as
    `concrete_args`). Instances of `leaves` (and of `torch.nn`'s own modules) stay whole.

    Raises:
        torch.fx.proxy.TraceError, or whatever the forward raises on proxies: the module cannot
        be traced (for example, a branch on tensor data).
    """
    bound = inspect.signature(module.forward).bind(*args, **(kwargs or {}))
    bound.apply_defaults()
    tensors = {k: v for k, v in bound.arguments.items() if isinstance(v, torch.Tensor)}
    fixed = {k: v for k, v in bound.arguments.items() if k not in tensors}
    tracer = _Tracer(module, tensors, leaves)
    graph = tracer.trace(module, concrete_args=fixed or None)
    return Capture(graph, tracer._specialized)
