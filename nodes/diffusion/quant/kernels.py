"""Dequantization kernels for GGUF block formats, in torch.

Why our own kernels: the ``gguf`` package's reference dequantizers are
numpy and run on the CPU only; a quantized layer has to be expanded on the
compute device (CUDA, MPS or CPU) right before its matmul, from the raw bytes
that stay resident.  Every kernel here mirrors the block layout of ggml's
``ggml-quants.c`` and is tested bit-for-bit against ``gguf.quants.dequantize``
(``tests/diffusion/test_quant_kernels.py``).  The operations are written in
the same order as the reference so float32 results agree exactly.

A quantized tensor is stored as rows of blocks: ``raw`` is a ``uint8`` tensor
whose last dimension is the byte size of a row; ``dequantize(raw, qtype,
shape)`` returns the float tensor of the logical ``shape`` (torch order, i.e.
the reverse of GGUF's dimension order).  Little-endian byte order is assumed,
as in every GGUF file written by llama.cpp / ComfyUI-GGUF on x86 and ARM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

QK_K = 256  # super-block size of the k-quants

# ggml type id -> (name, elements per block, bytes per block); ids are ggml's (GGMLQuantizationType).
QTYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    12: ("Q4_K", QK_K, 144),
    13: ("Q5_K", QK_K, 176),
    14: ("Q6_K", QK_K, 210),
    30: ("BF16", 1, 2),
}
FLOAT_QTYPES = frozenset({0, 1, 30})  # stored as plain floats: no block structure


# Names of the ggml types we do not dequantize, for error messages.
_OTHER_NAMES = {9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
                19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
                27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}


def qtype_name(qtype: int) -> str:
    if qtype in QTYPES:
        return QTYPES[qtype][0]
    return _OTHER_NAMES.get(qtype, f"type {qtype}")


def _f16(b: torch.Tensor) -> torch.Tensor:
    """Two little-endian bytes per row -> float32 (n, 1)."""
    return b.contiguous().view(torch.float16).to(torch.float32)


def _u32(b: torch.Tensor) -> torch.Tensor:
    """Four little-endian bytes per row -> int64 (n, 1) (int64: no unsigned shifts needed)."""
    b = b.to(torch.int64)
    return (b[:, 0:1] | (b[:, 1:2] << 8) | (b[:, 2:3] << 16) | (b[:, 3:4] << 24))


def _nibbles(qs: torch.Tensor, groups: int, width: int) -> torch.Tensor:
    """Split bytes into (low nibbles, high nibbles) per group of ``width`` bytes -> (n, groups*2, width) uint8."""
    n = qs.shape[0]
    q = qs.reshape(n, groups, 1, width)
    shifts = torch.tensor([0, 4], dtype=torch.uint8, device=qs.device).reshape(1, 1, 2, 1)
    return ((q >> shifts) & 0x0F).reshape(n, groups * 2, width)


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _f16(blocks[:, :2])
    x = blocks[:, 2:].contiguous().view(torch.int8).to(torch.float32)
    return x * d


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _f16(blocks[:, :2])
    q = _nibbles(blocks[:, 2:], 1, 16).reshape(blocks.shape[0], 32).to(torch.int8) - 8
    return d * q.to(torch.float32)


def _q4_1(blocks: torch.Tensor) -> torch.Tensor:
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    q = _nibbles(blocks[:, 4:], 1, 16).reshape(blocks.shape[0], 32).to(torch.float32)
    return (d * q) + m


def _q5_high(qh: torch.Tensor) -> torch.Tensor:
    """The fifth bits of the 32 elements of a block: bit j of a little-endian uint32 -> (n, 32) uint8."""
    bits = torch.arange(32, device=qh.device, dtype=torch.int64).reshape(1, 32)
    return ((_u32(qh) >> bits) & 1).to(torch.uint8)


def _q5_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _f16(blocks[:, :2])
    qh = _q5_high(blocks[:, 2:6])
    ql = _nibbles(blocks[:, 6:], 1, 16).reshape(blocks.shape[0], 32)
    q = (ql | (qh << 4)).to(torch.int8) - 16
    return d * q.to(torch.float32)


def _q5_1(blocks: torch.Tensor) -> torch.Tensor:
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    qh = _q5_high(blocks[:, 4:8])
    ql = _nibbles(blocks[:, 8:], 1, 16).reshape(blocks.shape[0], 32)
    q = (ql | (qh << 4)).to(torch.float32)
    return (d * q) + m


def _k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit (scale, min) pairs packed in 12 bytes (k-quants' 4/5-bit formats)."""
    n = scales.shape[0]
    s = scales.reshape(n, 3, 4)
    d, m, m_d = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _k_affine(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sub-block scale and offset of Q4_K/Q5_K: (n, 8, 1) each."""
    n = blocks.shape[0]
    d, dmin = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    sc, mn = _k_scale_min(blocks[:, 4:16])
    scale = (d * sc.to(torch.float32)).reshape(n, 8, 1)
    offset = (dmin * mn.to(torch.float32)).reshape(n, 8, 1)
    return scale, offset


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    scale, offset = _k_affine(blocks)
    q = _nibbles(blocks[:, 16:], 4, 32).to(torch.float32)
    return (scale * q - offset).reshape(n, QK_K)


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    scale, offset = _k_affine(blocks)
    qh = blocks[:, 16:48].reshape(n, 1, 32)
    bits = torch.arange(8, dtype=torch.uint8, device=blocks.device).reshape(1, 8, 1)
    high = (qh >> bits) & 1
    ql = _nibbles(blocks[:, 48:], 4, 32)
    q = (ql | (high << 4)).to(torch.float32)
    return (scale * q - offset).reshape(n, QK_K)


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:
    n = blocks.shape[0]
    ql = _nibbles(blocks[:, :128], 2, 64).reshape(n, 8, 32)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=blocks.device).reshape(1, 1, 4, 1)
    qh = ((qh >> shifts) & 0x03).reshape(n, 8, 32)
    scales = blocks[:, 192:208].contiguous().view(torch.int8).to(torch.float32)
    d = _f16(blocks[:, 208:210])
    d = (d * scales).reshape(n, QK_K // 16, 1)
    q = ((ql | (qh << 4)).to(torch.int8) - 32).reshape(n, QK_K // 16, 16).to(torch.float32)
    return (d * q).reshape(n, QK_K)


_KERNELS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    2: _q4_0, 3: _q4_1, 6: _q5_0, 7: _q5_1, 8: _q8_0, 12: _q4_k, 13: _q5_k, 14: _q6_k,
}  # fmt: skip
SUPPORTED_QTYPES = frozenset(_KERNELS) | FLOAT_QTYPES


def supported_names() -> str:
    return ", ".join(QTYPES[q][0] for q in sorted(SUPPORTED_QTYPES))


def _floats(raw: torch.Tensor, qtype: int) -> torch.Tensor:
    if raw.dtype != torch.uint8:  # already viewed as floats (F32/F16 from the reader)
        return raw.to(torch.float32)
    flat = raw.contiguous().reshape(-1)
    if qtype == 0:
        return flat.view(torch.float32)
    if qtype == 1:
        return flat.view(torch.float16).to(torch.float32)
    return flat.view(torch.bfloat16).to(torch.float32)


def dequantize(
    raw: torch.Tensor, qtype: int, shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Expand GGUF storage ``raw`` of ggml type ``qtype`` into a ``dtype`` tensor of ``shape``.

    Runs on ``raw``'s device.  The float32 intermediate is what the numpy reference computes;
    it is cast to ``dtype`` at the end (a bf16/fp16 model on CUDA gets its compute dtype).
    """
    if qtype in FLOAT_QTYPES:
        out = _floats(raw, qtype)
    else:
        kernel = _KERNELS.get(qtype)
        if kernel is None:
            raise ValueError(f"GGUF quantization {qtype_name(qtype)} is not supported (supported: {supported_names()})")
        _, block, nbytes = QTYPES[qtype]
        if raw.numel() % nbytes:
            raise ValueError(f"{qtype_name(qtype)} data of {raw.numel()} bytes is not a whole number of "
                             f"{nbytes}-byte blocks")
        out = kernel(raw.reshape(-1, nbytes))
    numel = 1
    for s in shape:
        numel *= int(s)
    if out.numel() != numel:
        raise ValueError(f"{qtype_name(qtype)} data holds {out.numel()} values, shape {tuple(shape)} needs {numel}")
    return out.reshape(tuple(int(s) for s in shape)).to(dtype)


def quantized_nbytes(qtype: int, numel: int) -> int:
    """Bytes of ``numel`` values stored as ``qtype``."""
    _, block, nbytes = QTYPES[qtype]
    return numel // block * nbytes
