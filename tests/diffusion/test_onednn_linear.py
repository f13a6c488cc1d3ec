"""layers.linear and layers.sdpa_merge_heads: the oneDNN path for CPU float32 inference gives F.linear's and
F.scaled_dot_product_attention's results to float32 rounding, and is taken only where it may be (no autograd,
float32, enough rows).  Tolerances from tests/tolerance.py (dtype, reduction length, depth)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.diffusion.models import layers
from tests.tolerance import assert_close

pytestmark = pytest.mark.skipif(not layers._ONEDNN_OK, reason="this torch build has no oneDNN linear op")

def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("act", ["none", "gelu_tanh", "silu"])
def test_linear_equals_f_linear(act: str) -> None:
    x, w, b = _randn(3, 40, 96, seed=1), _randn(200, 96, seed=2) / 10, _randn(200, seed=3)
    ref = {"none": lambda y: y, "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"), "silu": F.silu}[act]
    with torch.no_grad():
        assert layers.onednn_ok(x, w)
        assert_close(layers.linear(x, w, b, act), ref(F.linear(x, w, b)), reduction=96)
        assert_close(layers.linear(x, w, None, act), ref(F.linear(x, w)), reduction=96)


def test_linear_weight_layouts() -> None:
    """Row slices, column slices (copied: oneDNN would reorder them element by element) and transposed
    weights; strided inputs."""
    x, w = _randn(64, 300, seed=4), _randn(128, 400, seed=5)
    with torch.no_grad():
        assert_close(layers.linear(x, w[:, 50:350]), F.linear(x, w[:, 50:350]), reduction=300)
        assert_close(layers.linear(x, w[:100, :300]), F.linear(x, w[:100, :300]), reduction=300)
        wt = _randn(300, 128, seed=6).t()
        assert_close(layers.linear(x, wt), F.linear(x, wt), reduction=300)
        xs = _randn(64, 600, seed=7)[:, ::2]
        assert_close(layers.linear(xs, w[:, :300]), F.linear(xs, w[:, :300]), reduction=300)


def test_linear_falls_back_where_onednn_may_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _randn(32, 16, seed=8)
    x = _randn(20, 16, seed=9).requires_grad_()
    y = layers.linear(x, w)  # autograd on: F.linear, so gradients flow
    assert torch.equal(y, F.linear(x, w))
    y.sum().backward()
    assert x.grad is not None
    assert_close(x.grad, w.sum(0).expand(20, -1), reduction=32)
    with torch.no_grad():
        few = _randn(layers.ONEDNN_MIN_ROWS - 1, 16, seed=10)
        assert not layers.onednn_ok(few, w)
        assert torch.equal(layers.linear(few, w), F.linear(few, w))
        assert not layers.onednn_ok(x.double(), w.double())
        monkeypatch.setattr(layers, "ONEDNN_LINEAR", False)
        assert not layers.onednn_ok(x, w)


@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_attention_equals_sdpa(mask_kind: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch of 2, 3 heads, 70 queries over 70 keys, in blocks of 16 queries (the last one short: F.linear)."""
    monkeypatch.setattr(layers, "ATTN_BLOCK_ELEMENTS", 16 * 70)
    b, h, n, d = 2, 3, 70, 32
    q, k, v = (_randn(b, n, h, d, seed=s).transpose(1, 2) for s in (11, 12, 13))  # (B, H, L, D) views
    mask = None
    if mask_kind == "bool":
        mask = torch.ones(b, 1, 1, n, dtype=torch.bool)
        mask[1, ..., 50:] = False  # the second item's last keys are padding
    elif mask_kind == "float":
        mask = _randn(b, 1, n, n, seed=14)
    with torch.no_grad():
        assert layers.onednn_ok(q, k)
        out = layers.sdpa_merge_heads(q, k, v, mask)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)
    assert out.shape == (b, n, h * d)
    assert_close(out, ref, reduction=max(n, d), depth=2)
