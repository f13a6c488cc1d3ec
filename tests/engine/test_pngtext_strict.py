"""The engine's PNG workflow reader parses the embedded JSON as strictly as workflow files:
a repeated key is refused (one value shown, another run), not silently resolved."""

from __future__ import annotations

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodegraph.pngtext import PngMetadataError, read_png_workflow


def _png(path, text: str):
    info = PngInfo()
    info.add_text("workflow", text)
    Image.new("RGB", (2, 2)).save(path, pnginfo=info)
    return path


def test_repeated_key_in_the_embedded_workflow_is_refused(tmp_path):
    good = _png(tmp_path / "good.png", '{"nodes": {}, "links": []}')
    assert read_png_workflow(good) == {"nodes": {}, "links": []}
    bad = _png(tmp_path / "bad.png", '{"nodes": {}, "links": [], "nodes": {"x": {"type": "t"}}}')
    with pytest.raises(PngMetadataError, match="appears twice"):
        read_png_workflow(bad)
