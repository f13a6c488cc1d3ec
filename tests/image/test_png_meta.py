"""read_png_workflow: every text chunk flavour, and hostile/damaged files rejected clearly."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodes.image.files import encode_png, workflow_text
from nodes.image.png_meta import PngMetadataError, read_png_text, read_png_workflow

DOC = {"format": "nodegraph", "version": 1, "nodes": {"1": {"type": "image.save", "title": "Ünï 🎨"}}}


def png_with(path: Path, info: PngInfo | None) -> Path:
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path, pnginfo=info)
    return path


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def test_encode_png_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    p.write_bytes(encode_png(np.zeros((2, 3, 3), np.uint8), {"workflow": workflow_text(DOC)}))
    assert read_png_workflow(p) == DOC
    assert workflow_text(DOC).isascii()  # fits tEXt's Latin-1 no matter what the workflow holds


@pytest.mark.parametrize("zip_", [False, True])
def test_text_ztxt_and_itxt(tmp_path: Path, zip_: bool) -> None:
    info = PngInfo()
    info.add_text("workflow", json.dumps(DOC, ensure_ascii=True), zip=zip_)  # tEXt / zTXt
    assert read_png_workflow(png_with(tmp_path / "a.png", info)) == DOC
    info = PngInfo()
    info.add_itxt("workflow", json.dumps(DOC, ensure_ascii=False), zip=zip_)  # UTF-8 iTXt
    assert read_png_workflow(png_with(tmp_path / "b.png", info)) == DOC


def test_no_workflow_and_other_keys(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("parameters", "a cat")
    p = png_with(tmp_path / "a.png", info)
    assert read_png_workflow(p) is None
    assert read_png_text(p) == {"parameters": "a cat"}


def test_rejects_bad_files(tmp_path: Path) -> None:
    not_png = tmp_path / "x.png"
    not_png.write_bytes(b"GIF89a....")
    with pytest.raises(PngMetadataError, match="not a PNG"):
        read_png_workflow(not_png)
    with pytest.raises(PngMetadataError, match="cannot open"):
        read_png_workflow(tmp_path / "missing.png")

    info = PngInfo()
    info.add_text("workflow", "[1, 2, 3]")
    with pytest.raises(PngMetadataError, match="not a JSON object"):
        read_png_workflow(png_with(tmp_path / "list.png", info))
    info = PngInfo()
    info.add_text("workflow", "{not json")
    with pytest.raises(PngMetadataError, match="not valid JSON"):
        read_png_workflow(png_with(tmp_path / "bad.png", info))

    good = tmp_path / "good.png"
    good.write_bytes(encode_png(np.zeros((2, 2, 3), np.uint8), {"workflow": workflow_text(DOC)}))
    data = bytearray(good.read_bytes())
    i = data.index(b"workflow")
    data[i + 20] ^= 0xFF  # flip a byte inside the text: CRC no longer matches
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(PngMetadataError, match="CRC"):
        read_png_workflow(corrupt)
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good.read_bytes()[: i + 10])
    with pytest.raises(PngMetadataError, match="truncated"):
        read_png_workflow(truncated)


def test_size_limits_including_zip_bombs(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("workflow", json.dumps({"pad": "x" * 5000}))
    p = png_with(tmp_path / "big.png", info)
    assert read_png_workflow(p, max_bytes=10_000) is not None
    with pytest.raises(PngMetadataError, match="larger than"):
        read_png_workflow(p, max_bytes=1000)

    # 8 MB of JSON compressed into ~8 KB: refused after inflating only up to the limit.
    bomb = b"workflow\x00\x00" + zlib.compress(b'{"a":"' + b"x" * 8_000_000 + b'"}', 9)
    raw = png_with(tmp_path / "plain.png", None).read_bytes()
    iend = raw.rindex(b"IEND") - 4
    p = tmp_path / "bomb.png"
    p.write_bytes(raw[:iend] + chunk(b"zTXt", bomb) + raw[iend:])
    with pytest.raises(PngMetadataError, match="larger than"):
        read_png_workflow(p, max_bytes=1_000_000)
