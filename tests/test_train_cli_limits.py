"""`autoshuffle-train`'s answers to out-of-range flags (issue 20): one line naming the flag, what
it takes and what it got, exit code 2, before anything trains."""

import errno

import pytest

from autoshuffle_ext.train.cli import main

TINY = [
    "--model", "shufflenet_v1_g3_x0_25", "--epochs", "1", "--batch-size", "32",
    "--limit-batches", "2", "--no-progress",
]  # fmt: skip


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main([*TINY, *argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "-1"], "--seed must lie in [0, 4294967295], got -1"),
        (["--seed", "4294967296"], "--seed must lie in [0, 4294967295], got 4294967296"),
    ],
)
def test_out_of_range_seed_is_a_usage_error(capsys, argv, message):
    assert message in _usage_error(capsys, argv)


def test_out_of_range_seeds_are_refused_before_any_training(tmp_path, capsys, monkeypatch):
    import autoshuffle_ext.train.cli as cli

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the seeds were checked")

    monkeypatch.setattr(cli, "run_training", no_training)
    for seeds in ("0,4294967296", "-1,0"):
        assert main([*TINY, f"--seeds={seeds}", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "--seeds takes distinct non-negative integers (at most 4294967295)" in err
        assert repr(seeds) in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "inf"], "--lr must be >= 0 and finite, got inf"),
        (["--lr", "nan"], "--lr must be >= 0 and finite, got nan"),
        (["--momentum", "inf"], "--momentum must be >= 0 and finite, got inf"),
        (["--weight-decay", "inf"], "--weight-decay must be >= 0 and finite, got inf"),
        (["--warmup-epochs", "inf"], "--warmup-epochs must be >= 0 and finite, got inf"),
        (["--penalty-weight", "inf"], "--penalty-weight must be >= 0 and finite, got inf"),
        (["--lr", "-1"], "--lr must be >= 0 and finite, got -1.0"),
        (["--crop-padding", "-1"], "--crop-padding must be >= 0 (0: off), got -1"),
        (["--out", ""], "--out must name a folder, got ''"),
    ],
)
def test_non_finite_and_negative_values_are_usage_errors(capsys, argv, message):
    assert message in _usage_error(capsys, argv)


def test_an_update_that_overflows_a_shuffle_names_the_learning_rate(tmp_path, capsys):
    # Finite, accepted, but M overflows to inf in the first step: a clear line, not the
    # projection's traceback.
    assert main([*TINY, "--shuffle-lr", "3e38", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("autoshuffle-train: error: non-finite structure parameters")
    assert "try a lower --shuffle-lr (got 3e+38)" in err
    assert err.count("\n") == 1


def test_crop_padding_must_be_smaller_than_the_image(tmp_path, capsys):
    assert main([*TINY, "--image-size", "1", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert (
        "--crop-padding must be smaller than the image side (1, --image-size), got 2 "
        "(--dataset digits's default)"
    ) in err
    assert "--lr" not in err
    assert main([*TINY, "--image-size", "3", "--crop-padding", "3", "--out", str(tmp_path)]) == 2
    assert "image side (3, --image-size), got 3;" in capsys.readouterr().err
    assert (
        main([*TINY, "--image-size", "1", "--crop-padding", "0", "--out", str(tmp_path / "b")]) == 0
    )


@pytest.mark.parametrize(
    "argv",
    [["--gate-lr", "0.5"], ["--gate-init", "0.1"], ["--budget-weight", "2"], ["--budget", "0.5"]],
)
def test_learned_group_flags_need_groups_learned(capsys, argv):
    flag = argv[0]
    err = _usage_error(capsys, argv)
    assert f"{flag} applies to --groups learned only, got --groups fixed" in err


def test_learned_group_flags_still_default_with_groups_learned():
    from autoshuffle_ext.modules import GroupsConfig, ShuffleConfig
    from autoshuffle_ext.train.cli import _config, build_parser
    from autoshuffle_ext.train.config import TrainConfig

    args = build_parser().parse_args([*TINY, "--groups", "learned"])
    [groups] = [c for c in _config(args, "learned", None).structures if c.name == "groups"]
    assert groups.gate_init == GroupsConfig().gate_init
    assert groups.budget_weight == GroupsConfig().budget_weight
    args = build_parser().parse_args([*TINY, "--groups", "learned", "--gate-init", "0.25"])
    [groups] = [c for c in _config(args, "learned", None).structures if c.name == "groups"]
    assert groups.gate_init == 0.25
    assert TrainConfig().structures == (ShuffleConfig(),)  # the CLI's defaults


def test_meta_device_is_refused(tmp_path, capsys):
    assert main([*TINY, "--device", "meta", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--device takes auto, cpu, cuda or cuda:N, got 'meta'" in err


def test_a_full_disk_names_the_file(tmp_path, monkeypatch, capsys):
    import autoshuffle_ext.train.checkpoint as checkpoint

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    out = tmp_path / "run"
    assert main([*TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    path = out / "learned" / "checkpoint.pt"
    assert err == f"autoshuffle-train: error: {path}: No space left on device\n"


def test_a_full_disk_names_the_text_file(tmp_path, monkeypatch):
    from pathlib import Path

    from autoshuffle_ext.train.metrics import atomic_write_text

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="No space left on device") as info:
        atomic_write_text(tmp_path / "metrics.json", "{}")
    assert info.value.filename == str(tmp_path / "metrics.json")


def test_train_config_checks_itself_as_the_command_line_does():
    from autoshuffle_ext.modules import ShuffleConfig
    from autoshuffle_ext.train.config import TrainConfig
    from autoshuffle_ext.train.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--lr must be >= 0 and finite, got -1"):
        TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match=r"--epochs must be >= 1, got 0; --seed must lie"):
        TrainConfig(epochs=0, seed=-3)
    with pytest.raises(ConfigError, match=r"structures\[0\] must be a StructureConfig"):
        TrainConfig(structures=("learned",))
    with pytest.raises(ValueError, match="ShuffleConfig: penalty_weight must be >= 0"):
        ShuffleConfig(penalty_weight=float("nan"))
    config = TrainConfig(structures=[ShuffleConfig("sinkhorn")])
    assert config.variant == "sinkhorn" and config.structures == (ShuffleConfig("sinkhorn"),)
    assert config.to_dict()["structures"][0]["structure"] == "shuffle"
