"""Our torch GGUF dequantization kernels against gguf's numpy reference, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as ref_dequantize
from gguf.quants import quantize as ref_quantize

from nodes.diffusion.quant.kernels import QTYPES, dequantize

# Types gguf can quantize itself; the k-quants are built from random raw blocks instead.
QUANTIZABLE = [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]
RAW_ONLY = [Q.Q4_K, Q.Q5_K, Q.Q6_K]


def _random_blocks(qtype: Q, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random but valid raw blocks: every byte pattern is a legal block once the fp16 scales are finite."""
    _, block, nbytes = QTYPES[int(qtype)]
    raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    # fp16 scale fields: small finite values (random bytes could be inf/nan, which ggml never writes).
    scales = {Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}[qtype]
    for off in scales:
        raw[:, off : off + 2] = rng.uniform(-0.05, 0.05, size=(n_blocks, 1)).astype(np.float16).view(np.uint8)
    return raw


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda q: q.name)
def test_quantized_by_gguf_dequantizes_like_the_reference(qtype: Q) -> None:
    rng = np.random.default_rng(int(qtype))
    data = (rng.standard_normal((6, 256)) * rng.uniform(0.01, 3, size=(6, 1))).astype(np.float32)
    data[2, :32] = 0.0  # an all-zero block (scale 0)
    raw = ref_quantize(data, qtype)
    expected = ref_dequantize(raw, qtype)
    got = dequantize(torch.from_numpy(raw), int(qtype), data.shape)
    assert got.dtype == torch.float32 and tuple(got.shape) == data.shape
    assert torch.equal(got, torch.from_numpy(expected))
    # and it is a real approximation of the data (catches a kernel and reference that agree on garbage)
    err = np.abs(expected - data).max(axis=1)
    assert (err <= np.abs(data).max(axis=1) * 0.2 + 1e-6).all()


@pytest.mark.parametrize("qtype", RAW_ONLY + QUANTIZABLE, ids=lambda q: q.name)
def test_random_raw_blocks_dequantize_like_the_reference(qtype: Q) -> None:
    rng = np.random.default_rng(100 + int(qtype))
    _, block, nbytes = QTYPES[int(qtype)]
    if qtype in QUANTIZABLE:  # random bytes with a sane scale
        raw = rng.integers(0, 256, size=(40, nbytes), dtype=np.uint8)
        raw[:, 0:2] = rng.uniform(-0.05, 0.05, size=(40, 1)).astype(np.float16).view(np.uint8)
        if qtype in (Q.Q4_1, Q.Q5_1):
            raw[:, 2:4] = rng.uniform(-1, 1, size=(40, 1)).astype(np.float16).view(np.uint8)
    else:
        raw = _random_blocks(qtype, 40, rng)
    rows = raw.reshape(4, 10 * nbytes)  # 4 rows of 10 blocks, as a GGUF tensor stores them
    expected = ref_dequantize(rows, qtype)
    got = dequantize(torch.from_numpy(rows), int(qtype), (4, 10 * block))
    assert torch.equal(got, torch.from_numpy(expected))
    assert torch.isfinite(got).all() and got.abs().max() > 0


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16], ids=lambda q: q.name)
def test_float_types_pass_through(qtype: Q) -> None:
    data = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    raw = ref_quantize(data, qtype) if qtype != Q.F32 else data
    raw_bytes = np.ascontiguousarray(raw).view(np.uint8)
    got = dequantize(torch.from_numpy(raw_bytes), int(qtype), (3, 8))
    expected = ref_dequantize(raw_bytes if qtype == Q.BF16 else raw, qtype)
    assert torch.equal(got, torch.from_numpy(np.asarray(expected, dtype=np.float32).reshape(3, 8)))


def test_unsupported_type_and_bad_sizes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="Q2_K is not supported.*Q8_0"):
        dequantize(torch.zeros(84, dtype=torch.uint8), int(Q.Q2_K), (256,))
    with pytest.raises(ValueError, match="whole number of 34-byte blocks"):
        dequantize(torch.zeros(35, dtype=torch.uint8), int(Q.Q8_0), (32,))
    with pytest.raises(ValueError, match="shape"):
        dequantize(torch.zeros(34, dtype=torch.uint8), int(Q.Q8_0), (64,))
