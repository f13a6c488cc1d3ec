"""Write GGUF files the way ComfyUI-GGUF lays them out (for tests, benches and converting our own files).

Weights of two or more dimensions are quantized when their rows are whole
blocks; 4-D convolution kernels are stored flattened to (out, in*kh*kw) with
a ``comfy.gguf.orig_shape.<name>`` entry so the reader restores the shape;
everything else (biases, norms, rows that are not whole blocks) is F32.
Q8_0 and the legacy 4/5-bit types use ``gguf``'s own quantizers; Q4_K has none
there, so :func:`quantize_q4_k` is a plain (not error-optimised) Q4_K encoder
whose output ``gguf``'s reference dequantizer reads back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

Q4_K, QK_K = 12, 256


def _pack_k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins per super-block -> the 12-byte k-quant packing."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 0x3F) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (mn[:, 0:4] & 0x3F) | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    return out


def quantize_q4_k(data: np.ndarray) -> np.ndarray:
    """Float rows whose length is a multiple of 256 -> Q4_K bytes (144 per 256 values)."""
    data = np.asarray(data, dtype=np.float32)
    shape = data.shape
    blocks = data.reshape(-1, 8, 32)
    lo = np.minimum(blocks.min(axis=-1), 0.0)  # (n, 8): the offset subtracted is -min >= 0
    span = (blocks.max(axis=-1) - lo) / 15.0
    d = (span.max(axis=-1) / 63.0).astype(np.float16)
    dmin = ((-lo).max(axis=-1) / 63.0).astype(np.float16)
    d32, dmin32 = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 > 0, np.rint(span / d32), 0).clip(0, 63).astype(np.uint8)
        mn = np.where(dmin32 > 0, np.rint(-lo / dmin32), 0).clip(0, 63).astype(np.uint8)
        step = (d32 * sc)[..., None]
        q = np.where(step > 0, np.rint((blocks + (dmin32 * mn)[..., None]) / step), 0).clip(0, 15).astype(np.uint8)
    q = q.reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    raw = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2),
                          _pack_k_scales(sc, mn), qs], axis=1)
    return raw.reshape(*shape[:-1], shape[-1] // QK_K * 144)


def _quantize(data: np.ndarray, qtype: int) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if qtype == Q4_K:
        return quantize_q4_k(data)
    return quantize(data, GGMLQuantizationType(qtype))


def write_gguf(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], qtype: int,
               *, arch: str = "sd1", prefix: str = "") -> None:
    """Write ``tensors`` (torch-order float arrays) to ``path``, quantizing weights as ``qtype``."""
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter
    from gguf.constants import GGML_QUANT_SIZES

    block = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)][0]
    writer = GGUFWriter(os.fspath(path), arch)
    for name, value in tensors.items():
        data = np.ascontiguousarray(value, dtype=np.float32)
        stored = data.reshape(data.shape[0], -1) if data.ndim > 2 else data
        if data.ndim >= 2 and stored.shape[-1] % block == 0:
            if stored.shape != data.shape:
                writer.add_key_value(f"comfy.gguf.orig_shape.{prefix}{name}", list(data.shape),
                                     GGUFValueType.ARRAY, sub_type=GGUFValueType.INT32)
            raw = _quantize(stored, qtype)
            writer.add_tensor(prefix + name, raw, raw_dtype=GGMLQuantizationType(qtype))
        else:
            writer.add_tensor(prefix + name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
