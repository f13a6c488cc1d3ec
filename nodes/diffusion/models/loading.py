"""Read checkpoint files and put their tensors into modules without copies.

The loading recipe for every model in this package is:

1. ``load_state_dict(path)``: ``.safetensors`` files are memory-mapped and
   exposed as a lazy mapping, so a 7 GB all-in-one checkpoint costs nothing
   until a component's tensors are actually used; pickled checkpoints
   (``.ckpt/.pt/.pth/.bin``) go through ``torch.load(weights_only=True)``
   only, which refuses to run code hidden in the pickle.
2. ``strip_prefix(sd, "model.diffusion_model.")``: a lazy view, still no reads.
3. infer the config from shapes, ``build_on_meta(cls, config)``: parameters
   without storage, so the random init never allocates memory.
4. ``assign_weights(module, sd, name=...)``: strict key check with an error
   that lists what is missing / unexpected, then ``load_state_dict(...,
   assign=True)`` which adopts the checkpoint tensors as the parameters.

``compute_dtype`` is the dtype policy: the stored precision on accelerators;
on CPU float32, except bfloat16 for large models on CPUs with native bf16
dot products (see :func:`cpu_prefers_bf16`).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import mmap
import os
import pickle
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # Linux, BSD; elsewhere pages are not released early
_PAGE = mmap.PAGESIZE
_PREVIEW = 20  # how many key names an error message lists per category

M = TypeVar("M", bound=nn.Module)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read, or does not fit the module."""


_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, attr)
    for name, attr in (
        ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16"),
        ("I64", "int64"), ("I32", "int32"), ("I16", "int16"), ("I8", "int8"), ("U8", "uint8"), ("BOOL", "bool"),
        ("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"),
        ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"),
    )
    if hasattr(torch, attr)
}  # fmt: skip
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header


def _read_safetensors_header(path: str) -> tuple[int, dict[str, tuple[torch.dtype, list[int], int, int]], dict]:
    """Parse and check a ``.safetensors`` header: (data start, {key: (dtype, shape, begin, end)}, metadata).

    Every entry is checked against the file before anything is mapped, so a truncated file or a
    header that lies about sizes fails here with the offending key named, not later inside a model.
    """
    import json
    import math
    import struct

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise ValueError(f"header length {n} does not fit in the file ({size} bytes)")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    data_start, data_len = 8 + n, size - 8 - n
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("__metadata__ must map strings to strings")
    entries = {}
    for key, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"tensor {key!r}: malformed entry {info!r} ({exc})") from None
        nbytes = math.prod(shape) * dtype.itemsize
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= data_len or end - begin != nbytes:
            raise ValueError(f"tensor {key!r}: shape {shape} {info['dtype']} needs {nbytes} bytes but its offsets "
                             f"are [{begin}, {end}] in {data_len} bytes of data")
        entries[key] = (dtype, shape, begin, end)
    return data_start, entries, {str(k): v for k, v in meta.items()}


