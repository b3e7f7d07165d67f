"""A writer of the ``safetensors`` format: the weight files of the Hugging Face ecosystem.

The format (https://huggingface.co/docs/safetensors) is three parts:

1. 8 bytes: ``N``, the length of the header, an unsigned little-endian 64-bit integer;
2. ``N`` bytes: a UTF-8 JSON object, ``{name: {"dtype": "F32", "shape": [..],
   "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}``, padded with
   spaces so that the data starts at a multiple of 8 bytes;
3. the tensors' bytes, row-major and little-endian, each at ``data_offsets`` counted from
   the start of this part, one after another without gaps.

Written here (a few dozen lines) so that exporting needs no package beyond torch; the
tests read the files back with the ``safetensors`` package itself.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from lm.errors import LMError

#: torch dtype -> the format's name for it
DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _little_endian_bytes(t: torch.Tensor):
    """The tensor's bytes in little-endian order, as a buffer (no copy on little-endian)."""
    t = t.detach().contiguous().cpu().reshape(-1)
    if sys.byteorder == "little" or t.element_size() == 1:
        return t.view(torch.uint8).numpy().data
    return t.view(_SAME_SIZE_INT[t.element_size()]).numpy().byteswap().data


def save_safetensors(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` (name -> tensor) to ``path`` in the safetensors format.

    Tensors are written in the order given; ``metadata`` (strings only) goes in the
    header's ``__metadata__``. Raises ``LMError`` for a dtype the format has no name for,
    a non-string metadata entry, or a reserved name.
    """
    header: dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise LMError(f"safetensors metadata must map strings to strings, got {k!r}: {v!r}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, t in tensors.items():
        if name == "__metadata__":
            raise LMError("'__metadata__' is reserved in safetensors; rename the tensor")
        if t.dtype not in DTYPES:
            raise LMError(f"tensor {name}: safetensors has no dtype for {t.dtype}")
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # the data starts 8-byte aligned
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in tensors.values():
            if t.numel():
                f.write(_little_endian_bytes(t))
    return path
