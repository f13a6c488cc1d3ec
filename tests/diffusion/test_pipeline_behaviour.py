"""What a user relies on when running diffusion graphs through the engine (tiny SD1-like checkpoint).

Reproducibility (same seed -> bit-identical, image i of a batch = seed + i
alone), caching (a seed change re-runs only the sampler and what follows; a
replaced checkpoint file is reloaded), img2img and inpainting semantics,
KSampler (Advanced) over the full window or split in two = KSampler, fp16
files computing in fp32 on the CPU, prompts longer than one window,
progress/preview events, cancellation, and the errors a user sees for a
missing or damaged checkpoint.  All runs are 48x32 pixels, 4 euler steps.

Tolerances: "bit-identical" means ``torch.equal``.  A batch item vs. the same
seed alone is not bit-identical on CPU (a batch of 6 instead of 2 makes the
convolutions and matmuls sum in another order: ~3e-6 relative); it is compared
to 1e-5 of the latent's largest magnitude (random eps models leave latents of
|x| ~ 60-100, since they cannot predict the noise) and 1e-5 absolute on the
0..1 image.  The inpainting keep-region is compared exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from nodegraph import (
    CancelToken,
    Event,
    Executor,
    Graph,
    NodeContext,
    NodeProgress,
    Registry,
    RunReport,
    WorkflowInvalid,
)
from nodegraph.spec import Int, Out, node
from tests.diffusion.ldm_fixtures import TINY_UNET_ROUNDING, write_checkpoint
from tests.diffusion.pipeline_fixtures import (
    HEIGHT,
    WIDTH,
    make_executor,
    make_registry,
    txt2img_graph,
    write_tiny_checkpoint,
)
from tests.tolerance import assert_close

SEED = 42
STEPS = 4
# Batch size changes the kernels' blocking, so items differ from single runs by rounding: the UNet's bound
# per sampler step, plus the VAE decoder's ~10 blocks for the image (tests/tolerance.py).
LATENT_ROUNDING = {"reduction": TINY_UNET_ROUNDING["reduction"], "depth": STEPS * TINY_UNET_ROUNDING["depth"]}
IMAGE_ROUNDING = {**LATENT_ROUNDING, "depth": LATENT_ROUNDING["depth"] + 10}
MISSING_KEY = "model.diffusion_model.out.2.bias"
LATENT_SHAPE = (1, 4, HEIGHT // 4, WIDTH // 4)


@node("test.left_keep_mask", category="test", display_name="Left-keep mask",
      inputs=[Int("width", WIDTH, min=8, max=4096), Int("height", HEIGHT, min=8, max=4096),
              Int("split", WIDTH // 2, min=0, max=4096)],
      outputs=[Out("MASK", "MASK")])
def left_keep_mask(ctx: NodeContext, width: int, height: int, split: int) -> torch.Tensor:
    """A [1, H, W] mask: 0 (keep) left of ``split`` pixels, 1 (repaint) from there on."""
    mask = torch.zeros(1, height, width)
    mask[..., split:] = 1.0
    return mask


@dataclass
class Setup:
    models_dir: Path
    out_dir: Path
    name: str
    broken_name: str
    registry: Registry

    def executor(self) -> Executor:
        """A fresh executor (empty cache) over this module's models."""
        return make_executor(self.models_dir, self.out_dir, self.registry)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("behaviour")
    ckpt = write_tiny_checkpoint(root / "models", "sd1")
    broken = write_tiny_checkpoint(root / "models", "sd1", name="broken_sd1.safetensors", drop_keys=(MISSING_KEY,))
    registry = make_registry()
    registry.add(left_keep_mask, pack="test")
    return Setup(root / "models", root / "out", ckpt.name, broken.name, registry)


@dataclass
class Baseline:
    latent: torch.Tensor
    image: torch.Tensor
    progress: list[NodeProgress]


