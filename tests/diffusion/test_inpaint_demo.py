"""Inpainting and outpainting on the shipped demo model (issue 16), graded by the project's checker.

The demo checkpoint is an ordinary 4-channel model, so both go through the noise-mask path:
InpaintModelConditioning with ``noise_mask`` on (the inpaint conditioning itself is ignored by a model
without extra channels, as in ComfyUI); the sampler repaints only inside the mask.

* Inpainting: workflows/inputs/red_circle_on_blue.png with its circle masked (circle_mask.png, grown by
  2 px) and the prompt "a yellow star on a blue background": over 10 seeds the checker must see a yellow
  object every time and a yellow star in >= 8 (measured 10/10 colour, 9/10 shape), and pixels more than
  8 px from the mask (one latent cell plus the decoder's reach) must stay close to the input: mean
  |difference| <= 0.02 and 99th percentile <= 0.12 on 0..1 pixels (measured ~0.009 and ~0.08; the demo
  VAE's own round trip of the input is off by a mean 0.03 there, so this is as tight as decoding allows).
* Outpainting: the shipped workflows/outpaint.json (the circle cut at the left edge, the canvas padded back)
  run through the engine over 8 seeds: the checker must find a red circle on blue in >= 7 (measured 8/8),
  and the kept part of the picture 8 px away from the new strip must stay close to the input (mean
  |difference| <= 0.05; measured 0.021-0.036, mostly the demo VAE's round-trip error at the cut edge and the
  image border, which a decode cannot avoid).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import nodegraph
from nodegraph import Executor
from nodes.diffusion.paths import DEMO_DIR
from tests.comfy.helpers import full_registry
from tests.diffusion.fake_context import FakeContext

ROOT = Path(__file__).resolve().parents[2]
DEMO_CKPT = DEMO_DIR / "checkpoints" / "nodegraph-shapes-v1.safetensors"
pytestmark = pytest.mark.skipif(not DEMO_CKPT.exists(), reason="demo models not exported")
checker = pytest.importorskip("training.checker")
captions = pytest.importorskip("training.captions")


def _load_png(name: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(ROOT / "workflows" / "inputs" / name)).astype(np.float32) / 255)


def _grade(image: torch.Tensor, prompt: str) -> tuple[Any, dict[str, bool]]:
    verdict = checker.check((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    return verdict, checker.compare(verdict, captions.parse_caption(prompt))


def test_inpainting_the_object_with_a_new_prompt_changes_it_and_keeps_the_background() -> None:
    from nodes.diffusion.checkpoint import load_checkpoint
    from nodes.diffusion.pack.inpaint import inpaint_model_conditioning
    from nodes.diffusion.pack.sampler import run_sampler

    torch.set_num_threads(1)
    ctx: Any = FakeContext()
    ck = load_checkpoint(DEMO_CKPT)
    image = _load_png("red_circle_on_blue.png")[None]
    mask = _load_png("circle_mask.png")[None, ..., 0]
    mask = F.max_pool2d(mask[:, None], 5, 1, 2)[:, 0]  # grown by 2 px, like the shipped inpaint workflow
    before, _ = _grade(image[0], "a red circle")
    assert (before.object_color, before.shape) == ("red", "circle")
    far = F.max_pool2d(mask[:, None], 17, 1, 8)[0, 0] == 0
    assert int(far.sum()) > 1000
    prompt = "a yellow star on a blue background"
    with torch.inference_mode():
        pos, neg = ck.clip.encode(prompt), ck.clip.encode("")
        pos2, neg2, latent = inpaint_model_conditioning.fn(ctx, pos, neg, ck.vae, image, mask, True)
    colour = star = 0
    for seed in range(10):
        with torch.inference_mode():
            out = run_sampler(ctx, ck.model, pos2, neg2, latent, seed=seed, steps=20, cfg=5.0, sampler_name="euler",
                              scheduler="normal")
            result = ck.vae.decode(out.samples)[0]
        verdict, ok = _grade(result, prompt)
        colour += ok["color_ok"]
        star += ok["color_ok"] and ok["shape_ok"]
        assert ok["background_ok"], (seed, verdict)
        diff = (result - image[0])[far].abs()
        assert float(diff.mean()) <= 0.02 and float(diff.quantile(0.99)) <= 0.12, (seed, float(diff.mean()))
    assert colour == 10 and star >= 8, (colour, star)


def _run_outpaint(seed: int, tmp_path: Path) -> dict[str, Any]:
    path = ROOT / "workflows" / "outpaint.json"
    graph = nodegraph.load_workflow(path)
    graph.node("sampler").values["seed"] = seed
    ex = Executor(full_registry(), device="cpu", output_dir=tmp_path / "out",
                  settings={"workflow_dir": str(path.parent)})
    report = ex.run(graph, outputs=["pad", "decode"])
    report.raise_for_status()
    return report.results


def test_outpaint_workflow_completes_the_cut_object(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    prompt = "a red circle on a blue background"
    good = 0
    for seed in range(8):
        results = _run_outpaint(seed, tmp_path)
        padded, mask = results["pad"]["IMAGE"][0], results["pad"]["MASK"][0]
        result = results["decode"]["IMAGE"][0]
        assert result.shape == (64, 64, 3) and bool((mask[:, :24] == 1).all())
        verdict, ok = _grade(result, prompt)
        good += all(ok.values())
        kept = F.max_pool2d(mask[None, None], 17, 1, 8)[0, 0] == 0  # 8 px away from the repainted strip
        diff = (result - padded)[kept].abs()
        print(f"outpaint {seed}: {verdict.object_color} {verdict.shape}, kept mean |diff| {float(diff.mean()):.3f}")
        assert int(kept.sum()) > 800 and float(diff.mean()) <= 0.05, (seed, float(diff.mean()))
    assert good >= 7, good
