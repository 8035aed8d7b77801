"""The shuffle modules: LearnedShuffle, SinkhornShuffle, HardShuffle, FixedShuffle, and the
whole-model helpers (penalty, attach_projection, freeze, shuffle_report)."""

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autoshuffle_ext as asx
from autoshuffle_ext.modules import initial_matrix, make_shuffle
from tests.references import reference_penalty, reference_shuffle_mix


def reference_mix(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    return reference_shuffle_mix(x, M)[0]


def with_matrix(module: asx.LearnedShuffle, M: torch.Tensor) -> asx.LearnedShuffle:
    with torch.no_grad():
        module.weight.copy_(M)
    return module


def small_model(kind: str, channels: int = 12, groups: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, channels, 1, groups=1),
        make_shuffle(kind, channels, groups),
        nn.Conv2d(channels, channels, 3, padding=1, groups=groups),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 5),
    )


@pytest.mark.parametrize("shape", [(2, 12, 5, 7), (1, 12, 1, 1), (0, 12, 3, 3), (4, 12)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_learned_matches_the_reference_mixing(shape, channels_last):
    module = asx.LearnedShuffle(12, groups=3)
    x = torch.randn(shape)
    if channels_last and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    y = module(x)
    torch.testing.assert_close(y, reference_mix(x, module.weight.detach()))
    if channels_last and x.dim() == 4:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("channels_last", [False, True])
def test_on_a_permutation_soft_equals_hard(channels_last):
    perm = torch.randperm(24)
    module = with_matrix(asx.LearnedShuffle(24, groups=4), asx.permutation_matrix(perm))
    x = torch.randn(3, 24, 6, 5)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    assert torch.equal(module(x), asx.HardShuffle(perm)(x))
    assert torch.equal(module.perm, perm)
    assert module.penalty().item() == 0.0


def test_shuffle_init_rounds_to_the_fixed_shuffle():
    x = torch.randn(2, 18, 4, 4)
    fixed = asx.FixedShuffle(18, 3)
    exact = asx.LearnedShuffle(18, groups=3, blend=0.0, noise=0.0)
    assert torch.equal(exact(x), fixed(x))
    blended = asx.LearnedShuffle(18, groups=3)  # default blend toward uniform, with noise
    assert not torch.equal(blended(x), fixed(x))
    assert torch.equal(asx.freeze(blended)(x), fixed(x))
    assert torch.equal(fixed.perm, asx.fixed_shuffle_perm(18, 3))


@pytest.mark.parametrize("init", ["shuffle", "identity", "random", "uniform"])
def test_initial_matrices_are_doubly_stochastic(init):
    M = initial_matrix(30, 5, init, generator=torch.Generator().manual_seed(1))
    assert (M >= 0).all()
    torch.testing.assert_close(M.sum(0), torch.ones(30), atol=1e-5, rtol=0)
    torch.testing.assert_close(M.sum(1), torch.ones(30), atol=1e-5, rtol=0)
    if init == "identity":
        assert torch.equal(asx.round_to_permutation(M), torch.arange(30))


def test_random_start_rounds_to_its_seeded_permutation():
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(4))
    M = initial_matrix(30, 5, "random", blend=0.6, generator=torch.Generator().manual_seed(4))
    assert torch.equal(asx.round_to_permutation(M), perm)
    assert not torch.equal(perm, torch.arange(30))


def test_penalty_sums_weighted_terms_and_reuses_the_forward_value():
    model = nn.Sequential(
        asx.LearnedShuffle(8, groups=2, penalty_weight=0.5),
        asx.FixedShuffle(8, 2),
        asx.LearnedShuffle(8, groups=4, penalty_weight=2.0, init="uniform"),
    )
    expected = 0.5 * reference_penalty(model[0].weight) + 2.0 * reference_penalty(model[2].weight)
    torch.testing.assert_close(asx.penalty(model), expected)
    model(torch.randn(2, 8, 3, 3))
    total = asx.penalty(model)
    torch.testing.assert_close(total, expected)
    total.backward()
    grad = model[0].weight.grad.clone()
    reference = model[0].weight.detach().clone().requires_grad_()
    (0.5 * reference_penalty(reference)).backward()
    torch.testing.assert_close(grad, reference.grad)


def test_penalty_is_recomputed_after_the_matrix_changes():
    module = asx.LearnedShuffle(6, groups=2, penalty_weight=1.0)
    module(torch.randn(2, 6, 2, 2))
    before = module.penalty().item()
    with torch.no_grad():
        module.weight.copy_(initial_matrix(6, init="uniform", noise=0.0))
    assert module.penalty().item() == pytest.approx(reference_penalty(module.weight).item())
    assert module.penalty().item() != pytest.approx(before)


def test_penalty_is_recomputed_after_the_matrix_data_is_swapped():
    module = asx.LearnedShuffle(4, groups=2, penalty_weight=1.0)
    module(torch.randn(2, 4, 3, 3))
    assert module.penalty().item() > 0
    module.weight.data = torch.eye(4)
    assert module.penalty().item() == 0.0


def test_penalty_of_a_model_without_learned_shuffles_is_zero():
    assert asx.penalty(small_model("fixed")).item() == 0.0


def test_attach_projection_keeps_matrices_doubly_stochastic():
    model = small_model("learned")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    handle = asx.attach_projection(opt, model)
    for _ in range(3):
        opt.zero_grad()
        loss = model(torch.randn(4, 3, 6, 6)).square().mean() + asx.penalty(model)
        loss.backward()
        opt.step()
        M = model[1].weight.detach()
        assert (M >= 0).all()
        assert (M.sum(0) - 1).abs().max() < 1e-4
        assert (M.sum(1) - 1).abs().max() < 1e-4
    handle.remove()
    with torch.no_grad():
        model[1].weight.add_(-1.0)
    opt.step()  # no hook anymore: the matrix stays off the polytope
    assert (model[1].weight < 0).any()


def test_attach_projection_projects_same_sized_matrices_together():
    model = nn.Sequential(
        *(asx.LearnedShuffle(6, groups=2) for _ in range(3)), asx.LearnedShuffle(4, 2)
    )
    expected = [m.weight.detach() - 0.01 * torch.randn(m.weight.shape) for m in model]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    asx.attach_projection(opt, model)
    with torch.no_grad():
        for m, e in zip(model, expected, strict=True):
            m.weight.copy_(e)
    opt.step()
    for m, e in zip(model, expected, strict=True):
        torch.testing.assert_close(m.weight.detach(), asx.project_doubly_stochastic_(e.clone()))


def test_attach_projection_rejects_an_optimizer_without_the_matrix():
    model = small_model("learned")
    opt = torch.optim.SGD(model[0].parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"missing: 1"):
        asx.attach_projection(opt, model)


@pytest.mark.parametrize("kind", ["learned", "sinkhorn"])
def test_freeze_replaces_soft_shuffles_by_exact_gathers(kind):
    model = small_model(kind).eval()
    frozen = asx.freeze(model)
    assert isinstance(frozen[1], asx.HardShuffle)
    assert not isinstance(model[1], asx.HardShuffle)  # the original keeps training
    expected = model[1].perm
    assert torch.equal(frozen[1].perm, expected)
    in_place = asx.freeze(model, inplace=True)
    assert in_place is model and isinstance(model[1], asx.HardShuffle)


def test_freeze_preserves_outputs_when_matrices_are_permutations():
    model = small_model("learned").eval()
    with_matrix(model[1], asx.permutation_matrix(torch.randperm(12)))
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(asx.freeze(model)(x), model(x))


def test_state_dict_round_trip():
    torch.manual_seed(0)
    model = small_model("learned")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    torch.manual_seed(1)
    other = small_model("learned")
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer))
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(other(x), model(x))
    hard = asx.freeze(model)
    restored = asx.freeze(small_model("learned"))
    restored.load_state_dict(hard.state_dict())
    assert torch.equal(restored(x), hard(x))


