"""A structure written outside the package, with its own config: the conversion pass applies it
to a network, `autoshuffle-train --plugin` offers the flag its config declares and trains it, and
`freeze` turns it into its inference form; nothing in the package names it."""

import argparse
import importlib
import json
import sys
import textwrap

import pytest
import torch
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.modules import STRUCTURE_CONFIGS
from autoshuffle_ext.train.cli import main

PLUGIN = textwrap.dedent(
    '''
    """A learned channel mask after every ReLU: gains trained toward {0, 1}."""
    import argparse
    from dataclasses import dataclass
    from typing import ClassVar

    import torch
    from torch import nn

    import autoshuffle_ext as asx


    class ChannelGain(asx.LearnedStructure):
        param_group = "gain"

        def __init__(self, channels, penalty_weight):
            super().__init__()
            self.gain = nn.Parameter(torch.full((channels,), 0.75))
            self.penalty_weight = penalty_weight

        def forward(self, x):
            return x * self.gain.view(1, -1, *([1] * (x.dim() - 2)))

        def raw_penalty(self):
            return (self.gain * (1 - self.gain)).sum()

        def project_(self):
            self.gain.clamp_(0.0, 1.0)

        def to_inference(self):
            return Mask((self.gain.detach() > 0.5).to(self.gain.dtype))

        def macs(self, inputs, output):
            return output[0].numel(), output[0].numel()


    class Mask(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, x):
            return x * self.mask.view(1, -1, *([1] * (x.dim() - 2)))


    @asx.register_config
    @dataclass
    class GainConfig(asx.StructureConfig):
        weight: float = 0.1
        name: ClassVar[str] = "gain"

        def problems(self):
            return [] if self.weight >= 0 else [f"weight must be >= 0, got {self.weight}"]

        def matches(self, module, site):
            return isinstance(module, nn.ReLU) and site.output_shape is not None

        def build(self, module, site):
            return nn.Sequential(module, ChannelGain(site.output_shape[1], self.weight))

        @classmethod
        def add_arguments(cls, parser):
            group = parser.add_argument_group("learned channel gains (a plugin)")
            group.add_argument("--channel-gain", type=float, default=None, help="its lambda")

        @classmethod
        def from_arguments(cls, args):
            if args.channel_gain is None:
                return None
            return cls.from_flags({"weight": "--channel-gain"}, weight=args.channel_gain)
    '''
)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "gain_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    registered = list(STRUCTURE_CONFIGS)
    sys.modules.pop("gain_plugin", None)
    yield importlib.import_module("gain_plugin")
    sys.modules.pop("gain_plugin", None)
    STRUCTURE_CONFIGS[:] = registered  # other tests see the package's flags only


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


def test_the_pass_applies_a_users_structure_and_freeze_turns_it_exact(plugin):
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(4, 3, 6, 6)
    converted, report = asx.convert(net, plugin.GainConfig(0.2), x[:1], return_report=True)
    assert [(s.name, s.became, s.structure) for s in report.sites] == [
        ("act", "Sequential", "gain")
    ]
    gain = converted.act[1]
    assert isinstance(gain, plugin.ChannelGain) and gain.gain.shape == (8,)
    assert set(converted.state_dict()) == set(net.state_dict()) | {"act.1.gain"}
    optimizer = torch.optim.SGD(converted.parameters(), lr=5.0)
    asx.attach_projection(optimizer, converted)
    loss = converted(x).pow(2).mean() + asx.penalty(converted)
    loss.backward()
    optimizer.step()
    assert gain.gain.min() >= 0 and gain.gain.max() <= 1  # projected after the step
    with torch.no_grad():
        gain.gain.copy_((gain.gain > 0.5).float())  # on the constraint's corners
    frozen = asx.freeze(converted)
    assert isinstance(frozen.act[1], plugin.Mask) and not list(asx.structures(frozen))
    torch.testing.assert_close(frozen(x), converted(x), rtol=0, atol=0)


def test_the_training_program_offers_the_plugins_flag_and_trains_it(plugin, tmp_path, capsys):
    STRUCTURE_CONFIGS.remove(plugin.GainConfig)
    sys.modules.pop("gain_plugin")  # --plugin imports it, and its config registers its flag
    out = tmp_path / "run"
    argv = [
        "--plugin", "gain_plugin", "--model", "shufflenet_v1_g3_x0_25", "--epochs", "1",
        "--batch-size", "32", "--limit-batches", "2", "--no-progress",
        "--channel-gain", "0.05", "--shuffle", "fixed", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "fixed" / "result.json").read_text())
    gains = [row for row in result["layers"] if row["kind"] == "ChannelGain"]
    assert len(gains) == 1 + 16  # after the stem's ReLU and each unit's
    assert result["config"]["structures"] == [
        {"structure": "shuffle", **result["config"]["structures"][0]} | {"kind": "fixed"},
        {"structure": "gain", "weight": 0.05},
    ]
    frozen = torch.load(out / "fixed" / "model_frozen.pt")
    assert sum(key.endswith(".mask") for key in frozen) == len(gains)
    checkpoint = torch.load(out / "fixed" / "checkpoint.pt", weights_only=False)
    names = [g.get("name") for g in checkpoint["optimizer"]["param_groups"]]
    assert "gain" in names  # its own parameter group, from its hint
    capsys.readouterr()
    # Its flag's problems are named like the package's own.
    with pytest.raises(SystemExit):
        main([*argv[:-2], "--channel-gain", "-1", "--out", str(tmp_path / "bad")])
    assert "--channel-gain must be >= 0, got -1.0" in capsys.readouterr().err


def test_register_config_refuses_what_is_not_a_config_and_a_taken_name():
    with pytest.raises(TypeError, match="StructureConfig subclass"):
        asx.register_config(argparse.Namespace)

    class Other(asx.StructureConfig):
        name = "shuffle"

    with pytest.raises(ValueError, match="'shuffle' is already registered"):
        asx.register_config(Other)
