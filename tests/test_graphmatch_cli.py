"""`autoshuffle-graphmatch`: bad flag values, flags that cannot apply together, and bad --qap or
--plot paths are one line on stderr and exit code 2, found before any work starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoshuffle_ext.matching.cli import main

EXAMPLE = Path(__file__).parents[1] / "autoshuffle_ext" / "matching" / "examples" / "grid12.dat"
PREFIX = "autoshuffle-graphmatch: error: "


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of a usage error (argparse: a usage line, then the error, exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(PREFIX), err
    return last.removeprefix(PREFIX)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--n", "10", "--trials", "0"], "argument --trials: expected an integer >= 1, got 0"),
        (["--trials", "-3"], "argument --trials: expected an integer >= 1, got -3"),
        (["--trials", "x"], "argument --trials: expected an integer, got 'x'"),
        (["--n", "0"], "argument --n: expected an integer >= 1, got 0"),
        (["--noise", "1.5"], "argument --noise: expected a number in [0, 1], got 1.5"),
        (["--noise", "nan"], "argument --noise: expected a number in [0, 1], got nan"),
        (["--density", "-0.1"], "argument --density: expected a number in [0, 1], got -0.1"),
        (["--density", "inf"], "argument --density: expected a number in [0, 1], got inf"),
        (["--restarts", "0"], "argument --restarts: expected an integer >= 1, got 0"),
        (["--seed", "-1"], "argument --seed: expected an integer in [0, 2**64 - 1], got -1"),
        (["--seed", str(2**64)], "argument --seed: expected an integer in [0, 2**64 - 1], got"),
        (["--two-layer", "--starts", "0"], "argument --starts: expected an integer >= 1, got 0"),
        (["--two-layer", "--dim", "0"], "argument --dim: expected an integer >= 1, got 0"),
        (["--two-layer", "--n", "0"], "argument --n: expected an integer >= 1, got 0"),
        (["--two-layer", "--trials", "0"], "argument --trials: expected an integer >= 1, got 0"),
    ],
)
def test_numeric_flags_out_of_range_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _usage_error(argv, capsys).startswith(message)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--qap", str(EXAMPLE), "--two-layer"],
            "argument --two-layer: not allowed with argument --qap",
        ),
        (
            ["--two-layer", "--qap", str(EXAMPLE)],
            "argument --qap: not allowed with argument --two-layer",
        ),
        # --qap reads the size from its file and solves one instance.
        (["--qap", str(EXAMPLE), "--n", "5"], "argument --n: not allowed with argument --qap"),
        (
            ["--qap", str(EXAMPLE), "--trials", "2"],
            "argument --trials: not allowed with argument --qap",
        ),
        (
            ["--qap", str(EXAMPLE), "--noise", "0.1"],
            "argument --noise: not allowed with argument --qap",
        ),
        (
            ["--qap", str(EXAMPLE), "--density", "0.3"],
            "argument --density: not allowed with argument --qap",
        ),
        (
            ["--qap", str(EXAMPLE), "--starts", "2"],
            "argument --starts: not allowed with argument --qap",
        ),
        (["--qap", str(EXAMPLE), "--dim", "4"], "argument --dim: not allowed with argument --qap"),
        (
            ["--qap", str(EXAMPLE), "--plot", "p.png"],
            "argument --plot: not allowed with argument --qap",
        ),
        # --two-layer compares the penalty path with the relaxation on its own problems.
        (
            ["--two-layer", "--solver", "faq"],
            "argument --solver: not allowed with argument --two-layer",
        ),
        (
            ["--two-layer", "--restarts", "2"],
            "argument --restarts: not allowed with argument --two-layer",
        ),
        (
            ["--two-layer", "--noise", "0.1"],
            "argument --noise: not allowed with argument --two-layer",
        ),
        (
            ["--two-layer", "--density", "0.2"],
            "argument --density: not allowed with argument --two-layer",
        ),
        # The planted graphs.
        (["--starts", "2"], "argument --starts: only applies with --two-layer"),
        (["--dim", "4"], "argument --dim: only applies with --two-layer"),
        (["--plot", "p.png"], "argument --plot: only applies with --two-layer"),
        (
            ["--solver", "faq", "--solver", "2opt", "--restarts", "3"],
            "argument --restarts: applies to --solver penalty or relaxation, not to faq, 2opt",
        ),
    ],
)
def test_flags_that_cannot_apply_together_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _usage_error(argv, capsys) == message


def test_plot_path_is_checked_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no" / "plot.png"
    message = _usage_error(["--two-layer", "--plot", str(missing)], capsys)
    assert message == f"argument --plot: folder {missing.parent} does not exist"
    message = _usage_error(["--two-layer", "--plot", str(tmp_path / "plot.xyz")], capsys)
    assert message.startswith("argument --plot: expected an image file name such as plot.png")
    assert "got 'plot.xyz'" in message


def _file_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(PREFIX), err
    return err.strip().removeprefix(PREFIX)


def test_bad_qap_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.dat"
    assert _file_error(["--qap", str(missing)], capsys) == (
        f"--qap {missing}: cannot read the file (No such file or directory)"
    )
    assert _file_error(["--qap", str(tmp_path)], capsys) == (
        f"--qap {tmp_path}: cannot read the file (Is a directory)"
    )
    binary = tmp_path / "binary.dat"
    binary.write_bytes(b"\x80\x04\x95 not text")
    assert _file_error(["--qap", str(binary)], capsys) == (
        f"--qap {binary}: expected a QAPLIB text file (UTF-8), got bytes that are not text "
        "(invalid start byte at offset 0)"
    )
    for text, got in [
        ("3 1 2 3", "expected 2 * 3^2 = 18 numbers after n, got 3"),
        ("", "expected n then two n x n matrices, got an empty file"),
        ("2 1 2 x 4 5 6 7 8", "expected numbers only"),
        ("1 nan 1", "must be finite"),
    ]:
        bad = tmp_path / "bad.dat"
        bad.write_text(text)
        message = _file_error(["--qap", str(bad)], capsys)
        assert message.startswith(f"--qap {bad}: ") and got in message


def test_valid_runs_of_each_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--n", "6", "--trials", "1", "--noise", "0.1", "--solver", "faq", "--json"]
    assert main(argv) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"faq"}
    argv = ["--qap", str(EXAMPLE), "--solver", "penalty", "--restarts", "2", "--seed", "3"]
    assert main([*argv, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"penalty"}
    assert main(["--two-layer", "--n", "3", "--dim", "4", "--trials", "1", "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["penalty"] <= 1