@pytest.fixture(scope="module")
def baseline(setup: Setup) -> Baseline:
    """One reference txt2img run (seed 42) on its own executor, with its progress events."""
    events: list[Event] = []
    report = setup.executor().run(txt2img_graph(setup.name, seed=SEED, steps=STEPS), outputs=["sampler", "decode"],
                                  on_event=events.append)
    report.raise_for_status()
    progress = [e for e in events if isinstance(e, NodeProgress)]
    return Baseline(report.results["sampler"]["LATENT"].samples, report.results["decode"]["IMAGE"], progress)


def _outputs(report: RunReport) -> tuple[torch.Tensor, torch.Tensor]:
    report.raise_for_status()
    return report.results["sampler"]["LATENT"].samples, report.results["decode"]["IMAGE"]


def _statuses(report: RunReport) -> dict[str, str]:
    return {nid: r.status for nid, r in report.nodes.items()}


def test_same_seed_is_bit_identical_across_executors(setup: Setup, baseline: Baseline) -> None:
    latent, image = _outputs(setup.executor().run(txt2img_graph(setup.name, seed=SEED, steps=STEPS),
                                                  outputs=["sampler", "decode"]))
    assert latent.shape == LATENT_SHAPE and image.shape == (1, HEIGHT, WIDTH, 3)
    assert torch.equal(latent, baseline.latent) and torch.equal(image, baseline.image)
    assert image.std() > 0.05  # a real picture, not a constant


def test_batch_item_equals_single_run_with_seed_plus_index(setup: Setup) -> None:
    ex = setup.executor()
    batch_latent, batch_image = _outputs(ex.run(txt2img_graph(setup.name, seed=7, steps=STEPS, batch_size=3),
                                                outputs=["sampler", "decode"]))
    one_latent, one_image = _outputs(ex.run(txt2img_graph(setup.name, seed=8, steps=STEPS),
                                            outputs=["sampler", "decode"]))
    assert batch_latent.shape[0] == 3
    assert_close(batch_latent[1:2], one_latent, **LATENT_ROUNDING)
    assert_close(batch_image[1:2], one_image, **IMAGE_ROUNDING)
    # ...and the batch items really are different images.
    assert (batch_image[0] - batch_image[1]).abs().max() > 0.05


def test_seed_change_reruns_only_sampler_and_decode(setup: Setup, baseline: Baseline) -> None:
    ex = setup.executor()
    graph = txt2img_graph(setup.name, seed=SEED, steps=STEPS)
    first = ex.run(graph, outputs=["sampler", "decode"])
    assert set(_statuses(first).values()) == {"executed"}

    graph.set_value("sampler", "seed", SEED + 1)
    second = ex.run(graph, outputs=["sampler", "decode"])
    assert _statuses(second) == {"ckpt": "cached", "positive": "cached", "negative": "cached",
                                 "latent": "cached", "sampler": "executed", "decode": "executed"}
    latent2, _ = _outputs(second)
    assert not torch.allclose(latent2, baseline.latent, atol=1e-2)

    graph.set_value("sampler", "seed", SEED)
    third = ex.run(graph, outputs=["sampler", "decode"])
    assert set(_statuses(third).values()) == {"cached"}
    latent3, image3 = _outputs(third)
    assert torch.equal(latent3, baseline.latent) and torch.equal(image3, baseline.image)


def _img2img_graph(name: str, denoise: float) -> Graph:
    """txt2img, then VAE-encode its image and re-sample it at ``denoise`` (node ``sampler2``)."""
    g = txt2img_graph(name, seed=SEED, steps=STEPS)
    g.add_node("diffusion.vae_encode", {}, id="encode")
    g.connect("decode", "IMAGE", "encode", "pixels")
    g.connect("ckpt", "VAE", "encode", "vae")
    g.add_node("diffusion.ksampler", {"seed": 7, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler",
                                      "scheduler": "normal", "denoise": denoise}, id="sampler2")
    for src, out, inp in (("ckpt", "MODEL", "model"), ("positive", "CONDITIONING", "positive"),
                          ("negative", "CONDITIONING", "negative"), ("encode", "LATENT", "latent_image")):
        g.connect(src, out, "sampler2", inp)
    return g


