"""layers.chunked_mlp: the MLP over slices of its hidden width equals the plain MLP, and is only used
where it may replace the layers' own forwards (CPU inference on plain, unhooked layers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.diffusion.models import layers
from nodes.diffusion.models.layers import Linear, chunked_mlp, chunked_mlp_ok, init_weights
from tests.diffusion.flux_fixtures import assert_rel_close


def _layers(bias: bool, hidden: int = 170) -> tuple[Linear, Linear, Linear]:
    up, down, gate = Linear(24, hidden, bias=bias), Linear(hidden, 24, bias=bias), Linear(24, hidden, bias=bias)
    g = torch.Generator().manual_seed(0)
    for m in (up, down, gate):
        init_weights(m, g)
    return up, down, gate


@pytest.mark.parametrize("onednn", [False, True])
@pytest.mark.parametrize("chunks", [1, 3, 4, 7])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_the_plain_mlp(chunks: int, bias: bool, onednn: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "ONEDNN_LINEAR", onednn)  # the fused path (when available) or the slices
    up, down, gate = _layers(bias)
    x = torch.randn(2, 9, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gelu = down(F.gelu(up(x), approximate="tanh"))
        swiglu = down(F.silu(up(x)) * gate(x))
        a = chunked_mlp(x, up, down, "gelu_tanh", chunks=chunks)
        b = chunked_mlp(x, up, down, "silu", gate=gate, chunks=chunks)
    assert a.shape == b.shape == x.shape
    assert_rel_close(a, gelu, 1e-5)
    assert_rel_close(b, swiglu, 1e-5)


def test_only_for_cpu_inference_on_plain_layers() -> None:
    up, down, _ = _layers(True)
    x = torch.zeros(1, 3, 24)
    assert not chunked_mlp_ok(x, up, down)  # autograd on: the layers' own forwards
    with torch.no_grad():
        assert chunked_mlp_ok(x, up, down)
        handle = up.register_forward_hook(lambda *a: None)
        assert not chunked_mlp_ok(x, up, down)  # a hook must see the call
        handle.remove()
        assert not chunked_mlp_ok(x, torch.nn.Linear(24, 170), down)  # another layer class (e.g. quantized)
        assert chunked_mlp_ok(x, up, down, None)
