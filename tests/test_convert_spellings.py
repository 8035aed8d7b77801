"""`convert_shuffles` on networks written the way published ShuffleNet code writes its shuffle:
view/transpose/view, reshape/permute/reshape (the inverse), unflatten/flatten, the shuffle fused
with the v2 split, modules and functional calls; with the idioms that stop plain torch.fx
(`x.data.size()`, asserts and Python branches on sizes)."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.modules import ShuffleConversionError


def shuffle_view_transpose(x: torch.Tensor, groups: int) -> torch.Tensor:
    batchsize, num_channels, height, width = x.data.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


def shuffle_reshape_permute(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[b, c/g, g] then the same transpose: the inverse of ShuffleNet's shuffle."""
    b, c, h, w = x.data.size()
    assert c % groups == 0
    x = x.reshape(b, c // groups, groups, h, w).permute(0, 2, 1, 3, 4)
    return x.reshape(b, c, h, w)


def shuffle_unflatten(x: torch.Tensor, groups: int) -> torch.Tensor:
    if len(x.shape) != 4:
        raise ValueError("4-D input expected")
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


def shuffle_and_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ShuffleNet v2's split fused with the (inverse) shuffle of 2 groups."""
    batchsize, num_channels, height, width = x.data.size()
    assert num_channels % 4 == 0
    x = x.reshape(batchsize * num_channels // 2, 2, height * width)
    x = x.permute(1, 0, 2)
    x = x.reshape(2, -1, num_channels // 2, height, width)
    return x[0], x[1]


FUNCTIONS = {
    "view_transpose": shuffle_view_transpose,
    "reshape_permute": shuffle_reshape_permute,
    "unflatten": shuffle_unflatten,
    "functional": F.channel_shuffle,
    "torch": torch.channel_shuffle,
}
SPELLINGS = [*FUNCTIONS, "module", "fused_split"]


def conv_bn(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, kernel, 1, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(cout)]


class V2Unit(nn.Module):
    """Split, one branch, concat, shuffle of 2 groups; or, with "fused_split", the shuffle
    fused with the split at the start of the unit."""

    def __init__(self, channels: int, spelling: str) -> None:
        super().__init__()
        self.spelling = spelling
        half = channels // 2
        self.branch = nn.Sequential(
            *conv_bn(half, half), nn.ReLU(), *conv_bn(half, half, 3, half), nn.ReLU()
        )
        if spelling == "module":
            self.shuffle = nn.ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spelling == "fused_split":
            x1, x2 = shuffle_and_split(x)
            return torch.cat((x1, self.branch(x2)), 1)
        if x.size(1) % 2 == 0:  # a Python branch on a size
            x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch(x2)), 1)
        if self.spelling == "module":
            return self.shuffle(out)
        return FUNCTIONS[self.spelling](out, 2)


class V1Unit(nn.Module):
    """Grouped 1x1 conv, shuffle of 3 groups, depthwise conv, grouped 1x1 conv, residual."""

    def __init__(self, channels: int, spelling: str) -> None:
        super().__init__()
        self.spelling = "view_transpose" if spelling == "fused_split" else spelling
        self.conv1 = nn.Sequential(*conv_bn(channels, channels, groups=3), nn.ReLU())
        self.shuffle = nn.ChannelShuffle(3) if spelling == "module" else None
        self.conv2 = nn.Sequential(
            *conv_bn(channels, channels, 3, channels), *conv_bn(channels, channels, groups=3)
        )

    def channel_shuffle(self, x: torch.Tensor) -> torch.Tensor:
        if self.shuffle is not None:
            return self.shuffle(x)
        return FUNCTIONS[self.spelling](x, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.channel_shuffle(self.conv1(x))))


class Net(nn.Module):
    def __init__(self, spelling: str, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, width, 3), nn.ReLU())
        self.units = nn.Sequential(
            V2Unit(width, spelling), V1Unit(width, spelling), V2Unit(width, spelling)
        )
        self.fc = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.units(self.stem(x))
        b, c = x.shape[:2]
        return self.fc(x.mean((2, 3)).view(b, c))


# What each spelling's three sites are, for width 12 (g * g <= C names a shuffle by g).
EXPECTED = {
    "view_transpose": ["shuffle g=2", "shuffle g=3", "shuffle g=2"],
    "reshape_permute": ["inverse shuffle g=2", "inverse shuffle g=3", "inverse shuffle g=2"],
    "unflatten": ["shuffle g=2", "shuffle g=3", "shuffle g=2"],
    "functional": ["shuffle g=2", "shuffle g=3", "shuffle g=2"],
    "torch": ["shuffle g=2", "shuffle g=3", "shuffle g=2"],
    "module": ["shuffle g=2", "shuffle g=3", "shuffle g=2"],
    "fused_split": [
        "inverse shuffle g=2 + split in 2", "shuffle g=3", "inverse shuffle g=2 + split in 2"
    ],
}  # fmt: skip


def trained_like(model: nn.Module, width: int = 8) -> nn.Module:
    """Non-trivial BatchNorm statistics, then eval mode."""
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, width, width))
    return model.eval()


