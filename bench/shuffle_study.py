"""The learned-shuffle study of bench/RESULTS.md: one table over several comparison folders.

Each folder is an `autoshuffle-train --compare ... --seeds ...` run directory
(`<folder>/<kind>/seed<N>/result.json`). Variants are named `<kind>` for the first folder and
`<kind> (<folder name>)` for the others, and every variant is paired seed by seed with the
first folder's `fixed`:

    python bench/shuffle_study.py runs/study/main runs/study/uniform runs/study/blend099

prints the Markdown table (mean ± sample std over seeds, paired difference to fixed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from autoshuffle_ext.train.compare import format_seed_table, seed_summary
from autoshuffle_ext.train.result import RunResult

_FIELDS = {f.name for f in dataclasses.fields(RunResult)}


def load_runs(folder: Path, label: str | None) -> list[RunResult]:
    """Every finished run under `folder`, its variant renamed `<kind> (<label>)` if a label is
    given (`fixed` keeps its name only in the first folder, the reference of the pairing)."""
    runs = []
    for path in sorted(folder.glob("*/seed*/result.json")):
        record = json.loads(path.read_text())
        result = RunResult(**{k: v for k, v in record.items() if k in _FIELDS})
        if label is not None:
            result = dataclasses.replace(result, shuffle=f"{result.shuffle} ({label})")
        runs.append(result)
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    args = p.parse_args()
    results = []
    for i, folder in enumerate(args.folders):
        results += load_runs(folder, None if i == 0 else folder.name)
    print(format_seed_table(seed_summary(results)))


if __name__ == "__main__":
    main()
