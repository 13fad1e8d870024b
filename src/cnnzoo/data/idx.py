"""Reader for the IDX files MNIST and Fashion-MNIST ship as (gzip-compressed or not).

Format (LeCun's page): two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian int32, then the data, big-endian. Every malformed input (random bytes, a truncated download,
a wrong file) raises :class:`CnnzooError` before anything large is allocated.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import CnnzooError

_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into an array of its dtype and shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CnnzooError(f"{what} is not an IDX file (bad magic number); re-download it")
    code, ndim = data[2], data[3]
    if code not in _DTYPES or not 1 <= ndim <= 4:
        raise CnnzooError(
            f"{what} is not an IDX file (type code {code:#x}, {ndim} dimensions); re-download it")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnzooError(f"{what} is truncated (header cut short); re-download it")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = dtype.itemsize * int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise CnnzooError(
            f"{what} holds {len(data) - header} data bytes but its header {dims} says {expected}; "
            f"re-download it")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gunzipping it first when it starts with the gzip magic (whatever its name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CnnzooError(f"cannot read {path}: {e.strerror or e}") from e
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CnnzooError(f"{path} is a damaged gzip file ({e}); re-download it") from e
    return parse_idx(raw, what=str(path))
