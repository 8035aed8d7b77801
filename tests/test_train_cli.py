"""`autoshuffle-train` end to end on the embedded digits, and its answers to bad input."""

import json
import subprocess
import sys

import pytest
import torch

import autoshuffle_ext as asx
from autoshuffle_ext.models import build_model
from autoshuffle_ext.train.cli import build_parser, main
from autoshuffle_ext.train.config import TrainConfig

TINY = [
    "--model", "shufflenet_v1_g3_x0_25", "--epochs", "1", "--batch-size", "32",
    "--limit-batches", "2", "--no-progress",
]  # fmt: skip


def test_compare_smoke_run_writes_every_artifact_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--compare", "fixed,learned,sinkhorn", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = (
        "| variant | seed | soft acc | frozen acc | params | shuffle params | MFLOPs | s/epoch |"
    )
    assert header in printed
    for kind in ("fixed", "learned", "sinkhorn"):
        assert f"| {kind} |" in printed
        run = out / kind
        for name in ("checkpoint.pt", "metrics.csv", "metrics.json", "report.md", "curves.png"):
            assert (run / name).is_file(), (kind, name)
        assert (run / "permutations.png").is_file() == (kind != "fixed")
        result = json.loads((run / "result.json").read_text())
        assert result["variant"] == kind and 0.0 <= result["frozen_acc"] <= 1.0
    rows = json.loads((out / "comparison.json").read_text())["runs"]
    assert [r["variant"] for r in rows] == ["fixed", "learned", "sinkhorn"]
    assert rows[0]["params"] == rows[1]["params"] and rows[1]["shuffle_params"] > 0
    assert rows[0]["macs"] == rows[1]["macs"] == rows[2]["macs"]
    assert rows[0]["final_penalty"] is None and rows[1]["final_penalty"] is not None
    assert rows[0]["moved"] is None and 0 <= rows[1]["moved"] <= rows[1]["shuffle_params"]
    assert "| learned |" in (out / "comparison.md").read_text()


def test_help_documents_every_flag_with_its_default():
    parser = build_parser()
    formatter = parser._get_formatter()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flags) >= 25
    for action in flags:
        assert "default" in formatter._get_help_string(action), action.option_strings


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "autoshuffle_ext.train", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--penalty-weight" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "resnet50"], "unknown model 'resnet50'"),
        (["--dataset", "cifar10", "--data-dir", "{tmp}/nowhere"], "no such folder"),
        (["--dataset", "cifar10"], "needs --data-dir"),
        (["--compare", "fixed,shiny"], "--compare takes distinct kinds"),
        (["--seeds", "0,0"], "--seeds takes distinct non-negative integers"),
        (["--seeds", "0,x"], "--seeds takes distinct non-negative integers"),
        (["--seeds", "0,1", "--seed", "3"], "--seed and --seeds cannot both apply"),
        (["--data-dir", "{tmp}"], "--data-dir does not apply to --dataset digits"),
        (["--device", "cuda:7"], "CUDA is not available"),
    ],
)
def test_bad_input_is_named_and_exits_non_zero(tmp_path, capsys, argv, message):
    if message == "CUDA is not available" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*TINY, *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoshuffle-train: error:") and message in err
    assert not (tmp_path / "run").exists()


def test_bad_flag_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_a_used_run_directory_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--out", str(out)]) == 0
    checkpoint = out / "learned" / "checkpoint.pt"
    before = checkpoint.read_bytes()

    assert main([*TINY, "--out", str(out)]) == 2
    assert "pass --resume" in capsys.readouterr().err

    other_model = [*TINY, "--model", "shufflenet_v2_x0_5", "--out", str(out), "--resume"]
    assert main(other_model) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err
    assert "model: checkpoint 'shufflenet_v1_g3_x0_25', now 'shufflenet_v2_x0_5'" in err
    assert checkpoint.read_bytes() == before

    # Resuming a finished run re-evaluates it and leaves the checkpoint as it was.
    assert main([*TINY, "--out", str(out), "--resume"]) == 0
    assert checkpoint.read_bytes() == before


def _summary(out):
    return {
        row["variant"]: row for row in json.loads((out / "comparison.json").read_text())["summary"]
    }


