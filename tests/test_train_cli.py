"""`autoshuffle-train` end to end on the embedded digits, and its answers to bad input."""

import json
import subprocess
import sys

import pytest
import torch

from autoshuffle_ext.train.cli import build_parser, main

TINY = [
    "--model", "shufflenet_v1_g3_x0_25", "--epochs", "1", "--batch-size", "32",
    "--limit-batches", "2", "--no-progress",
]  # fmt: skip


def test_compare_smoke_run_writes_every_artifact_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--compare", "fixed,learned,sinkhorn", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = "| shuffle | soft acc | frozen acc | params | shuffle params | MFLOPs | s/epoch |"
    assert header in printed
    for kind in ("fixed", "learned", "sinkhorn"):
        assert f"| {kind} |" in printed
        run = out / kind
        for name in ("checkpoint.pt", "metrics.csv", "metrics.json", "report.md", "curves.png"):
            assert (run / name).is_file(), (kind, name)
        assert (run / "permutations.png").is_file() == (kind != "fixed")
        result = json.loads((run / "result.json").read_text())
        assert result["shuffle"] == kind and 0.0 <= result["frozen_acc"] <= 1.0
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["shuffle"] for r in rows] == ["fixed", "learned", "sinkhorn"]
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
