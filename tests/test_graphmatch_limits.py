"""`autoshuffle-graphmatch --qap` on finite entries too large for float64 arithmetic (issue 20):
one line and exit code 2, for every solver, as NaN/inf files get; large entries that fit solve."""

from pathlib import Path

import pytest

from autoshuffle_ext.matching.cli import main

PREFIX = "autoshuffle-graphmatch: error: "


def _write(path: Path, scale: float) -> Path:
    a = [0, 1, 2, 3, 1, 0, 3, 2, 2, 3, 0, 1, 3, 2, 1, 0]
    b = [0, 3, 1, 2, 3, 0, 2, 1, 1, 2, 0, 3, 2, 1, 3, 0]
    path.write_text("4\n" + " ".join(f"{v * scale:g}" for v in a + b) + "\n")
    return path


@pytest.mark.parametrize("solver", ["penalty", "faq", "relaxation", "2opt"])
def test_entries_whose_products_overflow_are_one_line(tmp_path, capsys, solver):
    huge = _write(tmp_path / "huge.dat", 1e200)
    assert main(["--qap", str(huge), "--solver", solver]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(PREFIX)
    assert err.strip() == (
        f"{PREFIX}--qap {huge}: expected entries whose products fit float64 (n^2 * max|A| * "
        "max|B| <= 1.8e+308), got n = 4, max|A| = 3e+200, max|B| = 3e+200; scale A or B down "
        "(the best permutation stays the same)"
    )


def test_large_entries_that_fit_still_solve(tmp_path, capsys):
    big = _write(tmp_path / "big.dat", 1e150)
    assert main(["--qap", str(big), "--solver", "penalty", "--solver", "faq", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"penalty"' in out and '"faq"' in out
