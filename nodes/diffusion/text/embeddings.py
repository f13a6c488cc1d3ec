"""Textual-inversion embeddings: ``embedding:name`` in a prompt (ComfyUI's syntax).

A textual-inversion file holds a few learned token vectors; the prompt word ``embedding:name``
is replaced by those vectors, which then go through the text encoder like any token (weights
such as ``(embedding:name:1.2)`` apply to them as to words).  Formats read (as ComfyUI does):

- A1111/SD1/SD2 ``.pt``: ``{"string_to_param": {"*": [n, width]}, ...}``;
- ``.bin`` (diffusers / HF concepts): ``{"<token>": [width] or [n, width]}``;
- ``.safetensors`` with one tensor (``emb_params`` or any name) -> ``[n, width]``;
- SDXL ``.safetensors``: ``clip_l`` [n, 768] and ``clip_g`` [n, 1280], one per text encoder.

Files are read safely: safetensors, or ``torch.load(weights_only=True)`` for ``.pt``/``.bin``
(no arbitrary unpickling).  Embeddings are looked up in the ``embeddings`` model folders by name,
with or without an extension.

How the vectors reach the encoder: :func:`nodes.diffusion.text.encode.chunk_prompt` gives each
embedding vector a placeholder id ``PLACEHOLDER_BASE + k`` (k = its row in :class:`EmbeddingSlots`'
table); :func:`~nodes.diffusion.text.encode.encode` turns those into rows appended to the
encoder's token-embedding table for that call.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["EMBEDDING_PREFIX", "PLACEHOLDER_BASE", "EmbeddingError", "EmbeddingLibrary", "EmbeddingNotFound",
           "EmbeddingSlots", "load_embedding", "split_embeddings"]

EMBEDDING_PREFIX = "embedding:"
#: Placeholder token ids start here (far above any CLIP vocabulary, so never an EOS or a real token).
PLACEHOLDER_BASE = 1 << 30
_EXTENSIONS = (".safetensors", ".pt", ".bin", ".sft")
# ``embedding:name`` where the prefix starts a word; the name runs to whitespace or a comma.
_EMBEDDING_RE = re.compile(r"(?<![^\s,])" + re.escape(EMBEDDING_PREFIX) + r"([^\s,]+)")


class EmbeddingError(ValueError):
    """An embedding that cannot be used (unreadable file, wrong width); the message says which and why."""


class EmbeddingNotFound(EmbeddingError):
    """``embedding:name`` names no file in the embeddings folders."""

    def __init__(self, name: str, searched: Sequence[Path]) -> None:
        self.name = name
        self.searched = list(searched)
        super().__init__(f"embedding {name!r} not found")


def split_embeddings(text: str) -> list[str | tuple[str]]:
    """``text`` as plain-text pieces and ``(name,)`` tuples for each ``embedding:name``."""
    out: list[str | tuple[str]] = []
    pos = 0
    for m in _EMBEDDING_RE.finditer(text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        out.append((m.group(1),))
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def _tensors(obj: Any) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise EmbeddingError("the file does not hold a dictionary of tensors")
    if isinstance(obj.get("string_to_param"), Mapping):  # A1111 / SD1 / SD2 .pt
        params = [v for v in obj["string_to_param"].values() if isinstance(v, torch.Tensor)]
        if len(params) != 1:
            raise EmbeddingError("string_to_param should hold exactly one tensor")
        return {"": params[0]}
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def load_embedding(path: Path) -> dict[str, torch.Tensor]:
    """The vectors of one embedding file: ``{"": [n, width]}`` for a single-encoder file,
    ``{"clip_l": ..., "clip_g": ...}`` for SDXL ones (float32, 2-D)."""
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    else:
        try:
            tensors = _tensors(torch.load(str(path), map_location="cpu", weights_only=True))
        except EmbeddingError:
            raise
        except Exception as exc:  # unpickling refused or a corrupt file
            raise EmbeddingError(f"cannot read {path.name} safely ({exc.__class__.__name__}: {exc})") from None
    named = {k: v for k, v in tensors.items() if k in ("clip_l", "clip_g")}
    if not named:
        if len(tensors) != 1:
            raise EmbeddingError(f"{path.name} holds {len(tensors)} tensors {sorted(tensors)[:4]}; expected one "
                                 "(or clip_l/clip_g)")
        named = {"": next(iter(tensors.values()))}
    out = {}
    for k, v in named.items():
        v = v.detach().float()
        if v.ndim == 1:
            v = v[None]
        if v.ndim == 3 and v.shape[0] == 1:
            v = v[0]
        if v.ndim != 2 or v.shape[0] == 0:
            raise EmbeddingError(f"{path.name}: expected vectors [n, width], got shape {tuple(v.shape)}")
        out[k] = v
    if len({v.shape[0] for v in out.values()}) != 1:
        raise EmbeddingError(f"{path.name}: clip_l and clip_g have different vector counts")
    return out


class EmbeddingLibrary:
    """Finds and loads embeddings by name in a list of folders (cached per file size and mtime)."""

    _cache: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}
    _lock = threading.Lock()

    def __init__(self, folders: Sequence[Path]) -> None:
        self.folders = list(folders)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> EmbeddingLibrary:
        from nodes.shared.model_paths import ModelPaths

        return cls(ModelPaths.from_settings(settings).dirs("embeddings"))

    def find(self, name: str) -> Path:
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise EmbeddingNotFound(name, self.folders)
        for folder in self.folders:
            for candidate in (folder / name, *(folder / (name + ext) for ext in _EXTENSIONS)):
                if candidate.is_file():
                    return candidate
        raise EmbeddingNotFound(name, self.folders)

    def get(self, name: str) -> dict[str, torch.Tensor]:
        path = self.find(name)
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            hit = load_embedding(path)
            with self._lock:
                self._cache[key] = hit
        return hit


class EmbeddingSlots:
    """The embeddings one encode call uses, in order of first appearance, as placeholder ids.

    ``ids(name)`` gives the name's placeholder ids (one per vector); ``table(width, key)`` the rows
    to append to an encoder's token table (``key`` picks ``clip_l``/``clip_g`` in SDXL files)."""

    def __init__(self, lookup: Callable[[str], Mapping[str, torch.Tensor]]) -> None:
        self._lookup = lookup
        self._offsets: dict[str, int] = {}
        self._entries: list[tuple[str, Mapping[str, torch.Tensor]]] = []
        self._rows = 0

    def ids(self, name: str) -> list[int]:
        if name not in self._offsets:
            vectors = self._lookup(name)
            self._offsets[name] = self._rows
            self._entries.append((name, vectors))
            self._rows += next(iter(vectors.values())).shape[0]
        start = self._offsets[name]
        n = next(iter(dict(self._entries)[name].values())).shape[0]
        return [PLACEHOLDER_BASE + start + i for i in range(n)]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def table(self, width: int, key: str | None = None) -> torch.Tensor:
        rows = []
        for name, vectors in self._entries:
            v = vectors.get(key) if key is not None else None
            if v is None:
                v = vectors.get("")
            if v is None:
                raise EmbeddingError(f"embedding {name!r} has vectors for {sorted(vectors)}, none for this "
                                     f"text encoder ({key or 'single encoder'})")
            if v.shape[1] != width:
                raise EmbeddingError(f"embedding {name!r} has {v.shape[1]}-wide vectors but this text encoder "
                                     f"is {width} wide (an embedding for another model family)")
            rows.append(v)
        return torch.cat(rows) if rows else torch.zeros(0, width)