def test_sinkhorn_matrix_is_doubly_stochastic_and_trains():
    module = asx.SinkhornShuffle(10, groups=2, iters=50)
    M = module.matrix()
    torch.testing.assert_close(M.sum(0), torch.ones(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(M.sum(1), torch.ones(10), atol=1e-5, rtol=0)
    x = torch.randn(3, 10, 2, 2)
    torch.testing.assert_close(module(x), reference_mix(x, M.detach()))
    module(x).square().sum().backward()
    assert module.logits.grad is not None and module.logits.grad.abs().sum() > 0


def test_shuffle_report_rows():
    model = nn.Sequential(asx.LearnedShuffle(12, groups=3), asx.SinkhornShuffle(12, groups=3))
    with_matrix(model[0], asx.permutation_matrix(torch.arange(12)))
    rows = asx.shuffle_report(model)
    assert [r["name"] for r in rows] == ["0", "1"]
    assert rows[0]["penalty"] == 0.0 and rows[0]["distance"] == 0.0
    identity_vs_fixed = int((torch.arange(12) != asx.fixed_shuffle_perm(12, 3)).sum())
    assert rows[0]["moved"] == identity_vs_fixed
    assert rows[1]["kind"] == "SinkhornShuffle" and rows[1]["moved"] == 0
    assert rows[1]["penalty"] > 0


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_compiles_fullgraph(mode):
    model = small_model("learned")
    model.train(mode == "train")
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(compiled(x), model(x))
    if mode == "train":
        compiled(x).sum().backward()
        assert model[1].weight.grad is not None


def test_make_shuffle_kinds():
    assert isinstance(make_shuffle("fixed", 6, 3), asx.FixedShuffle)
    assert isinstance(make_shuffle("learned", 6, 3), asx.LearnedShuffle)
    assert isinstance(make_shuffle("sinkhorn", 6, 3), asx.SinkhornShuffle)
    assert isinstance(make_shuffle("none", 6, 3), nn.Identity)
    with pytest.raises(ValueError, match=r"shuffle kind must be one of .*, got 'shiny'"):
        make_shuffle("shiny", 6, 3)


def test_random_kind_is_a_seeded_hard_permutation():
    draw = make_shuffle("random", 12, 3, generator=torch.Generator().manual_seed(7))
    again = make_shuffle("random", 12, 3, generator=torch.Generator().manual_seed(7))
    assert isinstance(draw, asx.HardShuffle) and torch.equal(draw.perm, again.perm)
    assert torch.equal(draw.perm, torch.randperm(12, generator=torch.Generator().manual_seed(7)))
    x = torch.randn(2, 12, 3, 3)
    assert torch.equal(draw(x), x[:, draw.perm])
    assert asx.freeze(nn.Sequential(draw))[0] is not draw  # a copy, holding the same perm
    assert torch.equal(asx.freeze(nn.Sequential(draw))[0].perm, draw.perm)
    with pytest.raises(TypeError, match="takes only generator"):
        make_shuffle("random", 12, 3, init="uniform")


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: asx.LearnedShuffle(12), "init='shuffle' needs groups"),
        (lambda: asx.LearnedShuffle(12, 5), "num_channels must be divisible by groups"),
        (lambda: asx.LearnedShuffle(12, 3, init="spiral"), "init must be one of"),
        (lambda: asx.LearnedShuffle(12, 3, penalty_weight=-1), "penalty_weight must be >= 0"),
        (lambda: asx.SinkhornShuffle(12, 3, temperature=0), "temperature must be > 0"),
        (lambda: asx.FixedShuffle(12, 0), "groups must be >= 1, got 0"),
        (lambda: asx.HardShuffle(torch.tensor([0, 0, 1])), "perm must be a permutation"),
    ],
)
def test_bad_construction_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: asx.LearnedShuffle(6, 3, noise=float("inf")), ValueError, "noise must be"),
        (
            lambda: asx.LearnedShuffle(6, 3, penalty_weight=float("nan")),
            ValueError,
            "penalty_weight must be >= 0 and finite, got nan",
        ),
        (
            lambda: asx.SinkhornShuffle(6, 3, temperature=float("nan")),
            ValueError,
            "temperature must be > 0 and finite, got nan",
        ),
        (
            lambda: asx.LearnedShuffle(7, groups=3, init="uniform"),
            ValueError,
            "num_channels must be divisible by groups, got 7 and 3",
        ),
        (lambda: asx.LearnedShuffle(6.0), TypeError, "num_channels must be an int, got float"),
        (lambda: asx.LearnedShuffle("6"), TypeError, "num_channels must be an int, got str"),
        (lambda: asx.SinkhornShuffle(6, 3.0), TypeError, "groups must be an int, got float"),
        (lambda: asx.LearnedShuffle(True), TypeError, "num_channels must be an int, got bool"),
    ],
)
def test_arguments_that_would_train_nothing_are_refused_at_construction(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_a_bad_perm_does_not_load_into_a_hard_shuffle():
    hard = asx.HardShuffle(torch.arange(3))
    with pytest.raises(ValueError, match=r"state_dict\['perm'\] must be a permutation"):
        hard.load_state_dict({"perm": torch.tensor([0, 0, 0])})
    with pytest.raises(ValueError, match="must have length 3, got 4"):
        hard.load_state_dict({"perm": torch.arange(4)})
    assert torch.equal(hard.perm, torch.arange(3))
    hard.load_state_dict({"perm": torch.tensor([2, 0, 1])})
    assert torch.equal(hard.perm, torch.tensor([2, 0, 1]))
    model = nn.Sequential(asx.HardShuffle(torch.arange(3)))
    with pytest.raises(ValueError, match=r"state_dict\['0.perm'\]"):
        model.load_state_dict({"0.perm": torch.tensor([1, 1, 0])})


@pytest.mark.parametrize(
    "module",
    [
        asx.LearnedShuffle(12, 3),
        asx.SinkhornShuffle(12, 3),
        asx.FixedShuffle(12, 3),
        asx.HardShuffle(torch.randperm(12)),
    ],
)
def test_wrong_channel_count_names_the_shapes(module):
    with pytest.raises(
        ValueError, match=r"input x must have shape \[N, 12, \.\.\.\], got \(2, 8, 3, 3\)"
    ):
        module(torch.randn(2, 8, 3, 3))


def test_fixed_shuffle_equals_channel_shuffle():
    x = torch.randn(2, 12, 3, 3)
    assert torch.equal(asx.FixedShuffle(12, 4)(x), F.channel_shuffle(x, 4))
