"""A fast GGUF container parser: metadata as plain Python values, tensors as memory-mapped bytes.

    reader = GGUFFile("model.gguf")          # raises CorruptFileError on a cut or malformed file
    reader.metadata["general.architecture"]  # 'gemma3'
    for t in reader.tensors:                 # .name, .shape (GGUF order), .tensor_type, .data
        ...

Why not `gguf.GGUFReader`: it makes two numpy views per array element while parsing, which is fine
for a 49k-token vocabulary but took 15–30 s for Gemma 3's 262,144 tokens (scores and types too).
Here a string array is walked once over a `bytes` object and number arrays are one `frombuffer`:
the same file parses in well under a second. The layout (GGUF v2/v3, little-endian):

    "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count × (string key | u32 value_type | value)          string = u64 length + UTF-8 bytes
    tensor_count × (string name | u32 n_dims | n_dims × u64 dim | u32 ggml_type | u64 offset)
    padding to `general.alignment` (32) | tensor data (each at data_start + offset)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from llmlab.errors import CorruptFileError

# GGUF value type id → (struct format, numpy dtype) for the fixed-size scalars.
_SCALARS = {
    0: ("<B", np.uint8),
    1: ("<b", np.int8),
    2: ("<H", np.uint16),
    3: ("<h", np.int16),
    4: ("<I", np.uint32),
    5: ("<i", np.int32),
    6: ("<f", np.float32),
    7: ("<?", np.bool_),
    10: ("<Q", np.uint64),
    11: ("<q", np.int64),
    12: ("<d", np.float64),
}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    pass


@dataclass
class GGUFTensor:
    name: str
    shape: np.ndarray  # GGUF order: fastest-varying dimension first (PyTorch order reversed)
    tensor_type: object  # gguf.GGMLQuantizationType
    data: np.ndarray  # the raw bytes (uint8), a view of the memory map


class _Cursor:
    def __init__(self, buffer: memoryview):
        self.buffer, self.offset = buffer, 0

    def scalar(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.buffer):
            raise _Truncated
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += size
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        end = self.offset + length
        if end > len(self.buffer):
            raise _Truncated
        text = bytes(self.buffer[self.offset : end]).decode("utf-8")
        self.offset = end
        return text

    def strings(self, count: int) -> list[str]:
        # The hot loop of a big vocabulary: plain bytes slicing, no numpy per element.
        raw, offset, out = self.buffer.obj, self.offset, []
        size = len(self.buffer)
        for _ in range(count):
            if offset + 8 > size:
                raise _Truncated
            length = int.from_bytes(raw[offset : offset + 8], "little")
            offset += 8
            if offset + length > size:
                raise _Truncated
            out.append(raw[offset : offset + length].decode("utf-8"))
            offset += length
        self.offset = offset
        return out

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind][0])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.scalar("<I"), self.scalar("<Q")
            if item_kind == _STRING:
                return self.strings(count)
            if item_kind in _SCALARS:
                dtype = np.dtype(_SCALARS[item_kind][1]).newbyteorder("<")
                end = self.offset + count * dtype.itemsize
                if end > len(self.buffer):
                    raise _Truncated
                values = np.frombuffer(self.buffer, dtype, count, self.offset)
                self.offset = end
                return values.tolist()
            return [self.value(item_kind) for _ in range(count)]  # arrays of arrays (rare)
        raise ValueError(f"unknown GGUF value type {kind}")


class GGUFFile:
    """Parsed header of a GGUF file; tensor data stays in the (read-only) memory map."""

    def __init__(self, path: str):
        import gguf  # for the GGML type table only

        self.path = path
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
        self.data = mapped.view(np.ndarray)  # plain ndarray: slicing a memmap has Python overhead
        header_bytes = bytes(self.data[: min(len(self.data), 64 << 20)])  # header fits easily
        cursor = _Cursor(memoryview(header_bytes))
        try:
            if cursor.scalar("<4s") != b"GGUF":
                raise CorruptFileError(f"{path}: not a GGUF file")
            version = cursor.scalar("<I")
            if version not in (2, 3):
                raise CorruptFileError(f"{path}: unsupported GGUF version {version}")
            n_tensors, n_kv = cursor.scalar("<Q"), cursor.scalar("<Q")
            self.metadata: dict = {}
            for _ in range(n_kv):
                key = cursor.string()
                self.metadata[key] = cursor.value(cursor.scalar("<I"))
            infos = []
            for _ in range(n_tensors):
                name = cursor.string()
                dims = [cursor.scalar("<Q") for _ in range(cursor.scalar("<I"))]
                infos.append((name, dims, cursor.scalar("<I"), cursor.scalar("<Q")))
        except _Truncated:
            raise CorruptFileError(
                f"{path}: truncated or malformed GGUF header ({len(self.data):,} bytes)"
            ) from None
        except (ValueError, UnicodeDecodeError, struct.error) as error:
            raise CorruptFileError(
                f"{path}: truncated or malformed GGUF header ({len(self.data):,} bytes): {error}"
            ) from None
        alignment = int(self.metadata.get("general.alignment", 32))
        start = -(-cursor.offset // alignment) * alignment
        self.tensors = []
        for name, dims, type_id, offset in infos:
            try:
                qtype = gguf.GGMLQuantizationType(type_id)
            except ValueError:
                raise CorruptFileError(
                    f"{path}: tensor {name} has unknown GGML type id {type_id}"
                ) from None
            block_weights, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
            n_bytes = int(np.prod(dims, dtype=np.int64)) * block_bytes // block_weights
            begin = start + offset
            if begin + n_bytes > len(self.data):
                raise CorruptFileError(
                    f"{path}: truncated GGUF: tensor {name} needs bytes up to {begin + n_bytes:,} "
                    f"but the file has {len(self.data):,}"
                )
            data = self.data[begin : begin + n_bytes]
            self.tensors.append(GGUFTensor(name, np.array(dims, np.int64), qtype, data))
