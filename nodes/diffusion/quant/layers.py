"""Linear/Conv2d layers whose weight stays in storage dtype (GGUF blocks, fp8) until they run.

A model is built on the meta device as usual (parameter names = checkpoint
keys); :func:`load_quantized` then turns every Linear/Conv2d whose weight the
file stores quantized into a :class:`QuantizedLinear` / :class:`QuantizedConv2d`
(by swapping the instance's class, so the module tree and key names do not
change).  The quantized bytes become the layer's ``weight`` *buffer* (uint8
block rows for GGUF; the fp8 tensor itself for fp8), and for ComfyUI's
"scaled fp8" files the per-tensor ``scale_weight`` buffer sits next to it, so
``state_dict()`` keys still equal the file's keys.  ``forward`` expands the
weight to the input's dtype on the input's device, adds any LoRA deltas, and
runs the ordinary op; the expanded weight is a temporary.  Resident memory
is therefore the file's tensor bytes, not the compute dtype's.

LoRAs are *not* merged into quantized weights (that would cost a full-size
copy per LoRA and re-quantization error): :func:`with_lora` returns a copy of
the model whose patched layers carry the low-rank factors, and the delta
``up @ down * scale * strength`` is added to the expanded weight at compute.

Tensors that are not the weight of a Linear/Conv2d (norms, biases,
embeddings stored quantized) are expanded once at load to the compute dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models.layers import linear
from ..models.loading import CheckpointError, _preview, check_keys
from ..models.lora import LoraLayer, lora_delta
from .gguf_file import GGUFTensor, is_quantized
from .kernels import dequantize, qtype_name

FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
SCALED_FP8_MARKER = "scaled_fp8"  # ComfyUI's scaled-fp8 files carry this (empty) tensor at the top level
_SCALE_WEIGHT, _SCALE_INPUT = "scale_weight", "scale_input"


@dataclass(frozen=True)
class LoraPatch:
    """One LoRA layer aimed at a quantized weight, added at compute.

    ``start``/``stop`` select the weight rows it updates (a slice of a fused qkv weight, as
    FLUX LoRAs address them; ``stop=None`` = to the end) and ``swap_halves`` exchanges the two
    row halves of the delta (a fused weight stored in the other order), mirroring ``LoraTarget``
    of the merge path.
    """

    layer: LoraLayer
    strength: float
    start: int = 0
    stop: int | None = None
    swap_halves: bool = False

    def rows(self, shape: torch.Size) -> tuple[int, int]:
        return self.start, shape[0] if self.stop is None else self.stop

    def delta(self, shape: torch.Size, device: torch.device | str) -> torch.Tensor:
        start, stop = self.rows(shape)
        d = lora_delta(self.layer, (stop - start, *shape[1:]), device)
        if self.swap_halves:
            d = torch.cat(d.chunk(2, dim=0)[::-1], dim=0)
        return d * self.strength


class QuantizedWeightMixin:
    """Storage and expansion of one quantized weight; mixed into Linear/Conv2d subclasses.

    The stored bytes are the ``weight`` *buffer* (``_buffers["weight"]``, also :attr:`storage`),
    so ``state_dict()`` and device moves see the file's tensor.  Attribute access
    ``layer.weight`` returns the expanded weight in :attr:`compute_dtype` instead: model code
    that reads ``some_layer.weight.dtype`` to pick its compute dtype (our UNet and ControlNet
    do) or a weight's shape/device keeps working, and code that wants values gets correct
    ones (at the cost of one expansion) rather than raw bytes.
    """

    qformat: str  # "gguf" or "fp8"
    qtype: int  # ggml type id (GGUF only)
    qshape: torch.Size  # the logical weight shape
    storage_dtype: torch.dtype
    compute_dtype: torch.dtype = torch.float32
    lora: tuple[LoraPatch, ...] = ()

    @property
    def storage(self) -> torch.Tensor:
        return self._buffers["weight"]  # type: ignore[attr-defined]

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self.dequantized_weight(self.compute_dtype)

    def dequantized_weight(self, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
        """The weight in ``dtype`` on ``device`` (default: where the storage is), LoRA deltas included."""
        raw = self.storage if device is None else self.storage.to(device, non_blocking=True)
        if self.qformat == "gguf":
            w = dequantize(raw, self.qtype, self.qshape, torch.float32)
        else:
            w = raw.to(torch.float32)
            scale = self._buffers.get(_SCALE_WEIGHT)  # type: ignore[attr-defined]
            if scale is not None:
                w = w * scale.to(w.device, torch.float32)
        for patch in self.lora:
            start, stop = patch.rows(self.qshape)
            if (start, stop) == (0, self.qshape[0]):
                w = w + patch.delta(self.qshape, w.device)
            else:
                w = torch.cat([w[:start], w[start:stop] + patch.delta(self.qshape, w.device), w[stop:]])
        return w.to(dtype)

    def storage_nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._buffers.values() if t is not None)  # type: ignore[attr-defined]

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Any:
        """``module.to(dtype)`` moves the storage but never re-types it (fp8 is floating point);
        the requested float dtype becomes the compute dtype instead."""
        out = super()._apply(fn, recurse)  # type: ignore[misc]
        buffers = self._buffers  # type: ignore[attr-defined]
        if buffers["weight"].dtype != self.storage_dtype:
            buffers["weight"] = buffers["weight"].to(self.storage_dtype)
        scale = buffers.get(_SCALE_WEIGHT)
        if scale is not None and scale.dtype != torch.float32:
            buffers[_SCALE_WEIGHT] = scale.to(torch.float32)
        self.compute_dtype = fn(torch.empty(0, dtype=self.compute_dtype)).dtype
        return out

    def extra_repr(self) -> str:
        kind = qtype_name(self.qtype) if self.qformat == "gguf" else str(self.storage_dtype).removeprefix("torch.")
        return f"{super().extra_repr()}, stored={kind}, lora={len(self.lora)}"  # type: ignore[misc]


class QuantizedLinear(QuantizedWeightMixin, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized_weight(x.dtype, x.device)
        b = None if self.bias is None else self.bias.to(x.device, x.dtype)
        return linear(x, w, b)


class QuantizedConv2d(QuantizedWeightMixin, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized_weight(x.dtype, x.device)
        b = None if self.bias is None else self.bias.to(x.device, x.dtype)
        return self._conv_forward(x, w, b)


_QUANT_CLASSES: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: QuantizedLinear, nn.Conv2d: QuantizedConv2d}


def _quant_class(cls: type[nn.Module]) -> type[nn.Module] | None:
    """The quantized counterpart of a Linear/Conv2d class (subclasses included), or None.

    Models may use their own ``nn.Linear`` subclasses (e.g. one that skips init); the
    counterpart keeps that class's other behaviour and takes ``forward`` and ``weight``
    from the quantized base.  Created once per class.
    """
    if cls in _QUANT_CLASSES:
        return _QUANT_CLASSES[cls]
    if issubclass(cls, QuantizedWeightMixin):
        return None
    base = QuantizedLinear if issubclass(cls, nn.Linear) else QuantizedConv2d if issubclass(cls, nn.Conv2d) else None
    if base is None:
        return None
    _QUANT_CLASSES[cls] = type(f"Quantized{cls.__name__}", (base, cls), {"__module__": __name__})
    return _QUANT_CLASSES[cls]


def is_quantized_layer(module: nn.Module) -> bool:
    return isinstance(module, QuantizedWeightMixin)


def _quantize_layer(
    layer: nn.Module, stored: torch.Tensor | GGUFTensor, scale: torch.Tensor | None, dtype: torch.dtype
) -> None:
    """Swap ``layer`` (a Linear/Conv2d, usually on meta) to its quantized class holding ``stored``."""
    shape = torch.Size(layer.weight.shape)
    del layer.weight
    quant_cls = _quant_class(type(layer))
    assert quant_cls is not None
    layer.__class__ = quant_cls
    layer.qshape = shape
    if isinstance(stored, GGUFTensor):
        layer.qformat, layer.qtype, raw = "gguf", stored.qtype, stored.raw
    else:
        layer.qformat, layer.qtype, raw = "fp8", -1, stored
    layer.storage_dtype = raw.dtype
    layer.compute_dtype = dtype
    layer._buffers["weight"] = raw  # not register_buffer: the class's ``weight`` property shadows the name
    if scale is not None:
        layer.register_buffer(_SCALE_WEIGHT, scale.reshape(()).to(torch.float32))


def _logical_shape(t: torch.Tensor | GGUFTensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _expand(t: torch.Tensor | GGUFTensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(t, GGUFTensor):
        return t.dequantize(dtype)
    if scale is not None:
        return (t.to(torch.float32) * scale.to(torch.float32)).to(dtype)
    return t.to(dtype) if t.is_floating_point() else t


def _split_scales(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Separate ComfyUI scaled-fp8 bookkeeping (marker, ``scale_weight``, ``scale_input``) from the weights.

    ``scale_input`` only matters to fp8 matmul kernels that quantize activations; computing
    ``x @ (w * scale_weight)ᵀ`` in the compute dtype does not use it, so it is dropped.
    """
    plain: dict[str, Any] = {}
    scales: dict[str, torch.Tensor] = {}
    for key in state_dict:
        if key == SCALED_FP8_MARKER:
            continue
        leaf = key.rsplit(".", 1)[-1]
        if leaf == _SCALE_WEIGHT:
            scales[key[: -len(_SCALE_WEIGHT)] + "weight"] = state_dict[key]
        elif leaf != _SCALE_INPUT:
            plain[key] = state_dict[key]
    return plain, scales


