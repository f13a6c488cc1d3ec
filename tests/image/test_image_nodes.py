"""The image pack run through the engine: load/save round trips, validation of missing
files, and numeric checks of every transform against hand-computed values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nodegraph
import nodes.image
import nodes.primitives
from nodegraph import Graph, WorkflowInvalid
from nodegraph.workflow import to_dict
from nodes.image.png_meta import read_png_workflow
from tests.tolerance import assert_close

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path):
    """(executor, input folder, output folder)."""
    reg = nodegraph.Registry()
    nodes.image.register(reg)
    nodes.primitives.register(reg)
    inp, out = tmp_path / "input", tmp_path / "out"
    inp.mkdir()
    ex = nodegraph.Executor(reg, device="cpu", output_dir=out, settings={"input_dir": str(inp)})
    return ex, inp, out


def write_png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def run_node(ex: nodegraph.Executor, g: Graph, target: str) -> dict:
    report = ex.run(g, outputs=[target])
    report.raise_for_status()
    return report.results[target]


def loaded(g: Graph, path: Path, nid: str = "load") -> str:
    g.add_node("image.load_path", {"path": str(path)}, id=nid)
    return nid


def apply(ex, path: Path, node_type: str, values: dict, output: str = "IMAGE", image_input: str = "image"):
    """Load ``path``, feed it to one node, return that node's ``output``."""
    g = Graph()
    loaded(g, path)
    g.add_node(node_type, values, id="op")
    g.connect("load", "IMAGE", "op", image_input)
    return run_node(ex, g, "op")[output]


# -- save / load ------------------------------------------------------------------------------------


def test_save_roundtrip_pixels_and_workflow(env) -> None:
    ex, inp, out = env
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    src = write_png(inp / "a.png", arr)
    g = Graph()
    loaded(g, src)
    g.add_node("image.save", {"filename_prefix": "sub/pic"}, id="save", title="Sävé 🎨 \"quoted\"")
    g.connect("load", "IMAGE", "save", "images")
    report = ex.run(g)
    report.raise_for_status()
    assert len(report.outputs) == 1
    saved = Path(report.outputs[0])
    assert saved.parent == (out / "sub").resolve() or saved.parent == out / "sub"
    assert saved.name == "pic_00001.png"
    assert report.ui["save"]["images"] == [str(saved)]
    np.testing.assert_array_equal(np.asarray(Image.open(saved)), arr)  # lossless, exact
    doc = read_png_workflow(saved)
    assert doc == to_dict(g)  # the full document, non-ASCII title included
    assert nodegraph.load_workflow_text(json.dumps(doc)).nodes["save"].title == "Sävé 🎨 \"quoted\""

    # Unchanged re-run: cached, no second file.  Deleting the file forces a re-write.
    again = ex.run(g)
    assert again.nodes["save"].status == "cached" and sorted(p.name for p in saved.parent.iterdir()) == [saved.name]
    saved.unlink()
    third = ex.run(g)
    assert third.nodes["save"].status == "executed" and Path(third.outputs[0]).is_file()


def test_save_batch_writes_one_numbered_file_per_image(env) -> None:
    ex, inp, out = env
    a = write_png(inp / "a.png", np.full((2, 3, 3), 10, np.uint8))
    b = write_png(inp / "b.png", np.full((2, 3, 3), 250, np.uint8))
    g = Graph()
    loaded(g, a, "a")
    loaded(g, b, "b")
    g.add_node("image.batch", id="bat")
    g.add_node("image.save", {"filename_prefix": "batch"}, id="save")
    g.connect("a", "IMAGE", "bat", "image1")
    g.connect("b", "IMAGE", "bat", "image2")
    g.connect("bat", "IMAGE", "save", "images")
    report = ex.run(g)
    report.raise_for_status()
    assert [Path(p).name for p in report.outputs] == ["batch_00001.png", "batch_00002.png"]
    assert [int(np.asarray(Image.open(p)).max()) for p in report.outputs] == [10, 250]
    assert all(read_png_workflow(p) == to_dict(g) for p in report.outputs)