class LazySafetensors(MutableMapping[str, torch.Tensor]):
    """Dict-like view of a ``.safetensors`` file that reads tensors on access.

    The whole file is memory-mapped once (copy-on-write, never written back) and each tensor is a
    view into that mapping, so ``sd[key]`` costs a dictionary lookup and pages are only read when a
    computation touches them.  The header is parsed and validated here rather than through
    ``safetensors.safe_open``, whose ``get_tensor`` leaks two small Python objects per call
    (safetensors 0.6-0.8): harmless once, but a long-lived process that reloads a checkpoint every
    run (one larger than the cache budget) grew by ~34 KiB per load of the demo checkpoint.
    Writes and deletions are kept in an overlay (the file is never modified), which lets callers
    treat this like the plain dict they would get from ``load_file``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._data_start, self._entries, self.metadata = _read_safetensors_header(self.path)
            self._keys = sorted(self._entries, key=lambda k: self._entries[k][2])  # file order
            total = os.path.getsize(self.path)
            self._storage = torch.UntypedStorage.from_file(self.path, shared=False, nbytes=total) if total else None
        except (OSError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
            raise CheckpointError(
                f"cannot read safetensors file {self.path!r} (truncated or corrupt?): {exc}"
            ) from exc
        self._overlay: dict[str, torch.Tensor] = {}
        self._deleted: set[str] = set()

    def _tensor(self, key: str) -> torch.Tensor:
        dtype, shape, begin, end = self._entries[key]
        offset = self._data_start + begin
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        if offset % dtype.itemsize == 0:  # a view into the mapping: no copy, no read yet
            return torch.empty(0, dtype=dtype).set_(self._storage, offset // dtype.itemsize, shape)
        raw = torch.empty(0, dtype=torch.uint8).set_(self._storage, offset, (end - begin,))
        return raw.clone().view(dtype).reshape(shape)  # unaligned writer: one copy into aligned memory

    def release(self, key: str) -> None:
        """Drop the resident pages of ``key``'s bytes from this process (after converting it to a copy).

        The mapping is private and never written, so the kernel can simply forget the pages
        (``madvise(MADV_DONTNEED)``); touching the tensor again re-reads them from the file, so this is
        safe even if a view of it survives. Only whole pages inside the tensor's bytes are dropped
        (neighbours may be in use as parameters). Converting fp16 -> fp32 tensor by tensor and releasing
        each keeps the peak near the fp32 size instead of fp32 + the whole fp16 file."""
        if key in self._overlay or key not in self._entries or self._storage is None or _MADV_DONTNEED is None:
            return
        _, _, begin, end = self._entries[key]
        start = self._storage.data_ptr() + self._data_start + begin
        first = -(-start // _PAGE) * _PAGE
        last = (start + end - begin) // _PAGE * _PAGE
        if last > first:
            _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self._overlay:
            return self._overlay[key]
        if key in self._deleted or key not in self._entries:
            raise KeyError(key)
        try:
            return self._tensor(key)
        except Exception as exc:
            raise CheckpointError(f"cannot read tensor {key!r} from {self.path!r}: {exc}") from exc

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self._deleted.discard(key)
        self._overlay[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._overlay.pop(key, None)
        if key in self._entries:
            self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._overlay or (key in self._entries and key not in self._deleted)

    def __iter__(self) -> Iterator[str]:
        yield from (k for k in self._keys if k not in self._deleted and k not in self._overlay)
        yield from self._overlay

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"LazySafetensors({self.path!r}, {len(self)} tensors)"


class PrefixView(Mapping[str, Any]):
    """Read-only view of the keys of ``base`` under ``prefix``, with it removed."""

    def __init__(self, base: Mapping[str, Any], prefix: str) -> None:
        self._base = base
        self._prefix = prefix
        self._keys = [k[len(prefix) :] for k in base if k.startswith(prefix)]
        self.metadata = getattr(base, "metadata", {})

    def __getitem__(self, key: str) -> Any:
        if key not in self._key_set:
            raise KeyError(key)
        return self._base[self._prefix + key]

    def release(self, key: str) -> None:
        """Forward :meth:`LazySafetensors.release` (a no-op for other mappings)."""
        release = getattr(self._base, "release", None)
        if release is not None and key in self._key_set:
            release(self._prefix + key)

    @property
    def _key_set(self) -> set[str]:
        if not hasattr(self, "_ks"):
            self._ks = set(self._keys)
        return self._ks

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class DropKeysView(Mapping[str, Any]):
    """Read-only view of ``base`` without the keys ``drop(key)`` selects (e.g. a buffer old files carry).

    Unlike a filtered ``dict`` it keeps :meth:`release`, so tensors converted from a memory-mapped file still
    have their mapped pages dropped (a dict copy made the fp16 CLIP weights, 0.23 GiB for SD1.5, stay
    resident through the load)."""

    def __init__(self, base: Mapping[str, Any], drop: Callable[[str], bool]) -> None:
        self._base = base
        self._keys = [k for k in base if not drop(k)]
        self._key_set = set(self._keys)
        self.metadata = getattr(base, "metadata", {})

    def __getitem__(self, key: str) -> Any:
        if key not in self._key_set:
            raise KeyError(key)
        return self._base[key]

    def release(self, key: str) -> None:
        """Forward :meth:`LazySafetensors.release` (a no-op for other mappings)."""
        release = getattr(self._base, "release", None)
        if release is not None and key in self._key_set:
            release(key)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _load_pickle(path: str) -> dict[str, torch.Tensor]:
    """``torch.load`` restricted to tensors and plain containers."""
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            # mmap needs the zip-based format (torch >= 1.6 files); legacy
            # pickles are read into memory instead.
            if "mmap" not in str(exc).lower():
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():  # a damaged pickle stream, not a refused object
            raise CheckpointError(f"cannot read checkpoint {path!r} (truncated or corrupt?): {exc}") from exc
        raise CheckpointError(
            f"refusing to load {path!r}: it contains Python objects other than tensors, and "
            f"unpickling them could run arbitrary code (torch.load weights_only=True said: {exc})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path!r} (truncated or corrupt?): {exc}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path!r} does not hold a state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path!r} holds no tensors")
    return tensors


def load_state_dict(path: str | os.PathLike[str]) -> tuple[MutableMapping[str, torch.Tensor], dict[str, str]]:
    """Open a checkpoint and return ``(state_dict, metadata)``.

    ``.safetensors`` -> a ``LazySafetensors`` (memory-mapped, read on
    access) and the file's string metadata; pickle formats -> a plain dict
    (unwrapped from a ``state_dict`` key) and ``{}``.  Errors name the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path!r}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        sd = LazySafetensors(path)
        return sd, sd.metadata
    if suffix in PICKLE_SUFFIXES:
        return _load_pickle(path), {}
    raise CheckpointError(f"unsupported checkpoint type {suffix!r} for {path!r}")


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> Mapping[str, Any]:
    """Keys under ``prefix`` with the prefix removed (a lazy view; reads nothing)."""
    return PrefixView(state_dict, prefix)


