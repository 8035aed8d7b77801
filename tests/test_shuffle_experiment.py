"""The CPU smoke test of `bench/shuffle_experiment.py`, the paper's comparison as one command for
a lent GPU: on a tiny CIFAR-layout folder it trains every variant and a recipe as parallel
processes, writes the table, the coverage and the curves, skips finished runs on a second call,
and resumes runs that `--stop-after-epochs` cut short."""

import json

import pytest

from bench.shuffle_experiment import main
from tests.test_train_data import write_cifar


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, n_train=(64, 64), n_test=32)
    return root


def _args(data, out, *extra):
    return [
        "--data-dir", str(data), "--out", str(out), "--model", "shufflenet_v1_g8_x0_25",
        "--seeds", "0", "--parallel", "2", "--threads", "1", "--device", "cpu",
        "--train-flags", "--batch-size 16 --limit-batches 2",
        "--recipe", "late=--shuffle-init uniform --penalty-start 0.5",
        *extra,
    ]  # fmt: skip


def test_experiment_trains_every_variant_and_reports(data, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(_args(data, out, "--epochs", "2")) == 0
    report = (out / "experiment.md").read_text()
    for variant in ("fixed", "none", "random", "learned", "learned (late)"):
        assert f"| {variant} |" in report
        folder = "late" if variant == "learned (late)" else "main"
        kind = variant.split()[0]
        assert (out / folder / kind / "seed0" / "result.json").exists()
    assert "fixed - none" in report  # when the shuffle starts to matter, per epoch
    assert "Group coverage" in report
    assert (out / "curves.png").stat().st_size > 0
    record = json.loads((out / "experiment.json").read_text())
    coverage = {row["variant"]: row for row in record["coverage"]}
    # The learned and the random permutations of v1 g8 get a coverage histogram over 1..8.
    assert set(coverage) >= {"random", "learned", "learned (late)"}
    assert set(coverage["random"]["histogram"]) == {str(c) for c in range(1, 9)}
    assert len(record["curves"]["learned"][0]) == 2  # two epochs of metrics
    assert record["curves"]["learned"][0][0]["density"] is not None
    # Everything finished: a second call trains nothing and writes the same table.
    capsys.readouterr()
    assert main(_args(data, out, "--epochs", "2")) == 0
    assert "5 of 5 runs done; 0 to go" in capsys.readouterr().out


def test_experiment_goes_on_in_slices(data, tmp_path):
    out = tmp_path / "slices"
    args = _args(data, out, "--epochs", "2", "--stop-after-epochs", "1", "--variants", "fixed")
    assert main(args) == 0
    run = out / "main" / "fixed" / "seed0"
    assert (run / "checkpoint.pt").exists() and not (run / "result.json").exists()
    assert main(args) == 0  # resumed for its second epoch: finished
    assert json.loads((run / "result.json").read_text())["epochs"] == 2
    # Another budget into the same folder is refused: a table must not mix them.
    assert main(_args(data, out, "--epochs", "3", "--variants", "fixed")) == 2


def test_bad_recipe_is_refused(data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--data-dir", str(data), "--out", str(tmp_path), "--recipe", "no flags"])
    assert "--recipe must be NAME=" in capsys.readouterr().err
