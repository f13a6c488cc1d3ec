"""Grading shared by the split-file demo tests (FLUX, SD3): the 12 test prompts x 3 seeds sampled through
a demo's runtime objects at the model file's own default settings (what its shipped workflow uses),
graded by the dataset's checker."""

from __future__ import annotations

from training.common import EVAL_PROMPTS, EVAL_SEEDS, grade, sample_images


def grade_at_defaults(model, clip, vae) -> dict[str, float]:
    """Checker pass rates (:func:`training.common.grade`) of the test prompts at ``model.rules``' defaults."""
    images = sample_images(model, clip, vae, EVAL_PROMPTS, EVAL_SEEDS, cfg=model.rules.default_cfg,
                           scheduler=model.rules.default_scheduler, steps=model.rules.default_steps)
    return grade(images, EVAL_PROMPTS, EVAL_SEEDS)