def test_seeds_run_every_variant_per_seed_resume_and_aggregate(tmp_path, capsys):
    argv = [*TINY, "--epochs", "2", "--compare", "fixed,random", "--seeds", "0,1"]
    whole = tmp_path / "whole"
    assert main([*argv, "--out", str(whole)]) == 0
    # The same comparison interrupted after every epoch and resumed until it finishes.
    parts = tmp_path / "parts"
    assert main([*argv, "--out", str(parts), "--stop-after-epochs", "1"]) == 0
    assert not (parts / "comparison.json").exists()
    for _ in range(8):
        assert main([*argv, "--out", str(parts), "--resume", "--stop-after-epochs", "1"]) == 0
        if (parts / "comparison.json").exists():
            break
    printed = capsys.readouterr().out
    assert "Over seeds (mean ± sample std)" in printed and "| random | 0,1 |" in printed

    runs = json.loads((whole / "comparison.json").read_text())["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [
        ("fixed", 0), ("random", 0), ("fixed", 1), ("random", 1)
    ]  # fmt: skip
    resumed = json.loads((parts / "comparison.json").read_text())["runs"]

    def untimed(rows):
        return [{k: v for k, v in r.items() if k != "time_per_epoch"} for r in rows]

    assert untimed(runs) == untimed(resumed)
    acc = {(r["variant"], r["seed"]): r["frozen_acc"] for r in runs}
    summary = _summary(whole)
    random_row = summary["random"]
    assert random_row["seeds"] == [0, 1]
    assert random_row["frozen_acc"]["mean"] == pytest.approx(
        (acc["random", 0] + acc["random", 1]) / 2
    )
    diffs = [100 * (acc["random", s] - acc["fixed", s]) for s in (0, 1)]
    assert random_row["minus_fixed_points"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert random_row["minus_fixed_points"]["std"] == pytest.approx(
        abs(diffs[0] - diffs[1]) / 2**0.5
    )
    assert summary["fixed"]["minus_fixed_points"] is None
    assert (whole / "comparison.png").is_file()
    for kind in ("fixed", "random"):
        for seed in (0, 1):
            assert (whole / kind / f"seed{seed}" / "result.json").is_file()


def test_random_shuffle_is_seeded_saved_and_different_per_seed(tmp_path):
    out = tmp_path / "run"
    assert main([*TINY, "--shuffle", "random", "--seeds", "0,1", "--out", str(out)]) == 0
    perms = {}
    for seed in (0, 1):
        state = torch.load(out / "random" / f"seed{seed}" / "checkpoint.pt", weights_only=False)
        perms[seed] = {k: v for k, v in state["model"].items() if k.endswith("shuffle.perm")}
        assert perms[seed]
        for perm in perms[seed].values():
            assert torch.equal(perm.sort().values, torch.arange(perm.numel()))
        frozen = torch.load(out / "random" / f"seed{seed}" / "model_frozen.pt")
        for key, perm in perms[seed].items():
            # freeze folds a v1 unit's shuffle into one gather after the depthwise conv
            assert torch.equal(frozen[key.replace("shuffle.perm", "depthwise.2.perm")], perm)
    assert any(not torch.equal(perms[0][k], perms[1][k]) for k in perms[0])
    again = tmp_path / "again"
    assert main([*TINY, "--shuffle", "random", "--seed", "1", "--out", str(again)]) == 0
    state = torch.load(again / "random" / "checkpoint.pt", weights_only=False)
    for key, perm in perms[1].items():
        assert torch.equal(state["model"][key], perm)


@pytest.mark.parametrize("size", ["0", "-5"])
def test_image_size_must_be_positive(capsys, size):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, "--image-size", size])
    assert exit_info.value.code == 2
    assert f"--image-size must be >= 1, got {size}" in capsys.readouterr().err