def has_prefix(state_dict: Mapping[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state_dict)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the body (a checkpoint load), restoring its state after.

    A load allocates tens of thousands of small objects (modules, parameters, tensor views, key strings) and
    frees almost none, so the collector's allocation counter triggers generation-0/1 passes and, on a process
    whose heap holds torch, a full pass over ~190k objects: ~0.1-0.4 s of a full SD1.5 load for no garbage.
    Reference counting still frees everything that is not cyclic; the paused collector catches up after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_on_meta(factory: Callable[..., M], *args: Any, **kwargs: Any) -> M:
    """Construct a module on the meta device: shapes only, no memory, no init cost.

    Construction runs every submodule's ``reset_parameters()``. On meta tensors that is useless (there is no
    data) and not free: ``normal_``/``uniform_`` on meta go through ``torch._refs``, whose first use imports
    ``torch._dynamo`` (~1 s idle, 3.5 s on a loaded machine) -- a cold-start cost for nothing. So the
    initialisers are skipped while building (``_SkipInitOnMeta``); weights are assigned afterwards anyway.
    """
    with torch.device("meta"), _SkipInitOnMeta():
        return factory(*args, **kwargs)


def adopt_on_meta(factory: Callable[..., M], config: Any, sd: Mapping[str, Any]) -> M:
    """``factory(config)`` built on meta (:func:`build_on_meta`) with ``sd`` adopted strictly as stored
    (memory-mapped tensors stay mapped, any dtype), frozen for inference: the one tail of every
    ``build_*_from_state_dict`` once its layout is converted and its config known."""
    model = build_on_meta(factory, config)
    model.load_state_dict(dict(sd), strict=True, assign=True)
    return model.eval().requires_grad_(False)


# In-place ops that only write values (never shapes, strides or flags): meaningless on a meta tensor.
_VALUE_ONLY_INPLACE = frozenset({
    "normal_", "uniform_", "fill_", "zero_", "random_", "bernoulli_", "exponential_", "log_normal_", "cauchy_",
    "geometric_", "erfinv_", "clamp_", "mul_", "add_", "sub_", "div_", "copy_", "fill_diagonal_",
})  # fmt: skip


class _SkipInitOnMeta(TorchFunctionMode):
    """Torch-function mode that turns parameter initialisation on meta tensors into a no-op.

    ``torch.nn.init`` functions dispatch through ``__torch_function__`` when a mode is active, and the
    tensor methods they end in (``normal_``, ``fill_``...) do too; both return their (meta) tensor untouched.
    A mode rather than a patch of ``torch.nn.init``: modes are thread-local, so a model another thread builds
    for real at the same time is still initialised.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        if isinstance(target, torch.Tensor) and target.is_meta and (
            getattr(func, "__module__", None) == "torch.nn.init"
            or getattr(func, "__name__", None) in _VALUE_ONLY_INPLACE
        ):
            return target
        return func(*args, **kwargs)


def check_keys(name: str, expected: Iterable[str], present: Iterable[str], *, provided: Iterable[str] = ()) -> None:
    """Raise :class:`CheckpointError` listing the keys the model expects but the file lacks, and those
    the file has but the model does not (``provided``: expected keys filled some other way).  One
    message for every loader, so a wrong or truncated file reads the same whichever path loaded it."""
    expected, present = set(expected), set(present)
    missing = sorted(expected - present - set(provided))
    unexpected = sorted(present - expected)
    if missing or unexpected:
        lines = [f"{name}: checkpoint does not match the model"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
        raise CheckpointError("\n".join(lines))


def _preview(names: list[str]) -> str:
    shown = ", ".join(names[:_PREVIEW])
    more = len(names) - _PREVIEW
    return shown + (f", ... ({more} more)" if more > 0 else "")


#: Below this many weights a model computes in float32 on every CPU: small layers gain little from
#: bf16 kernels, and the shipped demo models (a few million weights) keep their fp32-measured images.
CPU_BF16_MIN_PARAMS = 100_000_000

#: ``auto`` (the default), ``fp32`` or ``bf16``: what large models compute in on CPU.
CPU_PRECISION_ENV = "NODEGRAPH_CPU_PRECISION"


class PrecisionSettingError(ValueError):
    """``NODEGRAPH_CPU_PRECISION`` holds something else than auto/fp32/bf16; ``fix`` says what to set."""

    fix = f"set {CPU_PRECISION_ENV} to auto, fp32 or bf16, or unset it"


def cpu_has_native_bf16() -> bool:
    """Whether this x86 CPU has bf16 dot-product instructions (AVX512-BF16 or AMX).

    Why a feature check and not ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: that one is true on
    any AVX-512 CPU (BW/VL/DQ), where without the instructions oneDNN emulates bf16; an earlier Intel
    Xeon measured an SD1.5 UNet step 2.6x slower in bf16 than in fp32 (94 s vs 36 s).  With them
    (AMD Zen 4 EPYC here) the same step takes 0.49x the fp32 time in bf16 (``bench/cpu_precision.py``).
    ARM bf16 is not measured, so it stays fp32.  ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) capped
    below the bf16 ISAs makes oneDNN emulate bf16 again (the CI's AVX2 pass: 3x slower), so it counts as none.
    """
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if cap and cap not in ("ALL", "DEFAULT") and not any(k in cap for k in ("BF16", "AMX", "FP16", "AVX10")):
        return False
    cpu = getattr(torch, "cpu", None)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(cpu, name)()) for name in probes if hasattr(cpu, name))
    except Exception:  # an unusual build without cpuinfo: stay on the measured default
        return False


def cpu_prefers_bf16(params: int) -> bool:
    """Whether a model of ``params`` weights should compute in bf16 on this CPU.

    ``NODEGRAPH_CPU_PRECISION=fp32`` keeps everything in float32 (ComfyUI's CPU default, and
    the images fp32 runs made before this policy existed); ``bf16`` uses bf16 for every model regardless of size or CPU;
    ``auto`` uses bf16 for models of at least :data:`CPU_BF16_MIN_PARAMS` weights on CPUs with native
    bf16 instructions, where it halves the memory a load writes and more than halves a step.
    """
    choice = os.environ.get(CPU_PRECISION_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "fp32", "bf16"):
        raise PrecisionSettingError(f"{CPU_PRECISION_ENV}={choice!r} is not a CPU precision")
    if choice != "auto":
        return choice == "bf16"
    return params >= CPU_BF16_MIN_PARAMS and cpu_has_native_bf16()


def compute_dtype(device: torch.device | str, stored_dtype: torch.dtype, params: int = 0) -> torch.dtype:
    """The dtype to run a model in, given where it runs, how it was stored and how big it is.

    CPU: float32, except bfloat16 when :func:`cpu_prefers_bf16` says so for a model of ``params``
    weights (callers that do not pass ``params`` get float32 unless the user forced bf16).  Half
    precision (fp16) is never used on CPU: its GEMMs are missing or minutes slow.  CUDA/MPS: the
    stored precision, except that float8 storage is upcast (bf16 on CUDA, fp16 on MPS) because there
    are no general float8 kernels, and non-float storage falls back to fp32.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return torch.bfloat16 if cpu_prefers_bf16(params) else torch.float32
    if stored_dtype in (torch.float16, torch.bfloat16, torch.float32):
        if device.type == "mps" and stored_dtype == torch.bfloat16:
            return torch.float16
        return stored_dtype
    if stored_dtype.is_floating_point and stored_dtype.itemsize == 1:
        return torch.bfloat16 if device.type == "cuda" else torch.float16
    return torch.float32


def _float_counts(state_dict: Mapping[str, Any]) -> dict[torch.dtype, int]:
    """Floating-point weights per dtype (header sizes only: no tensor data is read)."""
    counts: dict[torch.dtype, int] = {}
    for key in state_dict:
        t = state_dict[key]
        if t.dtype.is_floating_point:
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return counts


def _most_common(counts: Mapping[torch.dtype, int]) -> torch.dtype:
    return max(counts, key=lambda d: counts[d]) if counts else torch.float32


def stored_dtype(state_dict: Mapping[str, Any]) -> torch.dtype:
    """Most common floating dtype among the tensors (the checkpoint's precision)."""
    return _most_common(_float_counts(state_dict))


def dtype_for(device: torch.device | str, state_dict: Mapping[str, Any]) -> torch.dtype:
    """:func:`compute_dtype` for the model ``state_dict`` holds: its stored precision and its size (the
    number of float weights, which the CPU policy goes by), from one pass over the tensor headers."""
    counts = _float_counts(state_dict)
    return compute_dtype(device, _most_common(counts), sum(counts.values()))


#: fp16 -> bf16 goes through fp32 in chunks of this many elements (4 MiB of fp32: stays in cache).
_VIA_FP32_CHUNK = 1 << 20


_local = threading.local()


def _scratch() -> torch.Tensor:
    """This thread's fp32 chunk buffer for :func:`convert_tensor` (per thread: two loads may run at once).
    Kept, not allocated per tensor: that moved glibc's mmap threshold up to its size and the smaller
    converted tensors then piled up in the heap (peak RSS +0.38 GiB on a full-size SD1.5 load)."""
    buf = getattr(_local, "scratch", None)
    if buf is None:
        buf = _local.scratch = torch.empty(_VIA_FP32_CHUNK, dtype=torch.float32)
    return buf


def convert_tensor(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(device=device, dtype=dtype)``, with fp16 -> bf16 on CPU done via fp32 in cached chunks.

    Why: torch's direct fp16 -> bf16 copy has no vectorised kernel; fp16 -> fp32 and fp32 -> bf16 both
    do, and two passes over a cache-sized chunk cost about a quarter of the direct copy (50 M
    elements: 9 ms vs 36 ms here).  A full-size SD1.5 checkpoint loaded in bf16 saves ~0.6 s of CPU.
    Values are identical (NaN payloads aside): fp16 -> fp32 is exact, so both round once to bf16.
    """
    if not (t.dtype == torch.float16 and dtype == torch.bfloat16 and t.device.type == "cpu"
            and torch.device(device).type == "cpu" and t.numel() > _VIA_FP32_CHUNK):
        return t.to(device=device, dtype=dtype)
    src = t.reshape(-1)
    out = torch.empty(t.shape, dtype=dtype)
    flat = out.view(-1)
    scratch = _scratch()
    for i in range(0, src.numel(), _VIA_FP32_CHUNK):
        n = min(_VIA_FP32_CHUNK, src.numel() - i)
        scratch[:n].copy_(src[i:i + n])
        flat[i:i + n].copy_(scratch[:n])
    return out


def assign_weights(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Adopt ``state_dict`` as ``module``'s parameters (strict; ``assign=True``).

    Floating tensors are converted to ``dtype`` (if given) and moved to
    ``device``; tensors that already match are used as they are, so fp32
    weights memory-mapped from a safetensors file are not copied.
    Non-persistent buffers (which no checkpoint holds) are rebuilt by any
    submodule that defines ``reset_nonpersistent_buffers(device)``.  The
    module is returned in eval mode with gradients off.
    """
    expected = module.state_dict()
    check_keys(name, expected, state_dict.keys())
    converted: dict[str, torch.Tensor] = {}
    release = getattr(state_dict, "release", None)  # memory-mapped files: drop pages once copied
    mismatched = []
    for key, ref in expected.items():
        t = state_dict[key]
        if tuple(t.shape) != tuple(ref.shape):
            mismatched.append(f"{key}: checkpoint {tuple(t.shape)} vs model {tuple(ref.shape)}")
            continue
        target = dtype if (dtype is not None and t.dtype.is_floating_point) else t.dtype
        converted[key] = convert_tensor(t, device, target)
        if release is not None and converted[key].data_ptr() != t.data_ptr():
            release(key)  # converted to a copy: the mapped original need not stay resident
    if mismatched:
        raise CheckpointError(f"{name}: shape mismatch for {len(mismatched)} tensors: {_preview(mismatched)}")
    module.load_state_dict(converted, strict=True, assign=True)
    device = torch.device(device)
    for sub in module.modules():
        reset = getattr(sub, "reset_nonpersistent_buffers", None)
        if callable(reset):
            reset(device)
    leftover = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"{name}: tensors still on the meta device after loading: {_preview(leftover)}")
    module.eval()
    module.requires_grad_(False)
    return module