def convert(model: nn.Module, x: torch.Tensor, kind: str = "learned", **options):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converted network has nothing to warn about
        return asx.convert_shuffles(model, x, kind, return_report=True, **options)


@pytest.mark.parametrize("width", [12, 24])
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_is_converted_and_frozen_at_once_equals_the_original(spelling, width):
    torch.manual_seed(0)
    model = trained_like(Net(spelling, width))
    x = torch.randn(2, 3, 8, 8)
    converted, report = convert(model, x)
    assert [site.what for site in report.sites] == EXPECTED[spelling]
    assert [site.channels for site in report.sites] == [width] * 3
    assert all(site.became == "LearnedShuffle" for site in report.sites)
    shuffles = [m for _, m in asx.structures(converted, asx.LearnedShuffle)]
    assert len(shuffles) == 3
    frozen = asx.freeze(converted).eval()
    for batch in (x, torch.randn(3, 3, 8, 8)):  # the batch size is not baked in
        torch.testing.assert_close(frozen(batch), model(batch), rtol=0, atol=0)
    # channels_last: the gathers keep the layout. Spellings through view/reshape hand the
    # original's next conv an NCHW tensor, which oneDNN sums in another order (seen: 3e-8).
    channels_last = x.contiguous(memory_format=torch.channels_last)
    exact = spelling in ("module", "functional", "torch")
    tolerance = 0 if exact else 1e-6
    torch.testing.assert_close(
        frozen(channels_last), model(channels_last), rtol=tolerance, atol=tolerance
    )
    assert not list(asx.structures(model))  # the original is left as it was


def test_report_names_the_sites_and_where_they_were_written(capsys):
    model = trained_like(Net("view_transpose", 12))
    _, report = convert(model, torch.randn(1, 3, 8, 8), verbose=True)
    assert [site.name for site in report.sites] == [
        "units.0.channel_shuffle",
        "units.1.channel_shuffle",
        "units.2.channel_shuffle",
    ]
    assert {site.spelling for site in report.sites} == {"view/transpose/contiguous/view"}
    assert all(site.code.startswith("test_convert_spellings.py:") for site in report.sites)
    assert all(site.code.endswith("in shuffle_view_transpose") for site in report.sites)
    # The assert and the size branch were fixed to the example's answer, and said so.
    assert any("test_convert_spellings.py" in s for s in report.specialized)
    printed = capsys.readouterr().out
    assert "3 site(s) converted (shuffle: 3)" in printed
    assert "units.1.channel_shuffle" in printed and "shuffle g=3" in printed
    assert report.rows()[1]["what"] == "shuffle g=3"


@pytest.mark.parametrize("spelling", ["module", "reshape_permute", "fused_split"])
def test_the_original_state_dict_loads_into_the_converted_model(spelling):
    model = trained_like(Net(spelling, 12))
    converted, report = convert(model, torch.randn(1, 3, 8, 8))
    result = converted.load_state_dict(model.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == sorted(f"{s.name}.weight" for s in report.sites)
    original = dict(model.named_parameters())
    for name, parameter in converted.named_parameters():
        if name in original:
            assert parameter is not original[name]  # a copy: training it leaves the original
            torch.testing.assert_close(parameter, original[name], rtol=0, atol=0)


@pytest.mark.parametrize("spelling", ["view_transpose", "fused_split"])
def test_one_training_step_then_freeze_rounds_each_site_exactly(spelling):
    torch.manual_seed(0)
    model = Net(spelling, 12)
    x = torch.randn(4, 3, 8, 8)
    converted, _ = convert(model, x[:1], blend=0.5)
    converted.train()
    opt = torch.optim.SGD(converted.parameters(), lr=0.5)
    asx.attach_projection(opt, converted)
    loss = F.cross_entropy(converted(x), torch.tensor([0, 1, 2, 3])) + asx.penalty(converted)
    loss.backward()
    shuffles = [m for _, m in asx.structures(converted, asx.LearnedShuffle)]
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in shuffles)
    opt.step()
    converted.eval()
    frozen = asx.freeze(converted).eval()
    # The soft model with every M set to the permutation it rounds to is the frozen model.
    with torch.no_grad():
        for m in shuffles:
            m.weight.copy_(asx.permutation_matrix(m.perm, m.weight.dtype))
    torch.testing.assert_close(frozen(x), converted(x), rtol=1e-5, atol=1e-5)


def test_converted_models_compile_and_export():
    torch.manual_seed(0)
    model = trained_like(Net("fused_split", 12))
    x = torch.randn(2, 3, 8, 8)
    converted, _ = convert(model, x)
    converted.eval()
    compiled = torch.compile(converted, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), converted(x), rtol=1e-6, atol=1e-6)
    frozen = asx.freeze(converted).eval()
    exported = torch.export.export(frozen, (x,)).module()
    torch.testing.assert_close(exported(x), model(x), rtol=0, atol=0)


