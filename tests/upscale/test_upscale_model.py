"""Upscale models through the engine: a real Real-ESRGAN Compact state dict (random weights, original
key layout) is detected by spandrel, loaded safely from .safetensors and .pth, checked against an
independent forward pass, and tiled upscaling matches the untiled result."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

import nodegraph
import nodes.image
import nodes.primitives
import nodes.upscale
from nodegraph import Graph, NodeProgress, WorkflowInvalid
from nodes.upscale.model import UpscaleModelError, load_upscale_model
from tests.tolerance import assert_close

torch.set_num_threads(1)
NF = 8  # feature channels
SCALE = 2
# Rounding bound (tests/tolerance.py): three convs, the widest over NF x 3x3 inputs; tiling adds a weighted
# mean of overlapping tiles.
COMPACT_ROUNDING = {"reduction": NF * 9, "depth": 3}
TILED_ROUNDING = {"reduction": NF * 9, "depth": 3 + 1}


def compact_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact x2 with one body conv, in Real-ESRGAN's key layout:
    conv(3->nf), PReLU, conv(nf->nf), PReLU, conv(nf->3*s*s), then pixel shuffle."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, std: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    return {
        "body.0.weight": r(NF, 3, 3, 3), "body.0.bias": r(NF),
        "body.1.weight": torch.full((NF,), 0.25) + r(NF, std=0.01),
        "body.2.weight": r(NF, NF, 3, 3), "body.2.bias": r(NF),
        "body.3.weight": torch.full((NF,), 0.25) + r(NF, std=0.01),
        "body.4.weight": r(3 * SCALE * SCALE, NF, 3, 3), "body.4.bias": r(3 * SCALE * SCALE),
    }


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The Compact forward pass written independently of spandrel (receptive-field radius: 3 px)."""
    h = F.prelu(F.conv2d(x, sd["body.0.weight"], sd["body.0.bias"], padding=1), sd["body.1.weight"])
    h = F.prelu(F.conv2d(h, sd["body.2.weight"], sd["body.2.bias"], padding=1), sd["body.3.weight"])
    h = F.pixel_shuffle(F.conv2d(h, sd["body.4.weight"], sd["body.4.bias"], padding=1), SCALE)
    return (h + F.interpolate(x, scale_factor=SCALE, mode="nearest")).clamp(0, 1)


@pytest.fixture
def env(tmp_path: Path):
    models = tmp_path / "models" / "upscale_models"
    models.mkdir(parents=True)
    sd = compact_state_dict()
    save_file(sd, str(models / "compact_x2.safetensors"))
    torch.save(sd, models / "compact_x2.pth")
    reg = nodegraph.Registry()
    for pack in (nodes.image, nodes.upscale, nodes.primitives):
        pack.register(reg)
    settings = {"models_dir": str(tmp_path / "models"), "include_demo_models": False,
                "input_dir": str(tmp_path / "input")}
    ex = nodegraph.Executor(reg, device="cpu", output_dir=tmp_path / "out", settings=settings)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    return ex, models, sd, tmp_path / "in.png", pixels


def upscale_graph(image_path: Path, model_name: str, tile: int, overlap: int) -> Graph:
    g = Graph()
    g.add_node("image.load_path", {"path": str(image_path)}, id="img")
    g.add_node("upscale.load_model", {"model_name": model_name}, id="model")
    g.add_node("upscale.image_with_model", {"tile_size": tile, "overlap": overlap}, id="up")
    g.connect("model", "UPSCALE_MODEL", "up", "upscale_model")
    g.connect("img", "IMAGE", "up", "image")
    return g


