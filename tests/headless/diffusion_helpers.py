"""Tiny-checkpoint txt2img for the headless tests (see tests/diffusion/pipeline_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

from nodegraph import Graph, Registry
from tests.diffusion.pipeline_fixtures import txt2img_graph, write_tiny_checkpoint


def diffusion_registry() -> Registry:
    from nodes import image
    from nodes.diffusion.pack import register

    reg = Registry()
    reg.load_pack(register)
    reg.load_pack(image.register)
    return reg


def write_models(models_dir: Path, names: tuple[str, ...] = ("tiny_a.safetensors",)) -> list[str]:
    """Tiny SD1-layout checkpoints with different random weights, one per name."""
    for i, name in enumerate(names):
        write_tiny_checkpoint(models_dir, "sd1", name=name, seed=i)
    return list(names)


def save_graph(ckpt_name: str, steps: int = 2) -> Graph:
    """txt2img (node ids ckpt/positive/negative/latent/sampler/decode) + image.save as ``save``."""
    g = txt2img_graph(ckpt_name, steps=steps, prompt="a red circle")
    g.add_node("image.save", {"filename_prefix": "img", "embed_workflow": True}, id="save")
    g.connect("decode", "IMAGE", "save", "images")
    return g


def settings(models_dir: Path) -> dict[str, object]:
    return {"models_dir": str(models_dir), "include_demo_models": False}
