"""Layers shared by the transformer-family modules (FLUX, T5, MMDiT, Z-Image, Qwen3): cheap to build,
dtype-agnostic at compute; and the few key-table helpers their converters share.

Two properties every large split-file model needs and ``torch.nn`` does not give:

* **No initialisation at construction.**  Models are built on the meta device
  and then adopt checkpoint tensors (``load_state_dict(assign=True)``);
  ``nn.Linear.reset_parameters`` would run ``torch.nn.init`` for nothing, and
  on the meta device that path imports ``torch._dynamo`` (seconds).  Our
  layers skip it; :func:`init_weights` gives the standard init for training.
* **Storage dtype independent of compute dtype.**  The weights may be stored in
  float8 (FLUX ``weight_dtype=fp8_e4m3fn``) or fp16 while the activations are
  float32 (CPU) or bf16: each layer casts its weight to the input's dtype at
  call time, so the resident model keeps the file's bytes and only one
  layer's weight is upcast at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Embedding", "Linear", "RMSScale", "block_indices", "cast_to", "concat_pieces", "init_weights", "linear",
           "rename_by_prefix", "sdpa_merge_heads"]


def cast_to(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """``t`` in ``like``'s dtype/device (no copy when it already matches)."""
    if t is None or (t.dtype == like.dtype and t.device == like.device):
        return t
    return t.to(device=like.device, dtype=like.dtype)


