"""Loading pickled data files without running code from them.

`pickle.load` calls whatever the file names (any importable function, with any arguments), and
takes the sizes a file declares on trust (a few corrupted bytes can ask for a terabyte). Data sets
shipped as pickles (CIFAR's "python version") only need dicts, lists, tuples, bytes, str, numbers
and numpy arrays of numbers, so `load_data_pickle` builds exactly those:

* before unpickling, the opcodes are walked once (`pickletools.genops`): every declared length must
  fit in the bytes that follow it, and memo indices must stay below the number of opcodes seen,
  so that nothing is allocated from a size the file merely claims;
* the unpickler resolves only the few globals numpy's own array pickles name (`_reconstruct`,
  `ndarray`, `dtype`, `_frombuffer`; `_codecs.encode` with latin-1 and an empty `bytes()` for
  bytes written with protocol 2), each replaced by a checked stand-in that accepts numeric dtypes
  only and whose array sizes must match the bytes actually present; any other global is refused;
* numpy's own `__setstate__` never sees a state from the file that has not been checked and
  rebuilt first (numpy 2.x crashes the interpreter on some malformed dtype states).
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["load_data_pickle"]

_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what a data array may hold
_MAX_DIMS = 32  # numpy's own limit
_MAX_MESSAGE = 200
# The codes numpy pickles numeric dtypes with (kind and size), and _reconstruct's b"b".
_TYPE_CODE = re.compile(r"[biuf][0-9]{1,2}|b")


class _Refused(pickle.UnpicklingError):
    """The file asks for something a data pickle never needs."""


class _DTypeState:
    """What `numpy.dtype(code, align, copy)` gives the file: a dtype whose pickled state
    (numpy writes `(3, byteorder, None, None, None, -1, -1, flags)` for numeric types) is
    checked here and applied as a byte order, instead of being handed to numpy."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def __setstate__(self, state: object) -> None:
        if (
            not isinstance(state, tuple)
            or len(state) != 8
            or type(state[0]) is not int
            or state[0] != 3
            or not all(item is None for item in state[2:5])
            or not all(type(item) is int for item in state[5:])
        ):
            raise _Refused(
                "a dtype state must be (3, byteorder, None, None, None, -1, -1, flags), "
                f"got {_brief(state)}"
            )
        order = state[1].decode("ascii") if isinstance(state[1], bytes) else state[1]
        if order not in ("|", "<", ">", "="):
            raise _Refused(f"a dtype byte order must be one of | < > =, got {_brief(order)}")
        if order != "|":
            self.dtype = _checked_dtype(self.dtype.newbyteorder(order))


def _brief(value: object) -> str:
    """A short description of a value from the file, for messages (never a repr of its data)."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**12 else "a huge int"
    if isinstance(value, (str, bytes)):
        return repr(value) if len(value) <= 20 else f"{type(value).__name__} of length {len(value)}"
    if isinstance(value, tuple) and len(value) <= 10:
        items = ", ".join(type(v).__name__ if isinstance(v, tuple) else _brief(v) for v in value)
        return f"({items}{',' if len(value) == 1 else ''})"
    return type(value).__name__


def _checked_dtype(dtype: object) -> np.dtype:
    if isinstance(dtype, _DTypeState):
        dtype = dtype.dtype
    if (
        not isinstance(dtype, np.dtype)
        or dtype.kind not in _NUMERIC_KINDS
        or dtype.fields is not None
        or dtype.subdtype is not None
        or dtype.hasobject
        or dtype.itemsize <= 0
    ):
        raise _Refused(f"arrays may only hold numbers (bool, int, uint, float), got dtype {dtype}")
    return dtype


def _checked_shape(shape: object) -> tuple[int, int]:
    """(number of elements, number of dims) of a shape made of non-negative Python ints."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if (
        not isinstance(shape, tuple)
        or len(shape) > _MAX_DIMS
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _Refused(f"an array shape must be a tuple of non-negative ints, got {_brief(shape)}")
    return math.prod(shape), len(shape)


def _check_buffer(buffer: object, shape: object, dtype: np.dtype) -> None:
    if not isinstance(buffer, (bytes, bytearray)):
        raise _Refused(f"array data must be bytes, got {type(buffer).__name__}")
    size, _ = _checked_shape(shape)
    if size * dtype.itemsize != len(buffer):
        raise _Refused(
            f"an array of shape {_brief(shape)} and dtype {dtype} needs "
            f"{size * dtype.itemsize} bytes, the file holds {len(buffer)}"
        )


