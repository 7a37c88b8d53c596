"""Reads a CTranslate2 `model.bin` into numpy arrays, so converted weights can be used without ctranslate2.

Layout (binary versions 4-6, all little-endian, as written by CTranslate2's `ModelSpec._serialize`):

    u32 binary_version
    str spec_name, u32 spec_revision                      (strings: u16 length incl. NUL, bytes, NUL)
    u32 n_variables, then per variable:
        str name, u8 rank, u32 dims[rank], u8 dtype_id, u32 n_bytes, n_bytes of raw data
    u32 n_aliases, then per alias: str alias, str target   (a duplicated tensor is stored once)

dtype ids follow CTranslate2's DataType enum: float32, int8, int16, int32, float16, bfloat16.
Versions below 4 stored an item size instead of a dtype id; they predate Whisper support and are refused.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simsearch.errors import ModelNotFoundError

SUPPORTED_VERSIONS = (4, 5, 6)
# Index = CTranslate2 DataType id; bfloat16 has no numpy dtype, it is read as uint16 and widened.
DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


@dataclass
class Ct2Model:
    """The contents of one model.bin: header, variables by name, and aliases (alias -> stored name)."""

    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)  # CTranslate2 dtype name as stored (bfloat16 kept apart)

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def __getitem__(self, name: str) -> np.ndarray:
        """A variable by name, following aliases, so callers never care which copy was stored."""
        seen = set()
        while name in self.aliases and name not in seen:
            seen.add(name)
            name = self.aliases[name]
        try:
            return self.variables[name]
        except KeyError:
            raise KeyError(f"no variable {name!r} in the CTranslate2 model ({self.spec})") from None

    def names(self) -> list[str]:
        """Every name a caller may ask for: stored variables and aliases."""
        return sorted({*self.variables, *self.aliases})

    def string(self, name: str) -> str:
        """A string attribute (CTranslate2 stores them as int8 byte arrays)."""
        return self[name].astype(np.uint8).tobytes().decode("utf-8")


class _Cursor:
    """Sequential little-endian reads over the file bytes, with a clear error when the file ends early."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ModelNotFoundError(f"{self.path} is truncated or not a CTranslate2 model.bin (wanted {n} bytes at "
                                     f"offset {self.pos} of {len(self.data)}); reinstall the model package")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.unpack("H")))
        return raw.rstrip(b"\0").decode("utf-8", errors="replace")


def _array(raw: memoryview, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Raw bytes -> a numpy array of the stored dtype (bfloat16 widened to float32)."""
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 model.bin (or the folder holding it); arrays are read-only views of the file bytes."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise ModelNotFoundError(f"no CTranslate2 model.bin at {path}")
    cur = _Cursor(memoryview(path.read_bytes()), path)
    version = cur.unpack("I")
    if version not in SUPPORTED_VERSIONS:
        raise ModelNotFoundError(f"{path}: CTranslate2 binary version {version} is not supported (this reader knows "
                                 f"{', '.join(map(str, SUPPORTED_VERSIONS))}); convert the model with ctranslate2>=3")
    model = Ct2Model(version, cur.string(), cur.unpack("I"))
    for _ in range(cur.unpack("I")):
        name = cur.string()
        shape = tuple(cur.unpack("I") for _ in range(cur.unpack("B")))
        type_id = cur.unpack("B")
        if type_id >= len(DTYPES):
            raise ModelNotFoundError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        dtype = DTYPES[type_id]
        n_bytes = cur.unpack("I")
        expected = int(np.prod(shape, dtype=np.int64)) * (2 if dtype == "bfloat16" else np.dtype(dtype).itemsize)
        if n_bytes != expected:
            raise ModelNotFoundError(f"{path}: variable {name!r} holds {n_bytes} bytes, but {dtype}{list(shape)} "
                                     f"needs {expected}; the file is corrupt")
        model.variables[name] = _array(cur.take(n_bytes), dtype, shape)
        model.dtypes[name] = dtype
    for _ in range(cur.unpack("I")):
        alias = cur.string()
        model.aliases[alias] = cur.string()
    if cur.pos != len(cur.data):
        raise ModelNotFoundError(f"{path}: {len(cur.data) - cur.pos} unexpected bytes after the aliases; "
                                 f"the file is corrupt or of a newer format")
    return model
