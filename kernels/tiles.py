"""The tile a Triton program owns in an [N, C, P] tensor (batch, channel, pixel), shared by the
launch grids of `mixing.py`, `spline.py` and `ell_mix.py`: one program per (channel block, pixel
block, image), channel blocks fastest, so that the programs reading one image's pixel block run
together (L2 reuse)."""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["tile_of"]


@triton.jit
def tile_of(pid, C, P, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """(n, channels, pixels) of program `pid`: the image (int64), and the tile's channel and
    pixel indices (pixels int64; both may run past C and P: mask them)."""
    num_cb = tl.cdiv(C, BLOCK_C)
    num_pb = tl.cdiv(P, BLOCK_P)
    cb = pid % num_cb
    pb = (pid // num_cb) % num_pb
    n = (pid // (num_cb * num_pb)).to(tl.int64)
    ch = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    pix = pb.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    return n, ch, pix