def test_model_choices_and_detection(env) -> None:
    ex, _, sd, _, _ = env
    spec = ex.registry["upscale.load_model"]
    assert spec.input("model_name").choice_list(ex.settings) == ["compact_x2.pth", "compact_x2.safetensors"]
    for name in ("compact_x2.safetensors", "compact_x2.pth"):
        g = Graph()
        g.add_node("upscale.load_model", {"model_name": name}, id="m")
        report = ex.run(g, outputs=["m"])
        report.raise_for_status()
        model = report.results["m"]["UPSCALE_MODEL"]
        assert model.scale == SCALE and "Compact" in model.architecture
        assert (model.input_channels, model.output_channels) == (3, 3)
        assert model.dtype == torch.float32 and model.device.type == "cpu"  # CPU policy computes in fp32
        x = torch.rand(1, 3, 9, 11, generator=torch.Generator().manual_seed(1))
        assert_close(model(x), reference_forward(sd, x), **COMPACT_ROUNDING)


def test_tiled_matches_untiled_through_engine(env) -> None:
    ex, _, sd, image_path, pixels = env
    x = torch.from_numpy(pixels).float().div(255).permute(2, 0, 1)[None]
    expected = reference_forward(sd, x)[0].permute(1, 2, 0)
    events: list = []
    # 32px tiles with 16px overlap: 4px context margin >= the model's 3px receptive-field radius.
    report = ex.run(upscale_graph(image_path, "compact_x2.safetensors", 32, 16), outputs=["up"],
                    on_event=events.append)
    report.raise_for_status()
    tiled = report.results["up"]["IMAGE"]
    assert tiled.shape == (1, 128, 160, 3) and tiled.dtype == torch.float32
    assert_close(tiled[0], expected, **TILED_ROUNDING)
    steps = [(e.step, e.total) for e in events if isinstance(e, NodeProgress) and e.node_id == "up"]
    assert steps == [(i, 12) for i in range(1, 13)]  # 3 rows x 4 columns of tiles, reported one by one

    whole = ex.run(upscale_graph(image_path, "compact_x2.pth", 128, 0), outputs=["up"]).results["up"]["IMAGE"]
    assert_close(whole[0], expected, **COMPACT_ROUNDING)
    assert_close(tiled, whole, **TILED_ROUNDING)


def test_unsafe_and_invalid_files_blame_model_name(env, tmp_path: Path) -> None:
    ex, models, _, image_path, _ = env
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # executed by a plain unpickler; weights_only must refuse it
            return (Path.touch, (marker,))

    with open(models / "evil.pth", "wb") as fh:
        pickle.dump({"body.0.weight": Evil()}, fh, protocol=2)
    save_file({"foo.weight": torch.zeros(2, 2)}, str(models / "unknown.safetensors"))
    (models / "garbage.safetensors").write_bytes(b"not a safetensors file")
    for name, fragment in [("evil.pth", "refused or unreadable"), ("unknown.safetensors", "not recognised"),
                           ("garbage.safetensors", "not a readable safetensors")]:
        report = ex.run(upscale_graph(image_path, name, 64, 8), outputs=["up"])
        assert report.status == "error", name
        assert (report.error.node_id, report.error.input) == ("model", "model_name")
        assert fragment in report.error.message, report.error.message
    assert not marker.exists()

    g = upscale_graph(image_path, "missing.pth", 64, 8)
    with pytest.raises(WorkflowInvalid) as info:
        ex.run(g, outputs=["up"])
    assert [(i.node_id, i.input) for i in info.value.issues] == [("model", "model_name")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_is_refused(tmp_path: Path) -> None:
    try:
        scripted = torch.jit.script(torch.nn.Conv2d(3, 3, 1))
    except Exception as exc:  # pragma: no cover - TorchScript removed from this torch build
        pytest.skip(f"TorchScript unavailable: {exc}")
    path = tmp_path / "scripted.pt"
    torch.jit.save(scripted, str(path))
    with pytest.raises(UpscaleModelError, match="TorchScript"):
        load_upscale_model(path)


def test_overlap_must_be_smaller_than_tile(env) -> None:
    ex, _, _, image_path, _ = env
    report = ex.run(upscale_graph(image_path, "compact_x2.safetensors", 32, 32), outputs=["up"])
    assert report.status == "error" and report.error.input == "overlap"
