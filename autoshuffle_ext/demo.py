"""`python -m autoshuffle_ext.demo`: the channel_gather op next to ShuffleNet's fixed shuffle.

On a ShuffleNet v2 activation ([64, 232, 14, 14], float32) in both memory formats it checks that
`channel_gather` with `fixed_shuffle_perm(C, g)` equals `F.channel_shuffle(x, g)` exactly, then
times the op with a random (learned-like) permutation against the fixed shuffle and a plain copy.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.utils import benchmark

import autoshuffle_ext as asx


def _median_us(fn, min_run_time: float) -> float:
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6


def main(argv: list[str] | None = None) -> None:
    """Prints the equality check and median timings; exits non-zero if the results differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 232, 14, 14])
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--min-run-time", type=float, default=0.3, help="seconds per timing")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    op = torch.ops.autoshuffle_ext.channel_gather.default
    shape, groups = tuple(args.shape), args.groups
    channels = shape[1]
    print(
        f"autoshuffle_ext {asx.__version__}: compiled library "
        f"{'loaded' if asx.extension_available() else 'MISSING (ATen fallback)'}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"x: {list(shape)} float32, fixed shuffle groups={groups}, perm = randperm({channels})")
    fixed = asx.fixed_shuffle_perm(channels, groups)
    learned = torch.randperm(channels)
    print(
        f"{'format':<14}{'equal':>7}{'gather':>12}{'shuffle':>12}{'clone':>12}{'gather/shuffle':>16}"
    )
    for name, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
        x = torch.randn(shape).contiguous(memory_format=fmt)
        equal = torch.equal(asx.channel_gather(x, fixed), F.channel_shuffle(x, groups))
        if not equal:
            raise SystemExit(f"channel_gather differs from F.channel_shuffle on {name}")
        gather = _median_us(lambda x=x: op(x, learned), args.min_run_time)
        shuffle = _median_us(lambda x=x: F.channel_shuffle(x, groups), args.min_run_time)
        clone = _median_us(lambda x=x: x.clone(), args.min_run_time)
        print(
            f"{name:<14}{'yes':>7}{gather:>10.1f}us{shuffle:>10.1f}us{clone:>10.1f}us"
            f"{gather / shuffle:>15.2f}x"
        )


if __name__ == "__main__":
    main()