def test_save_without_workflow(env) -> None:
    ex, inp, _ = env
    src = write_png(inp / "a.png", np.zeros((2, 2, 3), np.uint8))
    g = Graph()
    loaded(g, src)
    g.add_node("image.save", {"filename_prefix": "x", "embed_workflow": False}, id="save")
    g.connect("load", "IMAGE", "save", "images")
    report = ex.run(g)
    report.raise_for_status()
    assert read_png_workflow(report.outputs[0]) is None


@pytest.mark.parametrize("prefix", ["../evil", "a/../../evil", "/tmp/abs_evil", "C:/evil"])
def test_save_rejects_prefix_outside_output(env, prefix: str, tmp_path: Path) -> None:
    ex, inp, out = env
    src = write_png(inp / "a.png", np.zeros((2, 2, 3), np.uint8))
    g = Graph()
    loaded(g, src)
    g.add_node("image.save", {"filename_prefix": prefix}, id="save")
    g.connect("load", "IMAGE", "save", "images")
    with pytest.raises(WorkflowInvalid) as info:  # refused by validation, before anything runs
        ex.run(g)
    assert [(i.node_id, i.input) for i in info.value.issues] == [("save", "filename_prefix")]
    assert not list(tmp_path.rglob("*evil*"))


def test_preview_writes_to_preview_folder_not_outputs(env) -> None:
    ex, inp, out = env
    src = write_png(inp / "a.png", np.full((3, 3, 3), 200, np.uint8))
    g = Graph()
    loaded(g, src)
    g.add_node("image.preview", id="prev")
    g.connect("load", "IMAGE", "prev", "images")
    report = ex.run(g)
    report.raise_for_status()
    assert report.outputs == []
    (path,) = report.ui["prev"]["images"]
    assert Path(path).parent.name == "_preview" and Path(path).parent.parent.resolve() == out.resolve()
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.full((3, 3, 3), 200, np.uint8))


def test_load_from_input_folder_with_alpha_gives_mask(env) -> None:
    ex, inp, _ = env
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgba[..., 3] = np.array([[0, 51, 102, 255]] * 3, np.uint8)
    (inp / "sub").mkdir()
    write_png(inp / "sub" / "rgba.png", rgba)
    write_png(inp / "b.png", np.zeros((1, 1, 3), np.uint8))
    (inp / "notes.txt").write_text("not an image")
    spec = ex.registry["image.load"]
    assert spec.input("image").choice_list(ex.settings) == ["b.png", "sub/rgba.png"]

    g = Graph()
    g.add_node("image.load", {"image": "sub/rgba.png"}, id="load")
    res = run_node(ex, g, "load")
    image, mask = res["IMAGE"], res["MASK"]
    assert image.shape == (1, 3, 4, 3) and image.dtype == torch.float32
    assert mask.shape == (1, 3, 4)
    assert_close(image[0].numpy(), rgba[..., :3] / 255.0)
    assert_close(mask[0].numpy(), 1.0 - rgba[..., 3] / 255.0)  # transparent -> 1


def test_load_image_as_mask_reads_alpha_or_a_colour_channel(env) -> None:
    """ComfyUI's LoadImageMask: channel alpha gives 1 - alpha (an opaque picture: all 0), a colour
    channel its brightness."""
    ex, inp, _ = env
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    write_png(inp / "m.png", rgba)
    write_png(inp / "opaque.png", rgba[..., :3].copy())
    for image, channel, expected in (("m.png", "alpha", 1.0 - rgba[..., 3] / 255.0),
                                     ("m.png", "green", rgba[..., 1] / 255.0),
                                     ("opaque.png", "alpha", np.zeros((5, 6)))):
        g = Graph()
        g.add_node("image.load_mask", {"image": image, "channel": channel}, id="m")
        mask = run_node(ex, g, "m")["MASK"]
        assert mask.shape == (1, 5, 6) and mask.dtype == torch.float32
        assert_close(mask[0].numpy(), expected)


def test_opaque_image_has_zero_mask_and_exif_rotation_applied(env) -> None:
    ex, inp, _ = env
    arr = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: display rotated 90 degrees clockwise
    Image.fromarray(arr).save(inp / "rot.png", exif=exif)
    g = Graph()
    g.add_node("image.load", {"image": "rot.png"}, id="load")
    res = run_node(ex, g, "load")
    expected = np.rot90(arr, k=-1)  # clockwise
    assert res["IMAGE"].shape == (1, 4, 2, 3)
    assert_close(res["IMAGE"][0].numpy(), expected / 255.0)
    assert torch.count_nonzero(res["MASK"]) == 0 and res["MASK"].shape == (1, 4, 2)