#: Route CPU float32 inference products through oneDNN (:func:`linear`); False: always ``F.linear``.
ONEDNN_LINEAR = True
#: Fewer rows than this go to ``F.linear``: oneDNN's per-call set-up outweighs its kernel on a vector or two.
ONEDNN_MIN_ROWS = 16
_ONEDNN_OK = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_ok(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether :func:`linear` may take the oneDNN path for ``x @ w.T``: float32 on the CPU, no autograd
    (the op has no backward), at least :data:`ONEDNN_MIN_ROWS` rows."""
    return (ONEDNN_LINEAR and _ONEDNN_OK and x.device.type == "cpu" and x.dtype == w.dtype == torch.float32
            and not torch.is_grad_enabled() and x.numel() >= ONEDNN_MIN_ROWS * x.shape[-1] > 0)


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, act: str = "none") -> torch.Tensor:
    """``F.linear(x, w, b)`` (then ``act``: ``"none"``, ``"gelu_tanh"`` or ``"silu"``), for CPU float32
    inference through oneDNN's matmul instead of ATen's BLAS call.

    Why: the BLAS that PyTorch's CPU wheels link (MKL) does not pick its AVX-512 kernels on AMD CPUs,
    while oneDNN picks its kernel by instruction set; on the bench machine's AMD EPYC (AVX-512) that is
    about twice the float32 throughput on every product of a transformer step (``bench/flux_step.py``;
    on Intel CPUs, where MKL runs AVX-512, expect far less).
    Same float32 arithmetic, another summation order: results agree to float32 rounding (~1e-7
    relative).  The activation, when given, is applied by oneDNN to the product's tiles while they
    are still in cache.  Elsewhere (GPU, other dtypes, autograd, a vector or two): ``F.linear``.
    """
    if not onednn_ok(x, w):
        y = F.linear(x, w, b)
        if act == "gelu_tanh":
            return F.gelu(y, approximate="tanh")
        return F.silu(y) if act == "silu" else y
    if not (w.is_contiguous() or w.t().is_contiguous()):
        # oneDNN reorders a weight with any other stride (a column slice) element by element: copy it.
        w = w.contiguous()
    attr, algorithm = _ONEDNN_ACT[act]
    return torch.ops.mkldnn._linear_pointwise(x, w, b, attr, [], algorithm)


_ONEDNN_ACT = {"none": ("none", ""), "gelu_tanh": ("gelu", "tanh"), "silu": ("swish", "")}


class Linear(nn.Linear):
    """``nn.Linear`` that is not initialised at construction and computes in the input's dtype
    (through :func:`linear`)."""

    def reset_parameters(self) -> None:  # noqa: D102 - deliberately empty, see module docstring
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, cast_to(self.weight, x), cast_to(self.bias, x))


class RMSScale(nn.Module):
    """RMS normalisation with a learned per-channel ``scale`` (BFL's ``RMSNorm``; T5 uses ``weight``).

    The statistic is taken in float32 whatever the input dtype (fp16 squares overflow),
    the normalised value is cast back before the scale is applied, as both
    reference implementations do.
    """

    def __init__(self, dim: int, eps: float = 1e-6, param: str = "scale") -> None:
        super().__init__()
        self.eps = eps
        self._param = param
        self.register_parameter(param, nn.Parameter(torch.empty(dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = getattr(self, self._param)
        if x.dtype == torch.float32:
            # The statistic from one reduction kernel (vector_norm) instead of F.rms_norm's CPU
            # composite, which materialises x**2 and reduces it in a second pass; equal to ~2e-7.
            inv = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square().div(x.shape[-1]).add(self.eps).rsqrt()
            y = x * inv
            return y.mul_(cast_to(w, y)) if not torch.is_grad_enabled() else y * cast_to(w, y)
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return y * cast_to(w, y)


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every layer of ``module`` torch's default initialisation (for training from scratch).

    Linear: Kaiming-uniform weight, uniform bias (as ``nn.Linear``); RMS scales: ones.
    Other submodules (LayerNorm, Embedding, Conv) are left to their own ``reset_parameters``.
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(m, RMSScale):
                getattr(m, m._param).fill_(1.0)
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, 1.0, generator=generator)
    return module


class Embedding(nn.Embedding):
    """``nn.Embedding`` without the construction-time ``normal_`` init (see module docstring)."""

    def reset_parameters(self) -> None:  # noqa: D102
        pass


def sdpa_merge_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention over ``(B, heads, L, D)`` tensors, returned as ``(B, L, heads * D)`` tokens.

    ``mask``: as ``F.scaled_dot_product_attention``'s ``attn_mask`` (boolean: True = attend).
    Where :func:`linear` takes oneDNN, :func:`_matmul_attention`; elsewhere PyTorch's kernel."""
    if onednn_ok(q, k) and q.shape[-2] >= ONEDNN_MIN_ROWS:
        return _matmul_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2)


#: Score elements per block of queries in :func:`_matmul_attention`: 2 MiB of float32, so the scores stay in
#: cache between their product, the softmax and the product with v (measured best from 1,152 to 4,608 keys;
#: 16 MiB blocks were up to 1.3x slower than PyTorch's flash kernel at head width 64).
ATTN_BLOCK_ELEMENTS = 1 << 19


def _matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T / sqrt(D)) v`` per batch item and head, both products through :func:`linear`.

    Why: PyTorch's CPU flash-attention kernel runs its block products on the same BLAS as
    ``F.linear`` (see :func:`linear` for why oneDNN is faster).  Each score row is computed whole
    and normalised by one softmax (the math backend's arithmetic; equal to the flash kernel's
    online softmax to float32 rounding); queries go in blocks so one block's scores stay within
    :data:`ATTN_BLOCK_ELEMENTS` (at least :data:`ONEDNN_MIN_ROWS` rows)."""
    b, h, n, d = q.shape
    k, v = k.contiguous(), v.contiguous()  # dense (L, D) per head: oneDNN's weight operand
    if mask is not None:
        mask = mask.expand(b, h, n, k.shape[2])
    out = q.new_empty(b, n, h, d)
    scale = d**-0.5
    rows = max(ONEDNN_MIN_ROWS, ATTN_BLOCK_ELEMENTS // k.shape[2])
    for i in range(b):
        for j in range(h):
            for s in range(0, n, rows):
                scores = linear(q[i, j, s : s + rows], k[i, j]).mul_(scale)
                if mask is not None:
                    m = mask[i, j, s : s + rows]
                    scores = scores.masked_fill_(~m, float("-inf")) if m.dtype == torch.bool else scores.add_(m)
                out[i, s : s + rows, j] = linear(torch.softmax(scores, dim=-1), v[i, j].t())
    return out.flatten(2)


def block_indices(keys: Iterable[str], prefix: str) -> set[int]:
    """The block numbers ``N`` of keys ``<prefix>N.<rest>`` (how configs count blocks from a state dict)."""
    return {int(k[len(prefix) :].split(".", 1)[0]) for k in keys if k.startswith(prefix)}


def rename_by_prefix(name: str, table: Mapping[str, str]) -> str | None:
    """``name`` with the first table entry that is it or a dotted prefix of it replaced (None: no entry)."""
    for src, dst in table.items():
        if name == src:
            return dst
        if name.startswith(src + "."):
            return dst + name[len(src) :]
    return None


def concat_pieces(target: str, order: tuple[str, ...], pieces: Mapping[str, torch.Tensor], family: str) -> torch.Tensor:
    """The fused tensor ``target`` from diffusers' separate pieces (q, k, v...), concatenated in ``order``
    along dim 0; a ``KeyError`` naming what is missing when a piece is absent."""
    missing = [p for p in order if p not in pieces]
    if missing:
        raise KeyError(f"diffusers {family} state dict lacks {missing} for {target!r}")
    return torch.cat([pieces[p] for p in order], dim=0)


#: Hidden-width slices of :func:`chunked_mlp`.
MLP_CHUNKS = 4


def _plain(*modules: nn.Module | None) -> bool:
    """Plain :class:`Linear` layers without hooks: their weights can be sliced directly."""
    return all(m is None or (type(m) is Linear and not m._forward_hooks and not m._forward_pre_hooks)
               for m in modules)


def chunked_mlp_ok(x: torch.Tensor, *modules: nn.Module | None) -> bool:
    """Whether :func:`chunked_mlp` may replace the modules' own forwards: CPU inference on plain layers
    (quantized or hooked layers, autograd and GPUs take the ordinary path)."""
    return x.device.type == "cpu" and not torch.is_grad_enabled() and _plain(*modules)


def chunked_mlp(x: torch.Tensor, up: Linear, down: Linear, act: str, gate: Linear | None = None,
                chunks: int = MLP_CHUNKS) -> torch.Tensor:
    """``down(act(up(x)) [* gate(x)])`` for CPU inference (``act``: ``"gelu_tanh"`` or ``"silu"``).

    Where :func:`linear` takes oneDNN, three products with the activation fused into the first.
    Otherwise computed over slices of the hidden width, accumulating the down projection in place
    (split-K): each slice's activation stays cache-sized, the full-width hidden tensor is never
    materialised (for SwiGLU: neither of its two)."""
    x2 = x.reshape(-1, x.shape[-1])
    w_up, b_up = cast_to(up.weight, x), cast_to(up.bias, x)
    w_down, b_down = cast_to(down.weight, x), cast_to(down.bias, x)
    w_gate = cast_to(gate.weight, x) if gate is not None else None
    b_gate = cast_to(gate.bias, x) if gate is not None else None
    if onednn_ok(x2, w_up):
        h = linear(x2, w_up, b_up, act)
        if w_gate is not None:
            h.mul_(linear(x2, w_gate, b_gate))
        return linear(h, w_down, b_down).view(*x.shape[:-1], -1)
    act_ = _INPLACE_ACT[act]
    rows = x2.shape[0]
    out = b_down.expand(rows, -1).clone() if b_down is not None else x2.new_zeros(rows, w_down.shape[0])
    hidden = w_up.shape[0]
    step = -(-hidden // max(1, chunks))
    for s in range(0, hidden, step):
        e = min(hidden, s + step)
        h = act_(F.linear(x2, w_up[s:e], None if b_up is None else b_up[s:e]))
        if w_gate is not None:
            h.mul_(F.linear(x2, w_gate[s:e], None if b_gate is None else b_gate[s:e]))
        out.addmm_(h, w_down[:, s:e].t())
    return out.view(*x.shape[:-1], -1)


_INPLACE_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_tanh": lambda h: torch.ops.aten.gelu_(h, approximate="tanh"),
    "silu": lambda h: F.silu(h, inplace=True),
}