def _should_keep_quantized(t: Any, weight_dtype: torch.dtype | None) -> bool:
    if is_quantized(t):
        return True
    if isinstance(t, torch.Tensor) and t.dtype in FP8_DTYPES:
        return True
    return weight_dtype is not None and isinstance(t, torch.Tensor) and t.is_floating_point()


def needs_quantized_load(state_dict: Mapping[str, Any], weight_dtype: torch.dtype | None = None) -> bool:
    """Whether :func:`load_quantized` (rather than plain ``assign_weights``) should load ``state_dict``."""
    if weight_dtype is not None:
        return True
    return any(_should_keep_quantized(state_dict[k], None) for k in state_dict)


def load_quantized(
    module: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    weight_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Assign a GGUF / fp8 / scaled-fp8 state dict to ``module`` (built on meta), keeping weights quantized.

    ``state_dict`` maps checkpoint keys (= ``module``'s parameter names) to torch tensors or
    :class:`GGUFTensor`.  Linear/Conv2d weights stored quantized (GGUF blocks, fp8) stay in that
    storage; with ``weight_dtype`` (an fp8 dtype, like ComfyUI's UNETLoader option) float weights
    of those layers are cast to it at load.  Everything else becomes ``dtype`` (the compute dtype).
    Key/shape checks are strict and name the file (``name``).
    """
    if weight_dtype is not None and weight_dtype not in FP8_DTYPES:
        raise CheckpointError(f"{name}: weight_dtype must be one of {FP8_DTYPES}, not {weight_dtype}")
    plain, scales = _split_scales(state_dict)
    unused_scales = set(scales) - set(plain)
    if unused_scales:
        raise CheckpointError(f"{name}: scale_weight without a weight for {sorted(unused_scales)[:5]}")
    quant_keys: set[str] = set()
    mismatched: list[str] = []
    for prefix, layer in list(module.named_modules()):
        key = f"{prefix}.weight" if prefix else "weight"
        if key not in plain or _quant_class(type(layer)) is None:
            continue
        stored = plain[key]
        if not _should_keep_quantized(stored, weight_dtype):
            continue
        if _logical_shape(stored) != tuple(layer.weight.shape):
            mismatched.append(f"{key}: checkpoint {_logical_shape(stored)} vs model {tuple(layer.weight.shape)}")
            continue
        if isinstance(stored, torch.Tensor) and stored.dtype not in FP8_DTYPES:
            stored = stored.to(weight_dtype)
        stored = stored.to(device)
        _quantize_layer(layer, stored, scales.get(key), dtype)
        quant_keys.add(key)
        if key in scales:
            quant_keys.add(key[: -len("weight")] + _SCALE_WEIGHT)
    if mismatched:
        raise CheckpointError(f"{name}: shape mismatch for {len(mismatched)} tensors: {'; '.join(mismatched[:5])}")
    # Tensors the model casts itself where it uses them (``keep_stored_dtype``, e.g. SD3's position table:
    # 226 M values in SD3.5-medium) stay as stored when that is a float dtype, instead of doubling in fp32.
    keep = set(getattr(module, "keep_stored_dtype", ()))
    rest = {k: t if k in keep and _plain_float(t, scales.get(k)) else _expand(t, scales.get(k), dtype)
            for k, t in plain.items() if k not in quant_keys}
    return _assign_rest(module, rest, quant_keys, name=name, device=device)


def _plain_float(t: Any, scale: torch.Tensor | None) -> bool:
    """A 16/32-bit float torch tensor without an fp8 scale (usable as stored)."""
    return (isinstance(t, torch.Tensor) and scale is None
            and t.dtype in (torch.float16, torch.bfloat16, torch.float32))


def assign_stored(
    module: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    weight_dtype: torch.dtype | None = None,
) -> nn.Module:
    """The one way loaders put a state dict into a model built on meta, whatever its storage.

    GGUF blocks, fp8 (plain or ComfyUI's scaled fp8) or a ``weight_dtype`` request go through
    :func:`load_quantized` (weights stay in storage dtype, expanded per layer; everything else
    becomes ``dtype``, float32 when None); any other file through ``models.loading.assign_weights``
    (``dtype`` None keeps the file's dtype, memory-mapped).  There is no second fp8 path.
    """
    if needs_quantized_load(state_dict, weight_dtype):
        return load_quantized(module, state_dict, name=name, device=device, dtype=dtype or torch.float32,
                              weight_dtype=weight_dtype)
    from ..models.loading import assign_weights

    return assign_weights(module, state_dict, name=name, device=device, dtype=dtype)


def resident_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (a quantized layer's storage is a buffer)."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _assign_rest(module: nn.Module, rest: dict[str, torch.Tensor], quant_keys: set[str], *, name: str,
                 device: torch.device | str) -> nn.Module:
    """``models.loading.assign_weights`` for a module whose quantized buffers are already in place.

    Those buffers must not go through ``load_state_dict``: assigning a buffer calls
    ``hasattr(layer, "weight")``, which on a quantized layer expands the whole weight.
    """
    expected = module.state_dict()
    check_keys(name, expected, rest, provided=quant_keys)
    bad = [f"{k}: checkpoint {tuple(t.shape)} vs model {tuple(expected[k].shape)}"
           for k, t in rest.items() if tuple(t.shape) != tuple(expected[k].shape)]
    if bad:
        raise CheckpointError(f"{name}: shape mismatch for {len(bad)} tensors: {'; '.join(bad[:5])}")
    module.load_state_dict({k: t.to(device) for k, t in rest.items()}, strict=False, assign=True)
    device = torch.device(device)
    for sub in module.modules():
        reset = getattr(sub, "reset_nonpersistent_buffers", None)
        if callable(reset):
            reset(device)
    tensors = [*module.named_parameters(), *module.named_buffers()]
    leftover = [n for n, t in tensors if t.is_meta]
    if leftover:
        raise CheckpointError(f"{name}: tensors still on the meta device after loading: {_preview(leftover)}")
    module.eval()
    module.requires_grad_(False)
    return module


def quantized_layers(module: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    return ((n, m) for n, m in module.named_modules() if is_quantized_layer(m))


def _shallow(module: nn.Module) -> nn.Module:
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    return clone


def with_lora(model: nn.Module, patches: Mapping[str, Sequence[LoraPatch]]) -> nn.Module:
    """A copy of ``model`` whose quantized layers named in ``patches`` add LoRA deltas at compute.

    ``patches``: module path -> [:class:`LoraPatch`, ...].  Only the modules on the
    paths are copied (shallowly); ``model`` and every tensor stay shared and untouched, so the
    cached base model is safe.  The factors are checked against the layer's shape here.
    """
    if not patches:
        return model
    root = _shallow(model)
    clones: dict[str, nn.Module] = {"": root}
    for target, entries in patches.items():
        parent, path = root, ""
        for part in target.split("."):
            path = f"{path}.{part}" if path else part
            if path not in clones:
                clones[path] = _shallow(parent._modules[part])
                parent._modules[part] = clones[path]
            parent = clones[path]
        if not is_quantized_layer(parent):
            raise TypeError(f"{target} is not a quantized layer; merge its LoRA instead")
        for patch in entries:
            patch.delta(parent.qshape, "cpu")  # raises LoraError when the factors do not fit
        parent.lora = tuple(parent.lora) + tuple(entries)
    return root
