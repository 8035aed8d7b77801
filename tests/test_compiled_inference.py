"""The deployment path: a frozen model compiles with `torch.compile(fullgraph=True)` and exports
with `torch.export`, and both compute what eager does. Covers the frozen learned shuffle (the
gathers), the learned group counts (grouped convs with their folded permutations) and v2's
units, on small CIFAR-stem models so that inductor's compile stays short."""

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.models import shufflenet_v1, shufflenet_v2
from tests.references import randomize_structures_

_OPS = torch.ops.autoshuffle_ext


def _randomized(model: nn.Module) -> nn.Module:
    """The frozen form of `model` with random structures (`randomize_structures_`)."""
    torch.manual_seed(0)
    return asx.freeze(randomize_structures_(model)).eval()


MODELS = {
    "v1_learned_groups": lambda: shufflenet_v1(
        3, 0.25, 10, "cifar", shuffle="learned", pointwise="learned"
    ),
    "v2_learned": lambda: shufflenet_v2(0.5, 10, "cifar", shuffle="learned"),
}


def _custom_ops(graph: torch.fx.Graph) -> list[str]:
    return [
        str(node.target)
        for node in graph.nodes
        if node.op == "call_function" and str(node.target).startswith("autoshuffle_ext.")
    ]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("name", list(MODELS))
def test_frozen_model_compiles_fullgraph_and_matches_eager(name, memory_format):
    torch._dynamo.reset()
    frozen = _randomized(MODELS[name]()).to(memory_format=memory_format)
    x = torch.randn(4, 3, 32, 32).to(memory_format=memory_format)
    compiled = torch.compile(frozen, fullgraph=True)
    with torch.inference_mode():
        expected = frozen(x)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_frozen_model_exports_and_keeps_its_custom_ops(name, tmp_path):
    frozen = _randomized(MODELS[name]())
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(frozen, (x,))
    ops = _custom_ops(program.graph)
    assert ops, "the frozen model should run at least one autoshuffle_ext op"
    if name.startswith("v2"):  # every v2 unit concatenates and shuffles in one pass
        assert ops.count("autoshuffle_ext.cat_gather.default") == 16
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), frozen(x), rtol=0, atol=0)
    # A batch size the export did not see: the program is not specialised to it.
    dynamic = torch.export.export(
        frozen, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},)
    )
    y = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dynamic.module()(y), frozen(y), rtol=0, atol=0)
    # The file a deployment ships: saved, loaded back, still exact.
    torch.export.save(dynamic, tmp_path / "model.pt2")
    loaded = torch.export.load(tmp_path / "model.pt2")
    assert _custom_ops(loaded.graph) == _custom_ops(dynamic.graph)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module()(y), frozen(y), rtol=0, atol=0)
