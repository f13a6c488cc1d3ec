"""Regenerate the shipped default workflows in workflows/ (and their input images).

Run: .venv/bin/python scripts/make_workflows.py

The files are built through the engine's own Graph API and saved with its
atomic writer, so they are always in the current format.  Input images come
from the deterministic shapes generator used to train the demo models.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from nodegraph import Graph, save_workflow  # noqa: E402
from training.shapes import compose, render_mask  # noqa: E402

OUT = ROOT / "workflows"
CKPT = "nodegraph-shapes-v1.safetensors"
CONTROLNET = "nodegraph-shapes-mask-controlnet-v1.safetensors"
UPSCALER = "nodegraph-shapes-2x-compact-v1.safetensors"
SIZE = 64
STEPS, CFG = 10, 5.0


class Builder:
    """Lay nodes out left to right in columns so the editor shows a tidy graph."""

    def __init__(self, name: str, description: str) -> None:
        self.g = Graph()
        self.g.meta.update(name=name, description=description)

    def add(self, nid: str, type_: str, col: int, row: int, title: str | None = None, **values: object) -> str:
        self.g.add_node(type_, values, id=nid, title=title, ui={"pos": [40 + col * 300, 40 + row * 190]})
        return nid

    def link(self, src: str, out: str, dst: str, inp: str) -> None:
        self.g.connect(src, out, dst, inp)

    def base(self, prompt: str, *, negative: str = "", sampler_col: int = 2) -> None:
        """Checkpoint + prompts, shared by every workflow."""
        self.add("ckpt", "diffusion.checkpoint_loader", 0, 0, "Load Checkpoint", ckpt_name=CKPT)
        self.add("positive", "diffusion.text_encode", 1, 0, "Positive prompt", text=prompt)
        self.add("negative", "diffusion.text_encode", 1, 1, "Negative prompt", text=negative)
        self.link("ckpt", "CLIP", "positive", "clip")
        self.link("ckpt", "CLIP", "negative", "clip")

    def sampler(self, nid: str, col: int, row: int, latent_src: tuple[str, str], *, seed: int = 42,
                denoise: float = 1.0, positive: tuple[str, str] = ("positive", "CONDITIONING"),
                negative: tuple[str, str] = ("negative", "CONDITIONING")) -> str:
        self.add(nid, "diffusion.ksampler", col, row, "KSampler", seed=seed, steps=STEPS, cfg=CFG,
                 sampler_name="euler", scheduler="normal", denoise=denoise)
        self.link("ckpt", "MODEL", nid, "model")
        self.link(*positive, nid, "positive")
        self.link(*negative, nid, "negative")
        self.link(*latent_src, nid, "latent_image")
        return nid

    def decode_save(self, latent_src: tuple[str, str], col: int, prefix: str) -> None:
        self.add("decode", "diffusion.vae_decode", col, 0, "VAE Decode")
        self.link(*latent_src, "decode", "samples")
        self.link("ckpt", "VAE", "decode", "vae")
        self.add("save", "image.save", col + 1, 0, "Save Image", filename_prefix=prefix)
        self.link("decode", "IMAGE", "save", "images")

    def empty_latent(self, col: int, row: int) -> None:
        self.add("latent", "diffusion.empty_latent", col, row, "Empty Latent", width=SIZE, height=SIZE, batch_size=1)
        self.link("ckpt", "VAE", "latent", "vae")

    def save(self, name: str) -> None:
        save_workflow(self.g, OUT / f"{name}.json")


def write_inputs() -> None:
    """Deterministic input images for the img2img, inpaint and ControlNet workflows."""
    inputs = OUT / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    circle = render_mask("circle", (32.0, 32.0), 16.0, 0.0, SIZE)
    Image.fromarray(compose(circle, "red", "blue")).save(inputs / "red_circle_on_blue.png")
    Image.fromarray(np.where(circle > 0, 255, 0).astype(np.uint8)).convert("RGB").save(inputs / "circle_mask.png")
    star = render_mask("star", (20.0, 22.0), 14.0, 0.0, SIZE)
    Image.fromarray(star).convert("RGB").save(inputs / "star_top_left_mask.png")


def main() -> None:
    write_inputs()

    b = Builder("Text to image", "Text-to-image on the shipped demo model: a prompt such as 'a red circle on a "
                "blue background' (shapes: circle, square, triangle, star; colours: red, green, blue, yellow, cyan, "
                "magenta, white, black) becomes a 64x64 image in under half a second per image on one CPU core "
                "once loaded.")
    b.base("a red circle on a blue background")
    b.empty_latent(1, 2)
    b.sampler("sampler", 2, 0, ("latent", "LATENT"))
    b.decode_save(("sampler", "LATENT"), 3, "txt2img")
    b.save("txt2img")

    b = Builder("Image to image", "Image-to-image: encodes workflows/inputs/red_circle_on_blue.png and re-samples "
                "it with denoise 0.7 towards a new prompt, keeping its layout.")
    b.base("a yellow circle on a blue background")
    b.add("load", "image.load_path", 0, 2, "Load Image", path="inputs/red_circle_on_blue.png")
    b.add("encode", "diffusion.vae_encode", 1, 2, "VAE Encode")
    b.link("load", "IMAGE", "encode", "pixels")
    b.link("ckpt", "VAE", "encode", "vae")
    b.sampler("sampler", 2, 0, ("encode", "LATENT"), denoise=0.7)
    b.decode_save(("sampler", "LATENT"), 3, "img2img")
    b.save("img2img")

    b = Builder("ControlNet", "ControlNet: the demo mask ControlNet places the object where the white shape of "
                "workflows/inputs/star_top_left_mask.png is, whatever the prompt says.")
    b.base("a green star on a black background")
    b.add("hint", "image.load_path", 0, 2, "Control image", path="inputs/star_top_left_mask.png")
    b.add("cnet", "diffusion.controlnet_loader", 0, 3, "Load ControlNet", control_net_name=CONTROLNET)
    b.add("apply", "diffusion.controlnet_apply_advanced", 1, 2, "Apply ControlNet", strength=1.0,
          start_percent=0.0, end_percent=1.0)
    b.link("positive", "CONDITIONING", "apply", "positive")
    b.link("negative", "CONDITIONING", "apply", "negative")
    b.link("cnet", "CONTROL_NET", "apply", "control_net")
    b.link("hint", "IMAGE", "apply", "image")
    b.empty_latent(1, 3)
    b.sampler("sampler", 2, 0, ("latent", "LATENT"), positive=("apply", "positive"),
              negative=("apply", "negative"))
    b.decode_save(("sampler", "LATENT"), 3, "controlnet")
    b.save("controlnet")

    b = Builder("Upscale", "Text-to-image, then the demo 2x super-resolution model (tiled) turns 64x64 into "
                "128x128.")
    b.base("a magenta triangle on a white background")
    b.empty_latent(1, 2)
    b.sampler("sampler", 2, 0, ("latent", "LATENT"))
    b.add("decode", "diffusion.vae_decode", 3, 0, "VAE Decode")
    b.link("sampler", "LATENT", "decode", "samples")
    b.link("ckpt", "VAE", "decode", "vae")
    b.add("upscaler", "upscale.load_model", 3, 1, "Load Upscale Model", model_name=UPSCALER)
    b.add("upscale", "upscale.image_with_model", 4, 0, "Upscale Image", tile_size=64, overlap=8)
    b.link("upscaler", "UPSCALE_MODEL", "upscale", "upscale_model")
    b.link("decode", "IMAGE", "upscale", "image")
    b.add("save", "image.save", 5, 0, "Save Image", filename_prefix="upscale")
    b.link("upscale", "IMAGE", "save", "images")
    b.save("upscale")

    b = Builder("Hires fix", "Two-pass 'hires fix': sample at 64x64, upscale the latent 2x, then re-sample at "
                "denoise 0.5 to add detail at 128x128.")
    b.base("a cyan square on a magenta background")
    b.empty_latent(1, 2)
    b.sampler("sampler", 2, 0, ("latent", "LATENT"))
    b.add("upscale_latent", "diffusion.latent_upscale_by", 2, 2, "Upscale Latent", upscale_method="bicubic",
          scale_by=2.0)
    b.link("sampler", "LATENT", "upscale_latent", "samples")
    b.sampler("sampler_hires", 3, 1, ("upscale_latent", "LATENT"), denoise=0.5)
    b.decode_save(("sampler_hires", "LATENT"), 4, "hiresfix")
    b.save("hiresfix")

    b = Builder("Inpaint", "Inpainting: repaints only the white area of workflows/inputs/circle_mask.png in "
                "workflows/inputs/red_circle_on_blue.png with a new object; the rest stays as it was.")
    b.base("a yellow star on a blue background")
    b.add("load", "image.load_path", 0, 2, "Load Image", path="inputs/red_circle_on_blue.png")
    b.add("mask_image", "image.load_path", 0, 3, "Load Mask", path="inputs/circle_mask.png")
    b.add("mask", "image.to_mask", 1, 3, "Image to Mask", channel="red")
    b.link("mask_image", "IMAGE", "mask", "image")
    b.add("encode", "diffusion.vae_encode_for_inpaint", 1, 2, "VAE Encode (Inpaint)", grow_mask_by=2)
    b.link("load", "IMAGE", "encode", "pixels")
    b.link("ckpt", "VAE", "encode", "vae")
    b.link("mask", "MASK", "encode", "mask")
    b.sampler("sampler", 2, 0, ("encode", "LATENT"))
    b.decode_save(("sampler", "LATENT"), 3, "inpaint")
    b.save("inpaint")


if __name__ == "__main__":
    main()