class SharedShuffle(nn.Module):
    """One nn.ChannelShuffle registered twice and used at two widths."""

    def __init__(self) -> None:
        super().__init__()
        self.shuffle = nn.ChannelShuffle(2)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 1), self.shuffle, nn.Conv2d(8, 12, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(x))


def test_a_shuffle_module_at_two_sites_and_two_widths_becomes_two_shuffles():
    model = trained_like(SharedShuffle(), 4)
    x = torch.randn(2, 3, 4, 4)
    converted, report = convert(model, x, blend=0.0, noise=0.0)
    assert sorted(site.channels for site in report.sites) == [8, 12]
    assert len({site.name for site in report.sites}) == 2
    assert not any(isinstance(m, nn.ChannelShuffle) for m in converted.modules())
    torch.testing.assert_close(asx.freeze(converted)(x), model(x), rtol=0, atol=0)


class DataBranch(nn.Module):
    """Control flow on tensor data in the root (torch.fx cannot trace it); shuffles in
    submodules only: a module, and a unit that writes its shuffle as view/transpose/view."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 12, 1), nn.ChannelShuffle(3))
        self.b = V2Unit(12, "view_transpose")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        if y.abs().sum() > 0:
            y = self.b(y)
        return y


def test_an_untraceable_model_with_shuffles_in_its_submodules_is_converted_without_a_warning():
    model = trained_like(DataBranch(), 4)
    x = torch.randn(2, 3, 4, 4)
    converted, report = convert(model, x)  # converts with warnings as errors
    # The module is replaced under its own name; the unit's shuffle joins the unit, traced.
    assert sorted(site.name for site in report.sites) == ["a.1", "b.channel_shuffle"]
    assert isinstance(converted, DataBranch)  # kept its own code
    assert "DataBranch cannot be traced by torch.fx" in report.notes[0]
    torch.testing.assert_close(asx.freeze(converted)(x), model(x), rtol=0, atol=0)


class NotShuffles(nn.Module):
    """Shape ops that are not channel shuffles."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        b, c, h, w = y.shape
        a, d = y.chunk(2, dim=1)  # a split
        spatial = y.transpose(2, 3)  # a spatial transpose (h == w: same shape)
        nhwc = y.permute(0, 2, 3, 1).reshape(b, h, w, c)
        same = y.view(b, 2, c // 2, h, w).view(b, c, h, w)  # nothing moved
        flat = y.view(b, -1)
        return a + d, spatial, nhwc, same, flat, F.channel_shuffle(y, 1)


def test_chains_that_are_not_shuffles_are_left_and_no_shuffle_is_said():
    x = torch.randn(1, 3, 4, 4)
    with pytest.warns(UserWarning, match="no channel shuffle found in NotShuffles"):
        converted, report = asx.convert_shuffles(NotShuffles(), x, return_report=True)
    assert report.sites == []
    assert not isinstance(converted, torch.fx.GraphModule)
    with pytest.raises(ShuffleConversionError, match="no channel shuffle found"):
        asx.convert_shuffles(NotShuffles(), x, strict=True)


def test_fixed_kind_keeps_each_sites_own_permutation():
    model = trained_like(Net("reshape_permute", 12))
    x = torch.randn(2, 3, 8, 8)
    converted, report = convert(model, x, "fixed")
    # ShuffleNet's permutations, inverse ones included, stay on F.channel_shuffle's kernel.
    assert [s.became for s in report.sites] == ["FixedShuffle"] * 3
    torch.testing.assert_close(converted(x), model(x), rtol=0, atol=0)
    for kind in ("random", "none", "sinkhorn"):
        other, _ = convert(model, x, kind)
        assert other.eval()(x).shape == model(x).shape


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_packages_own_fixed_models_convert_like_any_network(version):
    """ShuffleNet built with the fixed shuffle, then converted: the learned variant, starting at
    the fixed shuffle (v2's units concat and shuffle in one `cat_shuffle` call). Its shuffles
    are modules at one site each: swapped in place, the model keeps its classes and code."""
    torch.manual_seed(0)
    if version == "v1":
        model = asx.models.shufflenet_v1(3, 0.5, num_classes=10, stem="cifar")
    else:
        model = asx.models.shufflenet_v2(0.5, num_classes=10, stem="cifar")
    model = trained_like(model, 32)
    x = torch.randn(2, 3, 32, 32)
    converted, report = convert(model, x[:1])
    assert len(report.sites) == 16
    expected = "shuffle g=3" if version == "v1" else "shuffle g=2"
    assert {site.what for site in report.sites} == {expected}
    assert {site.spelling for site in report.sites} == {"FixedShuffle"}
    assert type(converted) is type(model)
    assert len(list(asx.structures(converted, asx.LearnedShuffle))) == 16
    torch.testing.assert_close(asx.freeze(converted).eval()(x), model(x), rtol=0, atol=0)
    # A frozen model converts back to learned, starting from its permutations.
    again, report = convert(asx.freeze(converted).eval(), x[:1])
    assert len(report.sites) == 16
    torch.testing.assert_close(asx.freeze(again).eval()(x), model(x), rtol=0, atol=0)