class _DataArray(np.ndarray):
    """`numpy.ndarray` as the file sees it: built empty, then filled from bytes in the file."""

    def __new__(cls, shape: object, dtype: object = "f8", buffer: object = None) -> _DataArray:
        dtype = _checked_dtype(dtype if isinstance(dtype, _DTypeState) else _DType()(dtype))
        size, _ = _checked_shape(shape)
        if buffer is None:
            if size:
                raise _Refused(f"an array of shape {_brief(shape)} without data in the file")
        else:
            _check_buffer(buffer, shape, dtype)
        return super().__new__(cls, shape, dtype, buffer)

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused(f"an array state must be a tuple of 4 or 5 items, got {_brief(state)}")
        shape, dtype, fortran, rawdata = state[-4:]
        dtype = _checked_dtype(dtype)
        _check_buffer(rawdata, shape, dtype)
        if type(fortran) not in (bool, int):
            raise _Refused(f"an array order flag must be a bool, got {type(fortran).__name__}")
        _, ndim = _checked_shape(shape)
        shape = (shape,) if isinstance(shape, int) else shape
        super().__setstate__((1, shape, dtype, bool(fortran) and ndim > 1, rawdata))


class _Reconstruct:
    """numpy's `_reconstruct(ndarray, (0,), b"b")`: the empty array that `__setstate__` fills."""

    __slots__ = ()

    def __call__(self, subtype: object, shape: object, dtype: object) -> _DataArray:
        if subtype is not _DataArray:
            raise _Refused(f"_reconstruct builds numpy arrays only, got {_brief(subtype)}")
        size, _ = _checked_shape(shape)
        if size:
            raise _Refused(f"_reconstruct expects an empty shape such as (0,), got {_brief(shape)}")
        return _DataArray.__new__(_DataArray, shape, _DType()(dtype))


class _FromBuffer:
    """numpy's `_frombuffer(buffer, dtype, shape, order)` (pickle protocol 5)."""

    __slots__ = ()

    def __call__(self, buffer: object, dtype: object, shape: object, order: object) -> np.ndarray:
        dtype = _checked_dtype(dtype)
        _check_buffer(buffer, shape, dtype)
        if order not in ("C", "F"):
            raise _Refused(f"array order must be 'C' or 'F', got {_brief(order)}")
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
        return array.view(_DataArray)  # a later BUILD goes through the checked __setstate__


class _DType:
    """`numpy.dtype(code, align, copy)` for numeric type codes."""

    __slots__ = ()

    def __call__(self, spec: object, align: object = False, copy: object = True) -> _DTypeState:
        if isinstance(spec, bytes):
            spec = spec.decode("ascii")
        if not isinstance(spec, str) or not _TYPE_CODE.fullmatch(spec):
            raise _Refused(f"a dtype must be a numeric type code such as 'u1', got {_brief(spec)}")
        return _DTypeState(_checked_dtype(np.dtype(spec)))


class _Latin1Encode:
    """`_codecs.encode(text, "latin1")`: how protocol 2 writes bytes from Python 3."""

    __slots__ = ()

    def __call__(self, text: object, encoding: object = "utf-8") -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _Refused(f"_codecs.encode only decodes latin-1 text, got {_brief(encoding)}")
        return text.encode("latin-1")


class _EmptyBytes:
    """`bytes()`: how protocol 2 writes b"" from Python 3."""

    __slots__ = ()

    def __call__(self) -> bytes:
        return b""


_reconstruct, _frombuffer = _Reconstruct(), _FromBuffer()
_ALLOWED: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): _DataArray,
    ("numpy", "dtype"): _DType(),
    ("_codecs", "encode"): _Latin1Encode(),
    ("__builtin__", "bytes"): _EmptyBytes(),
    ("builtins", "bytes"): _EmptyBytes(),
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise _Refused(
                f"the file names {module}.{name}; a data pickle may only hold numbers, text, "
                "bytes, lists, tuples, dicts and numpy arrays of numbers"
            )
        return allowed

    def persistent_load(self, pid: object) -> object:
        raise _Refused("the file refers to persistent objects outside it")


def _check_sizes(data: bytes) -> None:
    """Raises ValueError where the pickle declares more than it holds (genops itself checks
    every counted string, bytes and long against the bytes that remain)."""
    seen = 0
    for opcode, arg, pos in pickletools.genops(data):
        seen += 1
        if opcode.name == "FRAME" and arg > len(data) - pos - 9:
            raise ValueError(
                f"a frame of {arg} bytes at offset {pos}, but only {len(data) - pos - 9} remain"
            )
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and arg >= seen:
            raise ValueError(f"memo index {arg} at offset {pos}, after only {seen} opcodes")


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, _Refused):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def load_data_pickle(path: Path) -> object:
    """The object pickled in `path`, built from plain data and numeric numpy arrays only
    (strings are read as bytes, as CIFAR's Python 2 pickles need). Arrays may be read-only.

    Raises:
        DataError: the file cannot be read, is empty, is not a pickle, is truncated or corrupt,
            or names anything beyond plain data (the message names the file and the reason).
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if not data:
        raise DataError(f"{path}: expected a pickle, got an empty file")
    try:
        _check_sizes(data)
        return _DataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:
        # Only the pickle machine and the checked stand-ins above run here, so whatever they
        # raise (value, type, key, memory, recursion errors...) means a malformed file.
        raise DataError(f"{path}: not a readable pickle ({_short(error)})") from None
