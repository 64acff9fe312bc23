"""IDX files (the MNIST / Fashion-MNIST container), optionally gzipped, <-> numpy.

Layout (big-endian): two zero bytes, a dtype code, the number of dims n, n uint32 sizes,
then exactly prod(sizes) items. A file that breaks any of these raises `IdxFormatError`
(a ValueError) naming the file and what is wrong, e.g.
    ".../train-images-idx3-ubyte.gz: expected 47040000 bytes of data for shape
     (60000, 28, 28) uint8, found 1000"
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

# IDX dtype code -> big-endian numpy dtype (yann.lecun.com/exdb/mnist, "THE IDX FILE FORMAT").
DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """A truncated, corrupt or mislabelled IDX file; the message starts with its path."""


def _raw_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad CRC, bad header
        raise IdxFormatError(f"{path}: corrupt gzip stream ({e})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file (gzip detected from the content, not the name).

    Returns native-endian data: uint8 images come back as uint8[N, H, W], labels as uint8[N].
    """
    path = os.fspath(path)
    raw = _raw_bytes(path)
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: {len(raw)} bytes, too short for the 4-byte IDX magic")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00":
        raise IdxFormatError(f"{path}: bad magic number {raw[:4].hex()} (must start 0000)")
    if code not in DTYPES:
        raise IdxFormatError(f"{path}: unknown dtype code 0x{code:02x}; "
                             f"known: {[hex(c) for c in DTYPES]}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(f"{path}: header needs {header} bytes for {ndim} dims, "
                             f"file has {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        raise IdxFormatError(f"{path}: expected {expected} bytes of data for shape {shape} "
                             f"{dtype.newbyteorder('=').name}, found {found}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes `array` as IDX; gzipped when `path` ends in .gz (used for test fixtures)."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").str: c for c, dt in DTYPES.items()}
    key = array.dtype.newbyteorder("=").str
    if key not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of "
                         f"{sorted(dt.name for dt in DTYPES.values())}")
    code = codes[key]
    header = struct.pack(">2sBB", b"\x00\x00", code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(DTYPES[code], copy=False).tobytes()
    path = os.fspath(path)
    if path.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)  # byte-identical fixtures
    with open(path, "wb") as f:
        f.write(payload)
