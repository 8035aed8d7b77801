"""Reading and writing quadratic assignment instances in the QAPLIB `.dat` format.

A file holds n, then the n x n matrix A, then the n x n matrix B: whitespace-separated numbers,
lines wrapped anywhere (QAPLIB's own files wrap long rows). The instance asks for the permutation
p minimising sum_ij A[i, j] B[p(i), p(j)], which is `solve(A, B, maximize=False)` with
`perm = p` 0-based (QAPLIB's solution files are 1-based).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from .problems import check_pair

__all__ = ["parse_qaplib", "read_qaplib", "write_qaplib"]


def parse_qaplib(text: str, source: str = "input") -> tuple[Tensor, Tensor]:
    """(A, B) as float64 [n, n] tensors from the text of a QAPLIB `.dat` file.

    Raises:
        ValueError: a token is not a number, n is not a positive integer, or the file does not
            hold exactly 2 n^2 numbers after n (the message names `source`).
    """
    tokens = text.split()
    if not tokens:
        raise ValueError(f"{source}: expected n then two n x n matrices, got an empty file")
    try:
        n = int(tokens[0])
    except ValueError:
        raise ValueError(
            f"{source}: expected n (a positive integer) first, got {tokens[0]!r}"
        ) from None
    if n < 1:
        raise ValueError(f"{source}: expected n >= 1, got {n}")
    try:
        values = np.array([float(t) for t in tokens[1:]], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{source}: expected numbers only, {err}") from None
    if values.size != 2 * n * n:
        raise ValueError(
            f"{source}: expected 2 * {n}^2 = {2 * n * n} numbers after n, got {values.size}"
        )
    A, B = values.reshape(2, n, n)
    return check_pair(torch.from_numpy(A.copy()), torch.from_numpy(B.copy()))


def read_qaplib(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """(A, B) from a QAPLIB `.dat` file; see `parse_qaplib` for what is raised."""
    with open(path, encoding="utf-8") as f:
        return parse_qaplib(f.read(), source=os.fspath(path))


def _format(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def write_qaplib(
    path: str | os.PathLike[str], A: Tensor | np.ndarray, B: Tensor | np.ndarray
) -> None:
    """Writes [n, n] matrices A and B as a QAPLIB `.dat` file (integers written as integers)."""
    A, B = check_pair(A, B)
    if A.dim() != 2:
        raise ValueError(f"A and B must be single [n, n] matrices, got shape {tuple(A.shape)}")
    lines = [str(A.shape[0]), ""]
    for M in (A, B):
        lines += [" ".join(_format(x) for x in row) for row in M.cpu().tolist()]
        lines.append("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
