"""Read GGUF checkpoints (ComfyUI-GGUF conventions) into a state dict of quantized tensors.

The file is parsed by the ``gguf`` package's ``GGUFReader`` (the format's
reference reader), memory-mapped copy-on-write, so nothing is read until a
layer touches its bytes.  Conventions follow ComfyUI-GGUF, the tool most
GGUF diffusion files are made with:

- tensor names are the original checkpoint keys; a ``model.diffusion_model.``
  prefix, when present, is stripped (tensors outside it are ignored);
- GGUF lists dimensions innermost first, so the torch shape is the reverse,
  unless a ``comfy.gguf.orig_shape.<name>`` INT32 array overrides it (5-D
  and odd-shaped tensors are stored flattened);
- ``general.architecture`` names the family (``flux``, ``sd1``, ``sdxl``…).

F32/F16/BF16 tensors come back as plain torch tensors (views into the
mapping); quantized ones as :class:`GGUFTensor`, which keeps the raw blocks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..models.loading import CheckpointError
from .kernels import FLOAT_QTYPES, SUPPORTED_QTYPES, dequantize, qtype_name, supported_names

DIFFUSION_PREFIX = "model.diffusion_model."


@dataclass(frozen=True, eq=False)
class GGUFTensor:
    """One quantized tensor: ``raw`` uint8 rows of blocks, its ggml type and its logical torch shape."""

    raw: torch.Tensor
    qtype: int
    shape: torch.Size

    # Enough of the tensor interface for shape-based config inference (``sd[k].shape``, ``.ndim``,
    # ``.numel()``) to treat a GGUF state dict like any other; ``dtype`` is the raw storage's
    # (uint8, not floating), so "most common float dtype" policies ignore quantized tensors.
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.raw.dtype

    def numel(self) -> int:
        return self.shape.numel()

    @property
    def nbytes(self) -> int:
        return self.raw.numel() * self.raw.element_size()

    @property
    def type_name(self) -> str:
        return qtype_name(self.qtype)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.raw, self.qtype, self.shape, dtype)

    def to(self, device: torch.device | str) -> GGUFTensor:
        return GGUFTensor(self.raw.to(device), self.qtype, self.shape)


@dataclass
class GGUFCheckpoint:
    """What :func:`read_gguf` found: tensors by checkpoint key, the architecture string, type counts."""

    state_dict: dict[str, torch.Tensor | GGUFTensor]
    architecture: str | None
    type_counts: dict[str, int]


def _string_field(reader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None:
        return None
    try:
        value = field.contents()
    except Exception:  # noqa: BLE001 - a malformed optional field is treated as absent
        return None
    return value if isinstance(value, str) else None


def _orig_shape(reader, name: str) -> torch.Size | None:
    field = reader.get_field(f"comfy.gguf.orig_shape.{name}")
    if field is None:
        return None
    value = field.contents()
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise CheckpointError(f"bad comfy.gguf.orig_shape metadata for tensor {name!r}: {value!r}")
    return torch.Size(value)


def _as_torch(data: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # a copy-on-write mapping is writable; belt and braces for 'r' mode
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(data)


def _tensor_entry(reader, tensor) -> torch.Tensor | GGUFTensor:
    qtype = int(tensor.tensor_type)
    shape = _orig_shape(reader, tensor.name) or torch.Size(int(d) for d in reversed(tensor.shape.tolist()))
    data = _as_torch(tensor.data)
    if qtype in (0, 1):  # F32 / F16: the reader already gives float arrays
        return data.reshape(shape)
    if qtype == 30:  # BF16 arrives as bytes
        return data.reshape(-1).view(torch.bfloat16).reshape(shape)
    return GGUFTensor(data, qtype, shape)


def read_gguf(path: str | os.PathLike[str], *, prefix: str | None = DIFFUSION_PREFIX) -> GGUFCheckpoint:
    """Open a ``.gguf`` file: every tensor, keyed by its checkpoint name, without reading the data.

    Unsupported quantization types fail here, naming the tensors and the types that work,
    rather than later inside a sampler.
    """
    import gguf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"GGUF file not found: {path!r}")
    try:
        reader = gguf.GGUFReader(path, "c")
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise CheckpointError(f"cannot read {path!r} as GGUF (not a GGUF file, or truncated): {exc}") from exc
    names = [t.name for t in reader.tensors]
    strip = prefix is not None and any(n.startswith(prefix) for n in names)
    state: dict[str, torch.Tensor | GGUFTensor] = {}
    counts: dict[str, int] = {}
    bad: dict[str, list[str]] = {}
    for tensor in reader.tensors:
        key = tensor.name
        if strip:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix):]
        qtype = int(tensor.tensor_type)
        counts[qtype_name(qtype)] = counts.get(qtype_name(qtype), 0) + 1
        if qtype not in SUPPORTED_QTYPES:
            bad.setdefault(qtype_name(qtype), []).append(key)
            continue
        state[key] = _tensor_entry(reader, tensor)
    if bad:
        listed = "; ".join(f"{t}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}" for t, keys in bad.items())
        raise CheckpointError(f"{path!r} uses GGUF quantization types nodegraph cannot dequantize ({listed}); "
                              f"use a file quantized as one of {supported_names()}")
    if not state:
        raise CheckpointError(f"{path!r} holds no tensors")
    return GGUFCheckpoint(state, _string_field(reader, "general.architecture"), counts)


def is_quantized(t: object) -> bool:
    """A GGUF block tensor (float GGUF tensors are plain torch tensors)."""
    return isinstance(t, GGUFTensor) and t.qtype not in FLOAT_QTYPES


def dequantize_state_dict(sd: Mapping[str, torch.Tensor | GGUFTensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Everything expanded to ``dtype`` (the reference path tests compare against)."""
    return {k: (v.dequantize(dtype) if isinstance(v, GGUFTensor) else v.to(dtype)) for k, v in sd.items()}


