"""Computation bombs are refused by validation (preflight estimates), naming node, input and fix."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from nodegraph import Graph, Registry, validate
from tests.comfy.helpers import full_registry

NO_MODELS = {"include_demo_models": False}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return full_registry()


def _too_large(issues: list) -> list:
    return [i for i in issues if i.kind in ("too_large", "bad_value")]


def test_doubling_text_chain_is_refused(registry: Registry) -> None:
    g = Graph()
    g.add_node("primitives.string", {"value": "ab"}, id="s0")
    for k in range(1, 41):
        g.add_node("primitives.concat", {"separator": ""}, id=f"s{k}")
        g.connect(f"s{k - 1}", "STRING", f"s{k}", "a")
        g.connect(f"s{k - 1}", "STRING", f"s{k}", "b")
    g.add_node("primitives.show", {}, id="show")
    g.connect("s40", "STRING", "show", "value")
    [issue] = validate(g, registry)
    assert issue.kind == "too_large" and issue.node_type == "primitives.concat" and issue.input == "a"
    assert "chain" in issue.fix
    # The estimate is exact for text: it is refused where it first passes the limit, not before.
    small = validate(g, registry, settings={"max_result_bytes": 2 * 2**20})
    assert small[0].node_id == "s21"  # 2 bytes doubled 20 times is exactly 2 MiB; the 21st passes it
    assert validate(g, registry, settings={"max_result_bytes": 2**42}) == []


def test_squaring_integer_chain_is_refused(registry: Registry) -> None:
    g = Graph()
    g.add_node("primitives.int", {"value": 3}, id="i0")
    for k in range(1, 31):
        g.add_node("primitives.int_math", {"op": "multiply"}, id=f"i{k}")
        g.connect(f"i{k - 1}", "INT", f"i{k}", "a")
        g.connect(f"i{k - 1}", "INT", f"i{k}", "b")
    g.add_node("primitives.show", {}, id="show")
    g.connect("i30", "INT", "show", "value")
    issues = _too_large(validate(g, registry))
    assert [i.node_id for i in issues] == ["i19"]  # 2 bits * 2**19 passes a million bits
    assert issues[0].input == "b" and "bits" in issues[0].message


def test_small_integer_math_stays_valid_and_exact(registry: Registry) -> None:
    g = Graph()
    g.add_node("primitives.int", {"value": 7}, id="a")
    g.add_node("primitives.int_math", {"op": "power", "b": 5}, id="p")
    g.connect("a", "INT", "p", "a")
    g.add_node("primitives.show", {}, id="show")
    g.connect("p", "INT", "show", "value")
    assert validate(g, registry) == []


def _latent_chain(scales: list[float], *, tiled: bool = False, size: int = 512, batch: int = 1) -> Graph:
    g = Graph()
    g.add_node("diffusion.checkpoint_loader", {}, id="ckpt")
    g.add_node("diffusion.empty_latent", {"width": size, "height": size, "batch_size": batch}, id="latent")
    prev = "latent"
    for k, s in enumerate(scales):
        g.add_node("diffusion.latent_upscale_by", {"scale_by": s}, id=f"up{k}")
        g.connect(prev, "LATENT", f"up{k}", "samples")
        prev = f"up{k}"
    g.add_node("diffusion.vae_decode_tiled" if tiled else "diffusion.vae_decode", {}, id="decode")
    g.connect(prev, "LATENT", "decode", "samples")
    g.connect("ckpt", "VAE", "decode", "vae")
    g.add_node("image.save", {}, id="save")
    g.connect("decode", "IMAGE", "save", "images")
    return g


def _size_issues(g: Graph, registry: Registry, **settings: object) -> list:
    return [i for i in validate(g, registry, settings={**NO_MODELS, **settings}) if i.kind == "too_large"]


def test_chained_latent_upscales_are_refused_at_the_upscale_that_cannot_fit(registry: Registry) -> None:
    [issue] = _size_issues(_latent_chain([8, 8, 8]), registry)
    assert issue.node_type == "diffusion.latent_upscale_by" and issue.input == "scale_by"
    assert "scale_by" in issue.fix


def test_decode_of_an_upscaled_latent_is_refused_and_tiling_is_suggested(registry: Registry) -> None:
    limit = {"max_result_bytes": 2**30}  # 1 GiB: a 1024x1024 plain decode needs ~1.5 GiB of activations
    [issue] = _size_issues(_latent_chain([2]), registry, **limit)
    assert issue.node_id == "decode" and "Tiled" in issue.fix
    assert _size_issues(_latent_chain([2], tiled=True), registry, **limit) == []
    assert _size_issues(_latent_chain([]), registry, **limit) == []  # 512x512 fits


def test_the_largest_valid_empty_latent_is_refused(registry: Registry) -> None:
    [issue] = _size_issues(_latent_chain([], size=16384, batch=4096), registry)
    assert issue.node_id == "latent" and issue.input == "batch_size"
    assert "TiB" in issue.message


def _gif(path: Path, frames: int, size: int) -> Path:
    from PIL import Image

    images = [Image.new("P", (size, size), k % 2) for k in range(frames)]
    for im in images:
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    images[0].save(path, save_all=True, append_images=images[1:], duration=10, loop=0)
    return path


def _forged_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` (what a decompression bomb looks like)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _load_graph(path: Path) -> Graph:
    g = Graph()
    g.add_node("image.load_path", {"path": str(path)}, id="load")
    g.add_node("image.save", {}, id="save")
    g.connect("load", "IMAGE", "save", "images")
    return g


def test_animated_gif_frames_times_pixels_are_capped_before_decoding(registry: Registry, tmp_path: Path) -> None:
    from nodes.image.files import ImageFileError, load_image_file

    bomb = _gif(tmp_path / "bomb.gif", 9, 4096)  # 9 x 4096^2 > 2**27 pixels; the file is a few KB
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ImageFileError, match="9 frames of 4096x4096"):
        load_image_file(bomb)
    [issue] = validate(_load_graph(bomb), registry, settings=NO_MODELS)
    assert (issue.node_id, issue.input) == ("load", "path") and "fewer frames" in issue.fix
    fine = _gif(tmp_path / "fine.gif", 3, 64)
    assert validate(_load_graph(fine), registry, settings=NO_MODELS) == []
    assert tuple(load_image_file(fine)[0].shape) == (3, 64, 64, 3)


def test_png_decompression_bomb_is_refused_from_its_header(registry: Registry, tmp_path: Path) -> None:
    from nodes.image.files import ImageFileError, load_image_file

    bomb = _forged_png(tmp_path / "bomb.png", 12000, 12000)  # 144 Mpx: under Pillow's limit, over ours
    with pytest.raises(ImageFileError, match="12000x12000"):
        load_image_file(bomb)
    [issue] = validate(_load_graph(bomb), registry, settings=NO_MODELS)
    assert issue.input == "path" and "GiB" in issue.message
