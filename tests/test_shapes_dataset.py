"""The procedural shapes dataset and its automatic checker.

Accuracy thresholds are the ones the demo-model tests rely on; the measured
values at the time of writing are noted next to each (seeds are fixed, so
they only move if the generator or checker changes).
"""

from __future__ import annotations

import io
import itertools
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from training.captions import POSITIONS, TEMPLATES, caption_for, parse_caption, position_category
from training.checker import check, compare
from training.geometry import SHAPES, radial_extent, unit_area
from training.palette import COLOR_NAMES, PALETTE, nearest_color_labels
from training.shapes import batch_sample_seed, generate, generate_batch


def _degrade(image: np.ndarray, rng: np.random.Generator, sigma: float = 1.5) -> np.ndarray:
    """Blur, add noise, then JPEG-compress (with 4:2:0 chroma subsampling) at quality 40."""
    f = cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma)
    f = f + rng.normal(0.0, 8.0, f.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(f), 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=40)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _down_up(image: np.ndarray) -> np.ndarray:
    s = image.shape[0]
    small = cv2.resize(image, (s // 2, s // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (s, s), interpolation=cv2.INTER_CUBIC)


def _accuracy(images, attrs) -> dict[str, float]:
    results = [compare(check(img), a) for img, a in zip(images, attrs, strict=True)]
    return {k: float(np.mean([r[k] for r in results])) for k in results[0]}


# --- generator -----------------------------------------------------------------------------------


def test_same_seed_same_sample_and_different_seeds_differ() -> None:
    a, b = generate(123), generate(123)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.edges, b.edges)
    assert a.caption == b.caption and a.attrs == b.attrs
    images = [generate(s).image.tobytes() for s in range(40)]
    assert len(set(images)) == 40


def test_batch_is_stack_of_per_sample_seeds() -> None:
    batch = generate_batch(5, 6, size=32)
    assert batch.images.shape == (6, 32, 32, 3) and batch.images.dtype == np.uint8
    assert batch.masks.shape == batch.edges.shape == (6, 32, 32)
    for i in range(6):
        s = generate(batch_sample_seed(5, i), size=32)
        assert np.array_equal(batch.images[i], s.image) and batch.captions[i] == s.caption
    # Neighbouring batch seeds must not share samples (train/validation splits).
    other = generate_batch(6, 6, size=32)
    assert not {im.tobytes() for im in batch.images} & {im.tobytes() for im in other.images}


@pytest.mark.parametrize("size", [64, 32])
def test_samples_are_consistent_with_their_attrs(size: int) -> None:
    batch = generate_batch(11, 200, size)
    assert {a["shape"] for a in batch.attrs} == set(SHAPES)
    assert {a["color"] for a in batch.attrs} == set(COLOR_NAMES)
    for img, mask, a in zip(batch.images, batch.masks, batch.attrs, strict=True):
        assert a["color"] != a["background"]
        # Shape fully visible: nothing on the outermost pixel ring.
        assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0
        # Pixels off / on the object are exactly the palette colours.
        assert np.all(img[mask == 0] == PALETTE[a["background"]])
        assert np.all(img[mask == 255] == PALETTE[a["color"]])
        # Rendered area matches the exact geometry (pixel quantisation: ~3 % at 64 px, ~6 % at 32 px).
        exact = unit_area(a["shape"]) * a["radius_px"] ** 2 / size**2
        assert a["area_frac"] == pytest.approx(exact, rel=2.0 / size)
        assert a["position"] == position_category(a["cx"], a["cy"])


@pytest.mark.parametrize("rows, cols", [(64, 32), (32, 64)])
def test_non_square_canvases(rows: int, cols: int) -> None:
    """``generate(seed, rows, cols)``: the object fits the canvas, sized by its shorter side, and its
    position word names the 3x3 cell of that canvas; ``width=size`` is the square sample."""
    batch = generate_batch(12, 200, rows, cols)
    assert batch.images.shape == (200, rows, cols, 3) and batch.masks.shape == batch.edges.shape == (200, rows, cols)
    short = min(rows, cols)
    assert {a["position"] for a in batch.attrs} == set(POSITIONS)
    for img, mask, a in zip(batch.images, batch.masks, batch.attrs, strict=True):
        # Inside the canvas: the geometry keeps a 1 px margin; the 4x supersampled fill may bleed a
        # supersampled column into the border ring, never half a pixel.
        assert max(mask[0].max(), mask[-1].max(), mask[:, 0].max(), mask[:, -1].max()) < 128
        assert np.all(img[mask == 0] == PALETTE[a["background"]])
        assert np.all(img[mask == 255] == PALETTE[a["color"]])
        exact_px = unit_area(a["shape"]) * a["radius_px"] ** 2
        assert a["area_frac"] * rows * cols == pytest.approx(exact_px, rel=2.0 / short)
        eq_radius = math.sqrt(exact_px / math.pi) / short  # the drawn size, relative to the shorter side
        assert max(0.10, 4.5 / short) * (1 - 1e-9) <= eq_radius <= 0.28 * (1 + 1e-9)
        assert a["position"] == position_category(a["cx"], a["cy"])
        ys, xs = np.nonzero(mask)
        assert a["cx"] == pytest.approx(np.average(xs + 0.5, weights=mask[ys, xs]) / cols, abs=1e-9)
        assert a["cy"] == pytest.approx(np.average(ys + 0.5, weights=mask[ys, xs]) / rows, abs=1e-9)
    square, same = generate(77, 48), generate(77, 48, 48)
    assert np.array_equal(square.image, same.image) and square.attrs == same.attrs


def test_edges_trace_the_mask_outline() -> None:
    for seed in range(30):
        s = generate(seed)
        solid = (s.mask >= 128).astype(np.uint8)
        outline = cv2.morphologyEx(solid, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
        edges = s.edges > 0
        assert set(np.unique(s.edges)) <= {0, 255}
        # Every edge pixel lies on the silhouette's outline (within one pixel) ...
        near_outline = cv2.dilate(outline.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert np.all(near_outline[edges])
        # ... and the outline is traced all round, not just in places.
        near_edges = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert near_edges[outline].mean() > 0.95


def test_radial_extent_matches_polygon_area() -> None:
    """The checker's polar templates describe the same shapes the renderer draws."""
    phi = np.linspace(0, 2 * math.pi, 20000, endpoint=False)
    for shape in SHAPES:
        for angle in (0.0, 11.0):
            r = radial_extent(shape, phi, angle).astype(np.float64)
            area = 0.5 * np.mean(r**2) * 2 * math.pi
            assert area == pytest.approx(unit_area(shape), rel=1e-3)


def test_palette_is_well_separated_and_labelled() -> None:
    colors = np.array(list(PALETTE.values()), dtype=np.float64)
    d = np.linalg.norm(colors[:, None] - colors[None], axis=-1)
    assert d[~np.eye(len(colors), dtype=bool)].min() >= 255
    assert list(nearest_color_labels(colors * 0.8 + 20)) == list(range(len(colors)))


# --- captions ------------------------------------------------------------------------------------


def test_every_template_round_trips() -> None:
    rng = np.random.default_rng(0)
    for template, position, size, with_size, with_position in itertools.product(
        range(len(TEMPLATES)), POSITIONS, ("small", "medium", "large"), (False, True), (False, True)
    ):
        color, background = rng.choice(COLOR_NAMES, 2, replace=False)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        attrs = {"shape": shape, "color": color, "background": background, "size": size, "position": position}
        text = caption_for(attrs, rng, template=template, with_size=with_size, with_position=with_position)
        expected = {"shape": shape, "color": color, "background": background}
        if with_size and size != "medium":
            expected["size"] = size
        if with_position:
            expected["position"] = position
        assert parse_caption(text) == expected, text


def test_generated_captions_parse_to_their_attrs() -> None:
    batch = generate_batch(2, 300)
    mentioned = {"size": 0, "position": 0}
    for text, attrs in zip(batch.captions, batch.attrs, strict=True):
        parsed = parse_caption(text)
        assert {k: attrs[k] for k in parsed} == parsed, text
        assert {"shape", "color", "background"} <= parsed.keys()
        for key in mentioned:
            mentioned[key] += key in parsed
    # Size and position words are optional but common.
    assert 0.2 * 300 < mentioned["position"] < 0.8 * 300
    assert 0.1 * 300 < mentioned["size"] < 0.6 * 300


def test_parse_free_form_prompts() -> None:
    assert parse_caption("A big RED star in the upper-left corner, on a black background") == {
        "shape": "star", "color": "red", "background": "black", "size": "large", "position": "top left"}  # fmt: skip
    assert parse_caption("blue background, yellow triangle at the bottom") == {
        "shape": "triangle", "color": "yellow", "background": "blue", "position": "bottom"}  # fmt: skip
    assert parse_caption("tiny white disc in the middle on green") == {
        "shape": "circle", "color": "white", "background": "green", "size": "small", "position": "center"}  # fmt: skip
    assert parse_caption("a cat") == {}


# --- checker -------------------------------------------------------------------------------------


def test_checker_on_clean_64px() -> None:
    batch = generate_batch(100, 300, 64)
    verdicts = [check(img) for img in batch.images]
    results = [compare(v, a) for v, a in zip(verdicts, batch.attrs, strict=True)]
    acc = {k: np.mean([r[k] for r in results]) for k in results[0]}
    assert acc["color_ok"] == 1.0 and acc["background_ok"] == 1.0
    assert acc["shape_ok"] >= 0.98  # measured 1.000
    assert acc["position_ok"] == 1.0 and acc["size_ok"] == 1.0
    for v, a in zip(verdicts, batch.attrs, strict=True):
        # The mask and the checker agree on where the object is.
        assert abs(v.centroid[0] - a["cx"]) <= 0.02 and abs(v.centroid[1] - a["cy"]) <= 0.02
        assert v.area_frac == pytest.approx(a["area_frac"], rel=0.05)
        assert v.confidence > 0.8


def test_checker_on_clean_32px() -> None:
    batch = generate_batch(200, 300, 32)
    acc = _accuracy(batch.images, batch.attrs)
    assert acc["color_ok"] == 1.0 and acc["background_ok"] == 1.0
    assert acc["shape_ok"] >= 0.90  # measured 1.000


def test_checker_on_degraded_64px() -> None:
    """Blur sigma 1.5 px + noise sd 8 + JPEG q40: a stand-in for a tiny diffusion model's output."""
    batch = generate_batch(300, 300, 64)
    rng = np.random.default_rng(0)
    acc = _accuracy([_degrade(img, rng) for img in batch.images], batch.attrs)
    assert acc["color_ok"] >= 0.99 and acc["background_ok"] >= 0.99  # measured 1.000, 1.000
    assert acc["shape_ok"] >= 0.85  # measured 0.970
    assert acc["position_ok"] >= 0.99  # measured 1.000


def test_checker_on_resampled_and_colour_shifted_images() -> None:
    """2x down-and-up sampling, and a dull, tinted version of the palette."""
    batch = generate_batch(400, 100, 64)
    acc = _accuracy([_down_up(img) for img in batch.images], batch.attrs)
    assert min(acc.values()) >= 0.97  # measured 1.000 throughout
    tint = np.array([0.8, 0.75, 0.85])
    shifted = [np.clip(img * tint + np.array([25, 30, 15]), 0, 255).astype(np.uint8) for img in batch.images]
    acc = _accuracy(shifted, batch.attrs)
    assert min(acc.values()) >= 0.97


def test_checker_without_an_object() -> None:
    v = check(np.full((64, 64, 3), PALETTE["green"], np.uint8))
    assert v.background_color == "green" and v.shape is None and v.confidence == 0.0
    assert not compare(v, {"shape": "circle", "color": "red"})["shape_ok"]


def test_compare_against_prompt_attrs() -> None:
    s = generate(7)
    v = check(s.image)
    prompt = parse_caption(f"a {s.attrs['color']} {s.attrs['shape']} {s.attrs['position']} on {s.attrs['background']}")
    assert all(compare(v, prompt).values())
    wrong_color = next(c for c in COLOR_NAMES if c not in (s.attrs["color"], s.attrs["background"]))
    wrong_shape = next(x for x in SHAPES if x != s.attrs["shape"])
    opposite = POSITIONS[len(POSITIONS) - 1 - POSITIONS.index(s.attrs["position"])]
    bad = compare(v, {"color": wrong_color, "background": wrong_color, "shape": wrong_shape, "position": opposite})
    assert not bad["color_ok"] and not bad["background_ok"] and not bad["shape_ok"]
    assert bad["position_ok"] == (s.attrs["position"] == "center")


def test_confidence_separates_shapes_from_look_alikes() -> None:
    """An ellipse, a 2:1 rectangle or noise fit no template well; generated shapes do."""
    yy, xx = np.mgrid[:64, :64]
    ellipse = np.where((((xx - 32) / 24) ** 2 + ((yy - 32) / 10) ** 2 < 1)[..., None], 255, 0)
    rectangle = np.where(((abs(xx - 32) < 24) & (abs(yy - 32) < 10))[..., None], 255, 0)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3))
    for img in (ellipse, rectangle, noise):
        assert check(np.broadcast_to(img, (64, 64, 3)).astype(np.uint8)).confidence < 0.7
    confidences = [check(img).confidence for img in generate_batch(9, 50).images]
    assert min(confidences) > 0.85
    assert check(np.pad(np.full((1, 1, 3), 255, np.uint8), ((30, 33), (30, 33), (0, 0)))).shape is None
