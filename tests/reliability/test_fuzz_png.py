"""Fuzzing PNG metadata reading: mutated and truncated PNGs (with embedded
workflows) only ever give a result or PngMetadataError — no other exception,
no hang, no pixel decoding."""

from __future__ import annotations

import io
import json
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodes.image.png_meta import PngMetadataError, read_png_text, read_png_workflow
from tests.reliability.fuzz_budget import examples


def _png(text: dict[str, str], compressed: bool = False) -> bytes:
    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v, zip=compressed)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


BASE = _png({"workflow": json.dumps({"format": "nodegraph.workflow", "version": 1, "nodes": {}, "links": []})})
BASE_Z = _png({"workflow": json.dumps({"nodes": {"1": {"type": "x"}}}), "prompt": "{}"}, compressed=True)


def _read(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("png") / "f.png"
    path.write_bytes(data)
    try:
        wf = read_png_workflow(path)
        assert wf is None or isinstance(wf, dict)
        assert isinstance(read_png_text(path), dict)
    except PngMetadataError:
        pass


@settings(max_examples=examples(300), deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([BASE, BASE_Z]), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.integers(0, 10**6))
def test_mutated_pngs(tmp_path_factory, base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, value in flips:
        data[pos % len(data)] = value
    _read(tmp_path_factory, bytes(data[: max(8, cut % (len(data) + 1))]))


@settings(max_examples=examples(200), deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.text(max_size=50), st.booleans())
def test_forged_text_chunks(tmp_path_factory, payload: bytes, keyword: str, compress: bool) -> None:
    """Hand-built tEXt/zTXt chunks with valid CRCs but arbitrary contents."""
    ctype = b"zTXt" if compress else b"tEXt"
    body = keyword.encode("latin-1", "replace")[:79] + b"\x00" + (b"\x00" + zlib.compress(payload) if compress
                                                                    else payload)
    chunk = len(body).to_bytes(4, "big") + ctype + body + zlib.crc32(ctype + body).to_bytes(4, "big")
    data = BASE[:33] + chunk + BASE[33:]  # after the IHDR chunk
    _read(tmp_path_factory, data)