def test_img2img_keeps_part_of_the_input(setup: Setup, baseline: Baseline) -> None:
    """denoise 0.5 starts half-way down the schedule from the encoded image, so the result stays
    much closer to that image's latent than a full (denoise 1) re-generation does."""
    ex = setup.executor()
    events: list[Event] = []
    report = ex.run(_img2img_graph(setup.name, 0.5), outputs=["encode", "sampler2"], on_event=events.append)
    report.raise_for_status()
    source = report.results["encode"]["LATENT"].samples
    half = report.results["sampler2"]["LATENT"].samples
    full_report = ex.run(_img2img_graph(setup.name, 1.0), outputs=["sampler2"])
    full = full_report.results["sampler2"]["LATENT"].samples
    assert _statuses(full_report)["encode"] == "cached"
    assert half.shape == source.shape == LATENT_SHAPE
    assert not torch.allclose(half, baseline.latent, atol=1e-2)  # differs from the txt2img result
    assert not torch.allclose(half, source, atol=1e-2)  # and was actually sampled
    assert (half - source).abs().mean() < 0.5 * (full - source).abs().mean()
    steps = [e.step for e in events if isinstance(e, NodeProgress) and e.node_id == "sampler2"]
    assert steps == [1, 2, 3, 4]  # still `steps` steps, on the lower part of a longer schedule