def test_animated_gif_is_a_batch_and_16_bit_png_keeps_precision(env) -> None:
    ex, inp, _ = env
    frames = [Image.new("RGB", (4, 3), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(inp / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    g = Graph()
    g.add_node("image.load", {"image": "anim.gif"}, id="load")
    res = run_node(ex, g, "load")
    assert res["IMAGE"].shape == (2, 3, 4, 3) and res["MASK"].shape == (2, 3, 4)
    assert_close(res["IMAGE"][:, 0, 0].numpy(), [[1, 0, 0], [0, 0, 1]])

    deep = np.array([[0, 257, 65535], [1000, 40000, 12345]], np.uint16)
    Image.fromarray(deep).save(inp / "deep.png")
    g = Graph()
    g.add_node("image.load", {"image": "deep.png"}, id="load")
    image = run_node(ex, g, "load")["IMAGE"]
    assert image.shape == (1, 2, 3, 3)
    assert_close(image[0, ..., 1].numpy(), deep / 65535.0)  # not cut to 8 bits


def test_missing_file_is_a_validation_error_naming_the_input(env) -> None:
    ex, inp, _ = env
    g = Graph()
    g.add_node("image.load_path", {"path": "does/not/exist.png"}, id="lp")
    g.add_node("image.preview", id="prev")
    g.connect("lp", "IMAGE", "prev", "images")
    with pytest.raises(WorkflowInvalid) as info:
        ex.run(g)
    (issue,) = info.value.issues
    assert (issue.node_id, issue.input) == ("lp", "path") and "not found" in issue.message
    assert ex.cache.nbytes == 0  # nothing ran

    g2 = Graph()
    g2.add_node("image.load", {"image": "gone.png"}, id="l")
    with pytest.raises(WorkflowInvalid) as info2:
        ex.run(g2, outputs=["l"])
    assert [(i.node_id, i.input) for i in info2.value.issues] == [("l", "image")]


def test_file_change_reruns_and_damaged_file_blames_input(env) -> None:
    ex, inp, _ = env
    p = write_png(inp / "c.png", np.zeros((2, 2, 3), np.uint8))
    g = Graph()
    loaded(g, p)
    assert run_node(ex, g, "load")["IMAGE"].max() == 0
    write_png(p, np.full((2, 2, 3), 255, np.uint8))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    report = ex.run(g, outputs=["load"])
    assert report.nodes["load"].status == "executed" and report.results["load"]["IMAGE"].min() == 1.0

    p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    report = ex.run(g, outputs=["load"])
    assert report.status == "error" and report.error.input == "path"


# -- transforms --------------------------------------------------------------------------------------


def test_scale_methods_against_hand_computed(env) -> None:
    ex, inp, _ = env
    two = write_png(inp / "two.png", np.array([[[0, 0, 0], [200, 100, 40]]], np.uint8))  # 1x2
    a, b = np.zeros(3), np.array([200, 100, 40]) / 255.0
    # bilinear (half-pixel centres): samples at x = -0.25, 0.25, 0.75, 1.25 -> a, .75a+.25b, .25a+.75b, b
    out = apply(ex, two, "image.scale", {"method": "bilinear", "width": 4, "height": 1})
    expected = np.stack([a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b])[None]
    assert_close(out[0].numpy(), expected, reduction=4)  # 2x2 bilinear taps
    out = apply(ex, two, "image.scale", {"method": "nearest", "width": 4, "height": 2})
    assert_close(out[0].numpy(), np.stack([a, a, b, b])[None].repeat(2, 0))

    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    p = write_png(inp / "blocks.png", blocks)
    out = apply(ex, p, "image.scale", {"method": "area", "width": 2, "height": 2})
    expected = blocks.reshape(2, 2, 2, 2, 3).mean(axis=(1, 3)) / 255.0
    assert_close(out[0].numpy(), expected, reduction=4)  # mean of 2x2 pixels
    # width 0 follows the aspect ratio
    out = apply(ex, two, "image.scale", {"method": "lanczos", "width": 0, "height": 3})
    assert out.shape == (1, 3, 6, 3) and 0.0 <= out.min() and out.max() <= 1.0
    # center crop: 4 wide x 2 high to 2x2 keeps the middle columns 1..2
    wide = rng.integers(0, 256, (2, 4, 3), dtype=np.uint8)
    p = write_png(inp / "wide.png", wide)
    out = apply(ex, p, "image.scale", {"method": "nearest", "width": 2, "height": 2, "crop": "center"})
    assert_close(out[0].numpy(), wide[:, 1:3] / 255.0)
    out = apply(ex, p, "image.scale_by", {"method": "nearest", "factor": 2.0})
    assert_close(out[0].numpy(), wide.repeat(2, 0).repeat(2, 1) / 255.0)


def test_crop(env) -> None:
    ex, inp, _ = env
    arr = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    p = write_png(inp / "c.png", arr)
    out = apply(ex, p, "image.crop", {"x": 1, "y": 2, "width": 3, "height": 2})
    assert_close(out[0].numpy(), arr[2:4, 1:4] / 255.0)
    out = apply(ex, p, "image.crop", {"x": 4, "y": 3, "width": 10, "height": 10})  # clipped at the border
    assert_close(out[0].numpy(), arr[3:, 4:] / 255.0)
    g = Graph()
    loaded(g, p)
    g.add_node("image.crop", {"x": 6, "y": 0}, id="op")
    g.connect("load", "IMAGE", "op", "image")
    report = ex.run(g, outputs=["op"])
    assert report.status == "error" and report.error.input == "x"


def test_pad_for_outpaint_mask_and_fill(env) -> None:
    ex, inp, _ = env
    arr = np.random.default_rng(3).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    p = write_png(inp / "p.png", arr)
    g = Graph()
    loaded(g, p)
    g.add_node("image.pad_for_outpaint", {"left": 2, "top": 0, "right": 0, "bottom": 1, "feathering": 2}, id="op")
    g.connect("load", "IMAGE", "op", "image")
    res = run_node(ex, g, "op")
    image, mask = res["IMAGE"][0].numpy(), res["MASK"][0].numpy()
    assert image.shape == (4, 6, 3) and mask.shape == (4, 6)
    assert_close(image[:3, 2:], arr / 255.0)
    assert np.all(image[:, :2] == 0.5) and np.all(image[3] == 0.5)
    # Padded area 1; inside, ((F - d) / F)^2 with d = distance to the nearest padded side (left, bottom).
    expected = np.array([
        [1, 1, 1.00, 0.25, 0.00, 0.00],
        [1, 1, 1.00, 0.25, 0.25, 0.25],
        [1, 1, 1.00, 1.00, 1.00, 1.00],
        [1, 1, 1.00, 1.00, 1.00, 1.00],
    ])
    assert_close(mask, expected)


def test_composite_with_clipping_and_mask(env) -> None:
    ex, inp, _ = env
    dst = np.zeros((4, 4, 3), np.uint8)
    src = np.zeros((2, 2, 3), np.uint8)
    src[..., 0] = [[255, 102], [51, 0]]  # red channel doubles as the mask
    src[..., 1] = 200
    dp, sp = write_png(inp / "d.png", dst), write_png(inp / "s.png", src)

    def composite(x: int, y: int, masked: bool) -> np.ndarray:
        g = Graph()
        loaded(g, dp, "d")
        loaded(g, sp, "s")
        g.add_node("image.composite", {"x": x, "y": y}, id="op")
        g.connect("d", "IMAGE", "op", "destination")
        g.connect("s", "IMAGE", "op", "source")
        if masked:
            g.add_node("image.to_mask", {"channel": "red"}, id="m")
            g.connect("s", "IMAGE", "m", "image")
            g.connect("m", "MASK", "op", "mask")
        return run_node(ex, g, "op")["IMAGE"][0].numpy()

    out = composite(3, -1, False)  # only source pixel (1, 0) lands, at destination (0, 3)
    expected = np.zeros((4, 4, 3))
    expected[0, 3] = src[1, 0] / 255.0
    assert_close(out, expected)

    out = composite(1, 1, True)
    m = src[..., 0:1] / 255.0
    expected = np.zeros((4, 4, 3))
    expected[1:3, 1:3] = src / 255.0 * m  # destination is black, so (1 - m) * dst = 0
    assert_close(out, expected, reduction=2)  # m * src + (1 - m) * dst


def test_invert_masks_and_batch(env) -> None:
    ex, inp, _ = env
    arr = np.random.default_rng(4).integers(0, 256, (3, 3, 3), dtype=np.uint8)
    p = write_png(inp / "i.png", arr)
    assert_close(apply(ex, p, "image.invert", {})[0].numpy(), 1 - arr / 255.0, reduction=2)

    g = Graph()
    loaded(g, p)
    g.add_node("image.to_mask", {"channel": "green"}, id="m")
    g.add_node("image.invert_mask", id="inv")
    g.add_node("image.mask_to_image", id="img")
    g.connect("load", "IMAGE", "m", "image")
    g.connect("m", "MASK", "inv", "mask")
    g.connect("inv", "MASK", "img", "mask")
    out = run_node(ex, g, "img")["IMAGE"][0].numpy()
    assert_close(out, np.repeat(1 - arr[..., 1:2] / 255.0, 3, axis=-1), reduction=2)

    small = write_png(inp / "small.png", np.full((1, 1, 3), 80, np.uint8))
    g = Graph()
    loaded(g, p, "a")
    loaded(g, small, "b")
    g.add_node("image.batch", id="bat")
    g.connect("a", "IMAGE", "bat", "image1")
    g.connect("b", "IMAGE", "bat", "image2")
    out = run_node(ex, g, "bat")["IMAGE"]
    assert out.shape == (2, 3, 3, 3)
    assert_close(out[1].numpy(), np.full((3, 3, 3), 80 / 255.0), reduction=4)  # resized to match: 2x2 taps


def _mask_graph(p: Path, op: str, values: dict) -> Graph:
    g = Graph()
    loaded(g, p)
    g.add_node("image.to_mask", {"channel": "red"}, id="m")
    g.add_node(op, values, id="op")
    g.connect("load", "IMAGE", "m", "image")
    g.connect("m", "MASK", "op", "mask")
    return g


def test_grow_and_blur_mask(env) -> None:
    ex, inp, _ = env
    dot = np.zeros((7, 7, 3), np.uint8)
    dot[3, 3] = 255
    p = write_png(inp / "dot.png", dot)
    cross = run_node(ex, _mask_graph(p, "image.grow_mask", {"expand": 1, "tapered_corners": True}), "op")["MASK"]
    expected = np.zeros((7, 7))
    expected[2:5, 3] = expected[3, 2:5] = 1
    np.testing.assert_array_equal(cross[0].numpy(), expected)
    square = run_node(ex, _mask_graph(p, "image.grow_mask", {"expand": 2, "tapered_corners": False}), "op")["MASK"]
    expected = np.zeros((7, 7))
    expected[1:6, 1:6] = 1
    np.testing.assert_array_equal(square[0].numpy(), expected)

    block = np.zeros((7, 7, 3), np.uint8)
    block[2:5, 2:5] = 255
    pb = write_png(inp / "block.png", block)
    shrunk = run_node(ex, _mask_graph(pb, "image.grow_mask", {"expand": -1, "tapered_corners": False}), "op")
    expected = np.zeros((7, 7))
    expected[3, 3] = 1
    np.testing.assert_array_equal(shrunk["MASK"][0].numpy(), expected)

    big = np.zeros((11, 11, 3), np.uint8)
    big[5, 5] = 255  # far enough from the border that edge reflection does not reach the response
    pd = write_png(inp / "bigdot.png", big)
    blurred = run_node(ex, _mask_graph(pd, "image.blur_mask", {"sigma": 1.0}), "op")["MASK"][0].numpy()
    xs = np.arange(-3, 4)
    k = np.exp(-0.5 * xs**2)
    k /= k.sum()  # Gaussian truncated at 3 sigma, normalised: the impulse response is its outer product
    expected = np.zeros((11, 11))
    expected[2:9, 2:9] = np.outer(k, k)
    assert_close(blurred, expected, reduction=7 * 7)  # a 7x7 kernel
    flat = np.full((4, 5, 3), 153, np.uint8)  # a constant mask stays constant (no darkened border)
    pf = write_png(inp / "flat.png", flat)
    out = run_node(ex, _mask_graph(pf, "image.blur_mask", {"sigma": 3.0}), "op")["MASK"][0].numpy()
    assert_close(out, np.full((4, 5), 0.6), reduction=7 * 7)


def test_canny_finds_the_square_border(env) -> None:
    ex, inp, _ = env
    img = np.zeros((32, 32, 3), np.uint8)
    img[8:24, 8:24] = 255
    p = write_png(inp / "sq.png", img)
    edges = apply(ex, p, "image.canny", {"low_threshold": 50, "high_threshold": 150})
    assert edges.shape == (1, 32, 32, 3)
    e = edges[0].numpy()
    assert np.all(e[..., 0] == e[..., 1]) and np.all(e[..., 1] == e[..., 2])
    assert set(np.unique(e)) <= {0.0, 1.0}
    on = e[..., 0] > 0
    ys, xs = np.nonzero(on)
    # every edge pixel lies within one pixel of the square's outline ...
    near_outline = (np.minimum.reduce([np.abs(ys - 7.5), np.abs(ys - 23.5), np.abs(xs - 7.5), np.abs(xs - 23.5)])
                    <= 1.0) & (ys >= 6) & (ys <= 25) & (xs >= 6) & (xs <= 25)
    assert near_outline.all()
    # ... and each of the four sides is found along most of its length
    for side in (on[7:9, 8:24].any(0), on[23:25, 8:24].any(0), on[8:24, 7:9].any(1), on[8:24, 23:25].any(1)):
        assert side.mean() >= 0.8
    assert not on[12:20, 12:20].any() and not on[:4].any()


def test_catalogue_and_validation_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, nodegraph, nodes.image, nodes.upscale\n"
        "from nodegraph import Graph\n"
        "r = nodegraph.Registry(); nodes.image.register(r); nodes.upscale.register(r)\n"
        f"s = {{'input_dir': {str(tmp_path)!r}}}\n"
        "r.catalogue(s)\n"
        "g = Graph(); g.add_node('image.load_path', {'path': __file__ if False else 'x.png'}, id='a')\n"
        "g.add_node('image.preview', id='p'); g.connect('a', 'IMAGE', 'p', 'images')\n"
        "print(len(nodegraph.validate(g, r, settings=s)))\n"
        "bad = [m for m in ('torch', 'numpy', 'PIL', 'cv2', 'spandrel') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "1"  # the missing file, found without importing torch


def test_scale_to_total_pixels_keeps_aspect_and_hits_the_pixel_count(env) -> None:
    ex, inp, _ = env
    rng = np.random.default_rng(3)
    p = write_png(inp / "wide.png", rng.integers(0, 256, (30, 60, 3), dtype=np.uint8))  # 60x30, aspect 2
    # 0.01 MP = int(0.01 * 1048576) = 10485 px -> factor sqrt(10485 / 1800) = 2.4135 -> 145x72
    out = apply(ex, p, "image.scale_to_total_pixels", {"method": "bilinear", "megapixels": 0.01})
    assert out.shape == (1, 72, 145, 3)
    out = apply(ex, p, "image.scale_to_total_pixels", {"method": "nearest", "megapixels": 0.01,
                                                       "resolution_steps": 16})
    assert out.shape == (1, 80, 144, 3)  # 72.4 -> 5 x 16, 144.8 -> 9 x 16
    strip = write_png(inp / "strip.png", rng.integers(0, 256, (1, 60, 3), dtype=np.uint8))  # 16 MP: 31,727 wide
    g = Graph()
    loaded(g, strip)
    g.add_node("image.scale_to_total_pixels", {"megapixels": 16.0}, id="op")
    g.connect("load", "IMAGE", "op", "image")
    report = ex.run(g, outputs=["op"])
    assert report.error is not None and report.error.input == "megapixels"
    assert "fewer megapixels" in report.error.message
