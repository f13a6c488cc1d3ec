"""Grade the shipped demo checkpoint with the dataset's checker: the test's prompts and a wider set.

The tests assert issue 4's bars on 12 fixed prompts x 3 seeds (``EVAL_PROMPTS``); a model
tuned while watching those could look better there than it is, so this also grades 48
other prompts (12 per shape, colour pairs drawn at random) on 2 other seeds, and splits
the shape score by shape (:func:`training.common.grade`).  Loads the file through the app's loaders, like the tests.

Usage: ``.venv/bin/python -m training.evaluate [checkpoint.safetensors]`` (~1 min on one core).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from nodes.diffusion.checkpoint import load_checkpoint
from training.common import CHECKPOINT_PATH, EVAL_PROMPTS, EVAL_SEEDS, grade, sample_images
from training.geometry import SHAPES
from training.palette import COLOR_NAMES

WIDE_SEEDS: tuple[int, ...] = (10, 11)


def wide_prompts(per_shape: int = 12, seed: int = 77) -> list[str]:
    """``per_shape`` prompts for each shape, object and background colours drawn at random (distinct)."""
    rng = np.random.default_rng(seed)
    out = []
    for shape in SHAPES:
        for _ in range(per_shape):
            c, bg = rng.choice(len(COLOR_NAMES), 2, replace=False)
            out.append(f"a {COLOR_NAMES[c]} {shape} on a {COLOR_NAMES[bg]} background")
    return out


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    ck = load_checkpoint(argv[0] if argv else CHECKPOINT_PATH)
    for name, prompts, seeds in (("test prompts", list(EVAL_PROMPTS), EVAL_SEEDS),
                                 ("wider set", wide_prompts(), WIDE_SEEDS)):
        images = sample_images(ck.model, ck.clip, ck.vae, prompts, seeds)
        g = grade(images, prompts, seeds)
        print(f"{name} ({len(prompts)} prompts x {len(seeds)} seeds): colour (majority) {g['maj_color_ok']:.0%}, "
              f"background {g['img_background_ok']:.0%}, shape {g['img_shape_ok']:.0%} ("
              + ", ".join(f"{k[len('shape_ok_'):]} {v:.0%}" for k, v in g.items() if k.startswith("shape_ok_"))
              + ")", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