def test_inpainting_keeps_the_unmasked_latent_exactly(setup: Setup, baseline: Baseline) -> None:
    g = txt2img_graph(setup.name, seed=SEED, steps=STEPS)
    g.add_node("test.left_keep_mask", {"width": WIDTH, "height": HEIGHT, "split": WIDTH // 2}, id="mask")
    g.add_node("diffusion.set_latent_noise_mask", {}, id="masked")
    g.connect("sampler", "LATENT", "masked", "samples")
    g.connect("mask", "MASK", "masked", "mask")
    g.add_node("diffusion.ksampler", {"seed": 99, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler",
                                      "scheduler": "normal", "denoise": 1.0}, id="inpaint")
    for src, out, inp in (("ckpt", "MODEL", "model"), ("positive", "CONDITIONING", "positive"),
                          ("negative", "CONDITIONING", "negative"), ("masked", "LATENT", "latent_image")):
        g.connect(src, out, "inpaint", inp)
    report = setup.executor().run(g, outputs=["inpaint"])
    report.raise_for_status()
    out = report.results["inpaint"]["LATENT"].samples
    keep = WIDTH // 2 // 4  # latent columns left of the split (the 4x-downsampled mask is exactly 0 there)
    assert torch.equal(out[..., :keep], baseline.latent[..., :keep])
    assert (out[..., keep:] - baseline.latent[..., keep:]).abs().mean() > 0.1


def test_ksampler_advanced_full_window_equals_ksampler(setup: Setup, baseline: Baseline) -> None:
    g = txt2img_graph(setup.name, seed=SEED, steps=STEPS)
    for nid, end in (("adv", STEPS), ("adv_default_end", 10000)):
        g.add_node("diffusion.ksampler_advanced",
                   {"add_noise": "enable", "noise_seed": SEED, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler",
                    "scheduler": "normal", "start_at_step": 0, "end_at_step": end,
                    "return_with_leftover_noise": "disable"}, id=nid)
        for src, out, inp in (("ckpt", "MODEL", "model"), ("positive", "CONDITIONING", "positive"),
                              ("negative", "CONDITIONING", "negative"), ("latent", "LATENT", "latent_image")):
            g.connect(src, out, nid, inp)
    report = setup.executor().run(g, outputs=["adv", "adv_default_end"])
    report.raise_for_status()
    assert torch.equal(report.results["adv"]["LATENT"].samples, baseline.latent)
    assert torch.equal(report.results["adv_default_end"]["LATENT"].samples, baseline.latent)


def _advanced(g: Graph, nid: str, latent_src: str, *, add_noise: str, start: int, end: int, leftover: str) -> None:
    g.add_node("diffusion.ksampler_advanced",
               {"add_noise": add_noise, "noise_seed": SEED, "steps": STEPS, "cfg": 5.0, "sampler_name": "euler",
                "scheduler": "normal", "start_at_step": start, "end_at_step": end,
                "return_with_leftover_noise": leftover}, id=nid)
    for src, out, inp in (("ckpt", "MODEL", "model"), ("positive", "CONDITIONING", "positive"),
                          ("negative", "CONDITIONING", "negative"), (latent_src, "LATENT", "latent_image")):
        g.connect(src, out, nid, inp)


def test_two_stage_advanced_sampling_equals_one_pass(setup: Setup, baseline: Baseline) -> None:
    """Steps 0-2 returning their leftover noise, then steps 2-4 without adding noise, is the
    same euler trajectory as one 4-step pass (the usual base/refiner split)."""
    g = txt2img_graph(setup.name, seed=SEED, steps=STEPS)
    _advanced(g, "first", "latent", add_noise="enable", start=0, end=2, leftover="enable")
    _advanced(g, "second", "first", add_noise="disable", start=2, end=10000, leftover="disable")
    _advanced(g, "first_clean", "latent", add_noise="enable", start=0, end=2, leftover="disable")
    report = setup.executor().run(g, outputs=["first", "second", "first_clean"])
    report.raise_for_status()
    assert torch.equal(report.results["second"]["LATENT"].samples, baseline.latent)
    # Without leftover noise, stopping early ends with a full denoise (last sigma forced to 0) instead.
    leftover = report.results["first"]["LATENT"].samples
    clean = report.results["first_clean"]["LATENT"].samples
    assert not torch.allclose(leftover, clean, atol=1e-2)


def test_fp16_checkpoint_computes_in_fp32_on_cpu(setup: Setup) -> None:
    """An fp16 file runs in fp32 on the CPU: exactly what an fp32 file holding the same
    (fp16-rounded) values gives."""
    half = write_tiny_checkpoint(setup.models_dir, "sd1", name="tiny_sd1_fp16.safetensors", dtype=torch.float16)
    rounded = write_tiny_checkpoint(setup.models_dir, "sd1", name="tiny_sd1_rounded.safetensors")
    rounded_tensors = {k: v.half().float() if v.is_floating_point() else v for k, v in rounded.tensors.items()}
    write_checkpoint(rounded.path, {"": rounded_tensors}, rounded.metadata)
    assert half.path.stat().st_size < 0.6 * rounded.path.stat().st_size
    ex = setup.executor()
    results = []
    for ckpt in (half, rounded):
        report = ex.run(txt2img_graph(ckpt.name, seed=SEED, steps=STEPS), outputs=["ckpt", "sampler", "decode"])
        report.raise_for_status()
        model = report.results["ckpt"]["MODEL"]
        assert model.dtype == torch.float32 and next(model.unet.parameters()).dtype == torch.float32
        results.append(_outputs(report))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_prompt_longer_than_one_window(setup: Setup) -> None:
    """A 78-token prompt is encoded as two 77-token windows; guidance then pairs a 154-token
    positive with a 77-token negative (two model calls instead of one batch) and the second
    window changes the picture."""
    short = "cat " * 75  # exactly one window's 75 tokens
    ex = setup.executor()
    runs = {}
    for label, prompt in (("short", short), ("long", short + "a red dog")):
        report = ex.run(txt2img_graph(setup.name, prompt=prompt, seed=SEED, steps=STEPS),
                        outputs=["positive", "negative", "sampler"])
        report.raise_for_status()
        runs[label] = report.results
    long_ctx = runs["long"]["positive"]["CONDITIONING"].context
    short_ctx = runs["short"]["positive"]["CONDITIONING"].context
    assert long_ctx.shape[1] == 154 and short_ctx.shape[1] == 77
    assert runs["long"]["negative"]["CONDITIONING"].context.shape[1] == 77
    assert torch.equal(long_ctx[:, :77], short_ctx)
    a, b = (runs[k]["sampler"]["LATENT"].samples for k in ("short", "long"))
    assert not torch.allclose(a, b, atol=1e-2)


def test_replaced_checkpoint_file_is_reloaded(setup: Setup) -> None:
    """The loader's cache key includes the file's size and mtime: overwriting the file with other
    weights re-runs the loader (and everything after it) instead of serving the stale model."""
    ckpt = write_tiny_checkpoint(setup.models_dir, "sd1", name="tiny_sd1_replaced.safetensors")
    ex = setup.executor()
    graph = txt2img_graph(ckpt.name, seed=SEED, steps=STEPS)
    before, _ = _outputs(ex.run(graph, outputs=["sampler", "decode"]))
    stat = ckpt.path.stat()
    write_tiny_checkpoint(setup.models_dir, "sd1", name=ckpt.name, seed=5)
    os.utime(ckpt.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse clocks
    report = ex.run(graph, outputs=["sampler", "decode"])
    after, _ = _outputs(report)
    assert _statuses(report)["ckpt"] == "executed" and _statuses(report)["sampler"] == "executed"
    assert not torch.allclose(before, after, atol=1e-2)


def test_progress_events_carry_step_total_and_preview(baseline: Baseline) -> None:
    sampler_events = [e for e in baseline.progress if e.node_id == "sampler"]
    assert [(e.step, e.total) for e in sampler_events] == [(s, STEPS) for s in range(1, STEPS + 1)]
    for e in sampler_events:
        assert isinstance(e.preview, np.ndarray) and e.preview.dtype == np.uint8
        assert e.preview.shape == (HEIGHT // 4, WIDTH // 4, 3)
        assert e.preview.max() > e.preview.min()  # shows something


def test_cancel_mid_sampling_then_rerun_completes(setup: Setup, baseline: Baseline) -> None:
    ex = setup.executor()
    graph = txt2img_graph(setup.name, seed=SEED, steps=STEPS)
    token = CancelToken()
    seen: list[int] = []

    def on_event(event: Event) -> None:
        if isinstance(event, NodeProgress) and event.node_id == "sampler":
            seen.append(event.step)
            if len(seen) == 2:
                token.cancel()

    report = ex.run(graph, outputs=["sampler", "decode"], on_event=on_event, cancel=token)
    assert report.status == "cancelled"
    assert seen == [1, 2]  # stopped right after the step that asked
    statuses = _statuses(report)
    assert statuses["ckpt"] == statuses["positive"] == "executed"
    assert statuses["sampler"] != "executed" and statuses["decode"] != "executed"
    assert "sampler" not in report.results

    again = ex.run(graph, outputs=["sampler", "decode"])
    assert again.status == "ok"
    assert _statuses(again) == {"ckpt": "cached", "positive": "cached", "negative": "cached", "latent": "cached",
                                "sampler": "executed", "decode": "executed"}
    latent, image = _outputs(again)
    assert torch.equal(latent, baseline.latent) and torch.equal(image, baseline.image)


def test_missing_checkpoint_is_a_validation_error(setup: Setup) -> None:
    events: list[Event] = []
    with pytest.raises(WorkflowInvalid) as info:
        setup.executor().run(txt2img_graph("no_such_model.safetensors"), outputs=["decode"],
                             on_event=events.append)
    issues = [i for i in info.value.issues if i.node_id == "ckpt"]
    assert [i.input for i in issues] == ["ckpt_name"]
    assert "no_such_model.safetensors" in issues[0].message
    assert setup.name in issues[0].fix  # offers the files that do exist
    assert events == []  # nothing ran


def test_checkpoint_with_missing_unet_key_names_node_and_key(setup: Setup) -> None:
    report = setup.executor().run(txt2img_graph(setup.broken_name), outputs=["decode"])
    assert report.status == "error"
    err = report.error
    assert err is not None and err.node_id == "ckpt" and err.node_type == "diffusion.checkpoint_loader"
    assert err.input == "ckpt_name"
    assert "missing" in err.message and MISSING_KEY.removeprefix("model.diffusion_model.") in err.message
    assert setup.broken_name in err.message
    assert _statuses(report)["ckpt"] == "error" and _statuses(report)["sampler"] == "not_run"
