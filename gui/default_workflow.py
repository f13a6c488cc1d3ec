"""The workflow the editor opens with when given none: text-to-image.

Read from ``workflows/txt2img.json`` when the checkout ships one, otherwise
built here, so ``nodegraph`` with no arguments always shows a runnable graph.
"""

from __future__ import annotations

from pathlib import Path

from nodegraph import Graph, load_workflow

SHIPPED = Path(__file__).resolve().parent.parent / "workflows" / "txt2img.json"


def build_txt2img() -> Graph:
    """Checkpoint → prompts → empty latent → KSampler → VAE decode → Save Image."""
    g = Graph()
    g.meta["name"] = "txt2img"
    g.add_node("diffusion.checkpoint_loader", {}, id="ckpt", ui={"pos": [0, 160]})
    g.add_node("diffusion.text_encode", {"text": "a watercolor painting of a lighthouse at dawn, soft light"},
               id="positive", ui={"pos": [320, 0]})
    g.add_node("diffusion.text_encode", {"text": "blurry, low quality"}, id="negative", ui={"pos": [320, 200]})
    g.add_node("diffusion.empty_latent", {"width": 512, "height": 512, "batch_size": 1}, id="latent",
               ui={"pos": [320, 400]})
    g.add_node("diffusion.ksampler", {"seed": 42, "steps": 20, "cfg": 7.0}, id="sampler",
               ui={"pos": [640, 120], "seed_control": {"seed": "randomize"}})
    g.add_node("diffusion.vae_decode", {}, id="decode", ui={"pos": [960, 120]})
    g.add_node("image.save", {"filename_prefix": "txt2img"}, id="save", ui={"pos": [1220, 120]})
    g.connect("ckpt", "CLIP", "positive", "clip")
    g.connect("ckpt", "CLIP", "negative", "clip")
    g.connect("ckpt", "MODEL", "sampler", "model")
    g.connect("positive", "CONDITIONING", "sampler", "positive")
    g.connect("negative", "CONDITIONING", "sampler", "negative")
    g.connect("latent", "LATENT", "sampler", "latent_image")
    g.connect("sampler", "LATENT", "decode", "samples")
    g.connect("ckpt", "VAE", "decode", "vae")
    g.connect("decode", "IMAGE", "save", "images")
    return g


def default_graph() -> Graph:
    if SHIPPED.is_file():
        try:
            return load_workflow(SHIPPED)
        except Exception:  # a broken shipped file must not stop the editor from starting
            pass
    return build_txt2img()
