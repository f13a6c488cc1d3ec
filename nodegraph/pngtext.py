"""Reading the text chunks of a PNG (and the workflow embedded in one), safely.

This lives in the engine, not in the image pack, because opening a workflow
(ours or ComfyUI's) from a PNG is an engine job that must work with no pack
installed; ``nodes.image.png_meta`` re-exports it for the image pack's users.

Saved images carry the workflow that made them as JSON in a ``tEXt`` chunk
keyed ``workflow`` (ComfyUI does the same, so dropping either tool's PNG onto
the editor can recover the graph).  A PNG may come from anyone, so this reader:

* walks the chunk list itself and never decodes pixels or runs a decoder
  plugin; only ``tEXt``/``zTXt``/``iTXt`` chunks are looked at;
* bounds every text value (``max_bytes``, also after decompression, so a
  zip bomb in a ``zTXt`` chunk cannot exhaust memory);
* checks each text chunk's CRC, so corruption is reported instead of parsed;
* only ever *parses JSON* — nothing in the file is executed or imported.

Errors are :class:`PngMetadataError` with a message meant for the user.
Stdlib only (no torch, no Pillow), so the GUI and the CLI can call it cheaply.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any, BinaryIO

from .jsontext import parse_json

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WORKFLOW_KEY = "workflow"
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
_TEXT_TYPES = (b"tEXt", b"zTXt", b"iTXt")
_MAX_CHUNKS = 100_000  # a real PNG has a handful; stops pathological files early


class PngMetadataError(ValueError):
    """The file is not a PNG, is damaged, or holds unreadable/oversized metadata."""


def _read_exact(fh: BinaryIO, n: int, path: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise PngMetadataError(f"{path}: file is truncated (PNG chunk list ends early)")
    return data


def _inflate(data: bytes, max_bytes: int, path: str, key: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise PngMetadataError(f"{path}: compressed text {key!r} is damaged ({exc})") from None
    if len(out) > max_bytes or d.unconsumed_tail:
        raise PngMetadataError(f"{path}: text {key!r} is larger than the {max_bytes} byte limit")
    return out


def _decode_text_chunk(ctype: bytes, data: bytes, max_bytes: int, path: str) -> tuple[str, str]:
    """(keyword, text) of one textual chunk, following the PNG specification's layouts."""
    keyword, sep, rest = data.partition(b"\x00")
    if not sep:
        raise PngMetadataError(f"{path}: malformed {ctype.decode()} chunk (no keyword terminator)")
    key = keyword.decode("latin-1")
    if ctype == b"tEXt":
        return key, rest.decode("latin-1")
    if ctype == b"zTXt":
        if not rest or rest[0] != 0:
            raise PngMetadataError(f"{path}: zTXt {key!r} uses an unknown compression method")
        return key, _inflate(rest[1:], max_bytes, path, key).decode("latin-1")
    # iTXt: compression flag, method, language tag\0, translated keyword\0, UTF-8 text
    if len(rest) < 2:
        raise PngMetadataError(f"{path}: malformed iTXt chunk {key!r}")
    flag, method, rest = rest[0], rest[1], rest[2:]
    _lang, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if flag:
        if method != 0:
            raise PngMetadataError(f"{path}: iTXt {key!r} uses an unknown compression method")
        text = _inflate(text, max_bytes, path, key)
    try:
        return key, text.decode("utf-8")
    except UnicodeDecodeError:
        raise PngMetadataError(f"{path}: iTXt {key!r} is not valid UTF-8") from None


def read_png_text(path: str | os.PathLike[str], keys: set[str] | None = None, *,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, str]:
    """Textual metadata of a PNG (all keys, or only ``keys``); first occurrence of a key wins."""
    spath = os.fspath(path)
    out: dict[str, str] = {}
    try:
        fh = open(spath, "rb")  # closed by the "with" below
    except OSError as exc:
        raise PngMetadataError(f"{spath}: cannot open ({exc.strerror or exc})") from None
    with fh:
        if fh.read(8) != PNG_SIGNATURE:
            raise PngMetadataError(f"{spath}: not a PNG file")
        for _ in range(_MAX_CHUNKS):
            length, ctype = struct.unpack(">I4s", _read_exact(fh, 8, spath))
            if length > 0x7FFFFFFF:
                raise PngMetadataError(f"{spath}: invalid chunk length (damaged file)")
            if ctype == b"IEND":
                return out
            if ctype not in _TEXT_TYPES:
                fh.seek(length + 4, os.SEEK_CUR)  # skip data and CRC without reading them
                continue
            if length > max_bytes + 1024:
                # Peek at the keyword to decide whether this oversized chunk matters.
                head = fh.read(min(length, 80))
                key = head.partition(b"\x00")[0].decode("latin-1")
                if keys is None or key in keys:
                    raise PngMetadataError(f"{spath}: text {key!r} is larger than the {max_bytes} byte limit")
                fh.seek(length - len(head) + 4, os.SEEK_CUR)
                continue
            data = _read_exact(fh, length, spath)
            (crc,) = struct.unpack(">I", _read_exact(fh, 4, spath))
            if zlib.crc32(ctype + data) != crc:
                raise PngMetadataError(f"{spath}: {ctype.decode()} chunk is corrupted (CRC mismatch)")
            key = data.partition(b"\x00")[0].decode("latin-1")
            if (keys is not None and key not in keys) or key in out:
                continue
            _, text = _decode_text_chunk(ctype, data, max_bytes, spath)
            if len(text) > max_bytes:
                raise PngMetadataError(f"{spath}: text {key!r} is larger than the {max_bytes} byte limit")
            out[key] = text
        raise PngMetadataError(f"{spath}: too many chunks (damaged or hostile file)")


def read_png_workflow(path: str | os.PathLike[str], *, key: str = WORKFLOW_KEY,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any] | None:
    """The workflow document embedded in a PNG, or ``None`` if it has none.

    Only parses JSON; the caller decides what to do with the document (e.g.
    hand it to :func:`nodegraph.load_workflow_text`, which validates it).
    Raises :class:`PngMetadataError` for non-PNG/damaged files or a workflow
    chunk that is oversized or not a JSON object.
    """
    text = read_png_text(path, {key}, max_bytes=max_bytes).get(key)
    if text is None:
        return None
    try:
        doc = parse_json(text)  # repeated keys refused, as for every workflow read (a ValueError)
    except (ValueError, RecursionError) as exc:
        raise PngMetadataError(f"{os.fspath(path)}: embedded {key!r} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise PngMetadataError(f"{os.fspath(path)}: embedded {key!r} is not a JSON object")
    return doc


__all__ = ["DEFAULT_MAX_BYTES", "PNG_SIGNATURE", "PngMetadataError", "WORKFLOW_KEY", "read_png_text",
           "read_png_workflow"]
