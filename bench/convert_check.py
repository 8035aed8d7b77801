"""Converts networks written elsewhere and checks the result: every shuffle site found, and the
converted model, frozen at once, computing what the original did.

    python -m bench.convert_check "DIR/network.py:ShuffleNetV1(group=3, model_size='1.0x')" ...

Each argument names a Python file and a constructor call evaluated in that file's namespace (its
folder goes first on sys.path, so its own `from blocks import ...` works). Nothing is
downloaded; the code is the caller's.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

import autoshuffle_ext as asx


def build(spec: str) -> torch.nn.Module:
    path, _, call = spec.partition(":")
    folder = str(Path(path).resolve().parent)
    for name in ("blocks", "network"):  # the sibling modules of the last file loaded
        sys.modules.pop(name, None)
    sys.path.insert(0, folder)
    try:
        loaded = importlib.util.spec_from_file_location(f"checked_{abs(hash(spec))}", path)
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        return eval(call, vars(module))  # the caller's own expression
    finally:
        sys.path.remove(folder)


def check(spec: str, size: int) -> dict:
    torch.manual_seed(0)
    model = build(spec).eval()
    x = torch.randn(2, 3, size, size)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted, report = asx.convert_shuffles(model, x[:1], "learned", return_report=True)
    seconds = time.perf_counter() - start
    frozen = asx.freeze(converted).eval()
    with torch.no_grad():
        expected, got = model(x), frozen(x)
    return {
        "model": spec.rpartition("/")[2],
        "sites": len(report.sites),
        "what": dict(Counter(site.what for site in report.sites)),
        "written as": sorted({site.spelling for site in report.sites}),
        "frozen == original": bool(torch.equal(expected, got)),
        "max |diff|": float((expected - got).abs().max()),
        "warnings": [str(w.message) for w in caught],
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="FILE.py:Constructor(arguments)")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    args = parser.parse_args()
    total = 0
    for spec in args.models:
        row = check(spec, args.size)
        total += row["sites"]
        print(row, flush=True)
    print(f"{total} shuffle sites converted in {len(args.models)} models")


if __name__ == "__main__":
    main()
