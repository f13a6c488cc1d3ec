"""Issue 16's regional-prompt proof on the shipped demo model: ``workflows/regional.json`` (two
Conditioning (Set Area) halves combined into one KSampler, real nodes through the executor)
puts each prompt's object in its half, graded by the dataset's checker on each half.

Bar (issue 16): >= 80 % over 10 seeds; asserted here over 30 (seeds 0-29), so one seed flipping on
another CPU's rounding cannot decide it.  Measured (2026-12-04 evening, the 49,300-step UNet fine-tuned with
more 64x32 crops, 20 euler steps, CFG 3, negative prompt "a green background"): colour and shape right
in both halves on 26/30 of these seeds (8/10 on seeds 0-9), 27/30 on seeds 10-39 and 52/60 on seeds
40-99, which no setting was chosen on (87 %; colours 100 % everywhere; ``python -m training.evaluate``).
The negative prompt and CFG were chosen in a sweep on an earlier UNet (screened on seeds 0-9, compared
on seeds 10-39; training/README.md, "UNet demo: position words and non-square crops").  Each half is
sampled as a 32x64 crop while the negative pass covers the whole 64x64 latent; a negative naming what
both halves share steers guidance toward each half's object (with an empty negative and CFG 5 an
earlier UNet scored 7/30 on seeds 10-39).  Without a background word in the prompts ("a red circle")
each half fills with the object's colour.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nodegraph
from nodegraph import Executor
from training.checker import check
from training.common import CHECKPOINT_PATH

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "regional.json"
SEEDS = range(30)

pytestmark = pytest.mark.skipif(not CHECKPOINT_PATH.exists(), reason="demo models not exported")


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """The shipped workflow on seeds 0..29 (~20 s on one core): checker verdicts of (left, right) halves."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        registry = nodegraph.Registry.with_installed_packs(strict=True)
        ex = Executor(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"),
                      settings={"workflow_dir": str(WORKFLOW.parent)})
        out = []
        for seed in SEEDS:
            graph = nodegraph.load_workflow(WORKFLOW)
            graph.set_value("sampler", "seed", seed)
            report = ex.run(graph, outputs=["decode"])
            assert report.status == "ok", report.error
            img = (report.results["decode"]["IMAGE"][0].numpy() * 255).round().astype(np.uint8)
            assert img.shape == (64, 64, 3)
            out.append((check(img[:, :32]), check(img[:, 32:])))
        return out
    finally:
        torch.set_num_threads(before)


def test_workflow_prompts_name_the_issue_objects() -> None:
    graph = nodegraph.load_workflow(WORKFLOW)
    assert graph.node("left_prompt").values["text"].startswith("a red circle")
    assert graph.node("right_prompt").values["text"].startswith("a blue square")
    assert graph.node("left_area").values == {"width": 32, "height": 64, "x": 0, "y": 0, "strength": 1.0}
    assert graph.node("right_area").values == {"width": 32, "height": 64, "x": 32, "y": 0, "strength": 1.0}


def test_each_prompt_puts_its_object_in_its_half(verdicts: list[tuple]) -> None:
    placed = [left.object_color == "red" and right.object_color == "blue" for left, right in verdicts]
    assert sum(placed) / len(placed) >= 0.8, [(v[0].object_color, v[1].object_color) for v in verdicts]


def test_each_half_has_the_right_colour_and_shape(verdicts: list[tuple]) -> None:
    ok = [(left.object_color, left.shape, right.object_color, right.shape) == ("red", "circle", "blue", "square")
          for left, right in verdicts]
    assert sum(ok) / len(ok) >= 0.8, [(v[0].object_color, v[0].shape, v[1].object_color, v[1].shape)
                                      for v in verdicts]