def open_weights(path: str | os.PathLike[str], *, prefix: str | None = DIFFUSION_PREFIX
                 ) -> tuple[Mapping[str, torch.Tensor | GGUFTensor], dict[str, str]]:
    """``(state_dict, metadata)`` for a ``.gguf`` or any file ``load_state_dict`` reads.

    One call for loaders: GGUF's architecture string comes back as metadata
    ``{"general.architecture": ...}``; other formats are returned exactly as
    ``models.loading.load_state_dict`` returns them (their prefixes untouched).
    """
    from ..models.loading import load_state_dict

    if os.fspath(path).lower().endswith(".gguf"):
        ckpt = read_gguf(path, prefix=prefix)
        meta = {"general.architecture": ckpt.architecture} if ckpt.architecture else {}
        return ckpt.state_dict, meta
    return load_state_dict(path)


# llama.cpp's T5 tensor names (what T5 text-encoder GGUFs use) -> the original (transformers) keys.
_T5_BLOCK_PARTS = {
    "attn_q": "layer.0.SelfAttention.q", "attn_k": "layer.0.SelfAttention.k",
    "attn_v": "layer.0.SelfAttention.v", "attn_o": "layer.0.SelfAttention.o",
    "attn_norm": "layer.0.layer_norm", "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
    "ffn_gate": "layer.1.DenseReluDense.wi_0", "ffn_up": "layer.1.DenseReluDense.wi_1",
    "ffn_down": "layer.1.DenseReluDense.wo", "ffn_norm": "layer.1.layer_norm",
}  # fmt: skip
_T5_TOP = {"token_embd": "shared", "enc.output_norm": "encoder.final_layer_norm"}


def t5_key(name: str) -> str:
    """``enc.blk.3.attn_q.weight`` -> ``encoder.block.3.layer.0.SelfAttention.q.weight`` (others unchanged)."""
    stem, dot, leaf = name.rpartition(".")
    if stem in _T5_TOP:
        return f"{_T5_TOP[stem]}{dot}{leaf}"
    parts = stem.split(".")
    if len(parts) == 4 and parts[:2] == ["enc", "blk"] and parts[2].isdigit() and parts[3] in _T5_BLOCK_PARTS:
        return f"encoder.block.{parts[2]}.{_T5_BLOCK_PARTS[parts[3]]}{dot}{leaf}"
    return name


def text_encoder_state_dict(ckpt: GGUFCheckpoint) -> dict[str, torch.Tensor | GGUFTensor]:
    """A text-encoder GGUF's tensors under the original checkpoint keys.

    T5 files (``general.architecture`` ``t5``/``t5encoder``) use llama.cpp names and are
    renamed; files written with the original keys (ComfyUI-GGUF's own converter) pass through.
    """
    if ckpt.architecture in ("t5", "t5encoder"):
        return {t5_key(k): v for k, v in ckpt.state_dict.items()}
    return dict(ckpt.state_dict)
