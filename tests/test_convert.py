"""`convert_shuffles` on networks written for plain PyTorch: a torchvision-style ShuffleNetV2 with
functional channel shuffles in its units, and one built from `nn.ChannelShuffle` modules."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autoshuffle_ext as asx


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> list:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class InvertedResidual(nn.Module):
    """torchvision's ShuffleNetV2 unit, with its shuffle as a functional call."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(*conv_bn(cin, cin, 3, stride, cin), *conv_bn(cin, half))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            *conv_bn(cin if stride > 1 else half, half),
            nn.ReLU(),
            *conv_bn(half, half, 3, stride, half),
            *conv_bn(half, half),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return F.channel_shuffle(out, 2)


class TinyShuffleNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 12, 3), nn.ReLU())
        self.stage = nn.Sequential(
            InvertedResidual(12, 24, 2), InvertedResidual(24, 24, 1), InvertedResidual(24, 48, 2)
        )
        self.fc = nn.Linear(48, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stage(self.stem(x)).mean((2, 3)))


class ModuleShuffleNet(nn.Module):
    """Group convs mixed by `nn.ChannelShuffle` modules, one of them via torch.channel_shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(*conv_bn(3, 12), nn.ReLU(), nn.ChannelShuffle(3))
        self.b = nn.Sequential(*conv_bn(12, 24, groups=3), nn.ReLU(), nn.ChannelShuffle(4))
        self.c = nn.Sequential(*conv_bn(24, 24, groups=4), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.channel_shuffle(self.c(self.b(self.a(x))), 6)


def _trained_like(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, then eval mode."""
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 16, 16))
    return model.eval()


def _soft(model: nn.Module) -> list[asx.LearnedShuffle]:
    return [m for _, m in asx.structures(model, asx.LearnedShuffle)]


def test_functional_shuffles_of_a_torchvision_style_network_become_learned():
    torch.manual_seed(0)
    model = _trained_like(TinyShuffleNetV2())
    x = torch.randn(2, 3, 16, 16)
    converted = asx.convert_shuffles(model, x, "learned")
    shuffles = _soft(converted)
    assert [m.num_channels for m in shuffles] == [24, 24, 48]
    assert all(m.groups == 2 for m in shuffles)
    # Started at the fixed shuffle (blended), frozen at once: what the original computed.
    frozen = asx.freeze(converted).eval()
    torch.testing.assert_close(frozen(x), model(x), rtol=0, atol=0)
    # The soft model trains: the matrices get gradients.
    converted.train()
    converted(x).sum().backward()
    assert all(m.weight.grad is not None for m in shuffles)
    # The original is left as it was.
    assert not list(asx.structures(model))


def test_shuffle_modules_and_calls_become_learned_and_freeze_to_the_original():
    torch.manual_seed(0)
    model = _trained_like(ModuleShuffleNet())
    x = torch.randn(2, 3, 16, 16)
    converted = asx.convert_shuffles(model, x, "learned", blend=0.0, noise=0.0)
    shuffles = _soft(converted)
    assert sorted((m.num_channels, m.groups) for m in shuffles) == [(12, 3), (24, 4), (24, 6)]
    assert not any(isinstance(m, nn.ChannelShuffle) for m in converted.modules())
    converted.eval()
    torch.testing.assert_close(converted(x), model(x), rtol=1e-6, atol=1e-6)  # M exact: P
    torch.testing.assert_close(asx.freeze(converted)(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["fixed", "random", "sinkhorn", "none"])
def test_other_kinds(kind):
    model = _trained_like(ModuleShuffleNet())
    x = torch.randn(2, 3, 16, 16)
    converted = asx.convert_shuffles(model, x, kind).eval()
    assert converted(x).shape == model(x).shape
    if kind == "fixed":
        torch.testing.assert_close(converted(x), model(x), rtol=0, atol=0)


def test_sites_that_cannot_be_converted_are_named():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unused = nn.ChannelShuffle(2)
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            if y.abs().sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                y = F.channel_shuffle(y, 2)
            return y

    x = torch.randn(1, 3, 4, 4)
    with pytest.warns(UserWarning, match="module unused: not reached by example_input") as record:
        asx.convert_shuffles(Branchy(), x)
    assert "Branchy cannot be traced by torch.fx" in str(record[0].message)
    with pytest.raises(asx.modules.ShuffleConversionError, match="not reached"):
        asx.convert_shuffles(Branchy(), x, strict=True)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"kind must be one of .*, got 'shiny'"):
        asx.convert_shuffles(ModuleShuffleNet(), torch.randn(1, 3, 4, 4), "shiny")
    with pytest.raises(TypeError, match=r"example_input must be a torch\.Tensor.*got tuple"):
        asx.convert_shuffles(ModuleShuffleNet(), (1, 3, 4, 4))