def test_an_unwritable_out_is_named_before_training(tmp_path, monkeypatch, capsys):
    import autoshuffle_ext.train.cli as cli

    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # as on a read-only mount
    out = tmp_path / "ro" / "run"
    assert main([*TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: cannot write there ({tmp_path} is not writable)" in err
    assert not out.exists()


def test_a_file_system_error_while_training_is_one_line(tmp_path, monkeypatch, capsys):
    import autoshuffle_ext.train.cli as cli

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / "run"))

    monkeypatch.setattr(cli, "run_training", read_only)
    assert main([*TINY, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"autoshuffle-train: error: {tmp_path / 'run'}: Read-only file system\n"


def test_learned_groups_train_with_a_budget_and_are_reported(tmp_path):
    out = tmp_path / "run"
    # A tight budget and gates started near 0: the budget term flips gates in the first steps.
    argv = [*TINY, "--groups", "learned", "--budget", "0.05", "--budget-weight", "100"]
    assert main([*argv, "--gate-init", "1e-4", "--out", str(out)]) == 0
    report = (out / "learned" / "report.md").read_text()
    assert "| stages.0.0.expand.0 | DGConv2d |" in report
    result = json.loads((out / "learned" / "result.json").read_text())
    groups = [r["groups"] for r in result["layers"] if r["kind"] == "DGConv2d"]
    assert groups and all(g >= 1 for g in groups)
    (budget,) = [r for r in result["layers"] if r["kind"] == "GroupBudget"]
    assert budget["budget"] == 0.05 and budget["groups"] == groups
    start = build_model("shufflenet_v1_g3_x0_25", 10, "cifar", [asx.GroupsConfig(budget=1.0)])
    assert groups != start.group_budget.report()["groups"]  # the params below are not the start's
    frozen = torch.load(out / "learned" / "model_frozen.pt")
    buffers = ("running_mean", "running_var", "num_batches_tracked", "perm")
    params = sum(v.numel() for k, v in frozen.items() if not k.endswith(buffers))
    assert result["params"] == params  # the inference form's, grouped convs included


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "0.5"], "--budget applies to --groups learned only"),
        (["--groups", "learned", "--budget", "0"], "--budget must lie in (0, 1], got 0.0"),
        (["--budget-weight", "-1"], "--budget-weight must be >= 0 and finite, got -1.0"),
        (["--gate-init", "0"], "--gate-init must be > 0 and finite, got 0.0"),
        (["--gate-lr", "-0.5"], "--gate-lr must be >= 0 and finite, got -0.5"),
        (["--shuffle-lr", "inf"], "--shuffle-lr must be >= 0 and finite, got inf"),
    ],
)
def test_budget_flags_are_checked(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_gate_flags_reach_the_gates(tmp_path):
    out = tmp_path / "run"
    argv = [*TINY, "--groups", "learned", "--gate-init", "0.125", "--gate-lr", "0"]
    assert main([*argv, "--out", str(out)]) == 0
    state = torch.load(out / "learned" / "checkpoint.pt", weights_only=False)["model"]
    gates = [v for k, v in state.items() if k.endswith(".gates")]
    assert gates and all(torch.all(g.abs() == 0.125) for g in gates)  # lr 0: never moved


def test_gates_start_at_gate_init_and_train_at_gate_lr():
    from autoshuffle_ext.train.loop import _param_groups

    structures = (asx.ShuffleConfig(lr=0.01), asx.GroupsConfig(gate_init=0.05, lr=0.3))
    config = TrainConfig(structures=structures, lr=0.1)
    model = build_model(config.model, 10, "cifar", config.structures)
    convs = [m for m in model.modules() if isinstance(m, asx.DGConv2d)]
    assert convs and all(torch.all(m.gates.abs() == 0.05) for m in convs)
    groups = _param_groups(model, config)
    by_name = {g.get("name"): g for g in groups}
    gate_group, shuffle_group = by_name["gate"], by_name["shuffle"]
    assert gate_group["lr"] == 0.3 and gate_group["weight_decay"] == 0.0
    assert {id(p) for p in gate_group["params"]} == {id(m.gates) for m in convs}
    assert shuffle_group["lr"] == 0.01 and shuffle_group["params"]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_learned_groups_reach_v2_through_the_same_pass():
    model = build_model("shufflenet_v2_x0_5", 10, "cifar", [asx.GroupsConfig()])
    convs = [m for m in model.modules() if isinstance(m, asx.DGConv2d)]
    assert len(convs) == 3 * 3 + 13 * 2 + 1  # v2's 1x1 convs, all dense at the start
    assert {m.num_groups() for m in convs} == {1}
