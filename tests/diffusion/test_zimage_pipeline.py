"""Z-Image end to end on tiny split files: our node graph vs diffusers' ZImagePipeline, loading, bad input.

The reference pipeline is assembled from the *same files*: transformers' Qwen3ForCausalLM holds the
encoder file's weights, a PreTrainedTokenizerFast reads the same tokenizer.json and applies Qwen3's
chat template (``enable_thinking=True``, as the pipeline does), diffusers' ZImageTransformer2DModel is
the transformer the DiT file was written from; same seed (the initial noise is passed in), same
sigmas (ComfyUI's "simple" schedule at ModelSamplingAuraFlow's shift 3, given to diffusers as
``sigmas`` for its scheduler to shift).  diffusers' ``guidance_scale`` g is ``pos + g (pos - neg)``,
which is CFG ``g + 1`` in ComfyUI's (and our) convention.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph.errors import WorkflowInvalid
from nodes.diffusion.sampling import initial_noise
from tests.diffusion.pipeline_fixtures import make_executor
from tests.diffusion.zimage_pipeline_fixtures import (
    QWEN3_CHAT_TEMPLATE,
    QWEN_SHAPE,
    QWEN_THETA,
    ZImageFiles,
    write_zimage_files,
    zimage_graph,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

PROMPT = "a small blue square on a white background"
SEED, STEPS, WIDTH, HEIGHT = 42, 4, 64, 48
REL = 1e-3  # the issue's bar for latents; everything is fp32


def rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = REL) -> None:
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


@pytest.fixture(scope="module")
def zimage(tmp_path_factory: pytest.TempPathFactory) -> ZImageFiles:
    torch.set_num_threads(1)
    return write_zimage_files(tmp_path_factory.mktemp("zimage") / "models")


def reference_pipeline(files: ZImageFiles):  # noqa: ANN201
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    td = files.models_dir / "text_encoders"
    sd = load_file(td / files.qwen3)
    cfg = transformers.Qwen3Config(vocab_size=sd["model.embed_tokens.weight"].shape[0], **QWEN_SHAPE,
                                   rope_parameters={"rope_type": "default", "rope_theta": QWEN_THETA})
    encoder = transformers.Qwen3ForCausalLM(cfg)
    encoder.load_state_dict(sd)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(td / files.tokenizer), pad_token="<|endoftext|>",
                                               chat_template=QWEN3_CHAT_TEMPLATE)
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=None,
                          text_encoder=encoder.eval(), tokenizer=tok, transformer=files.transformer)


def reference_latents(files: ZImageFiles, guidance_scale: float) -> torch.Tensor:
    pipe = reference_pipeline(files)
    noise = initial_noise((1, 16, HEIGHT // 8, WIDTH // 8), SEED)
    with torch.no_grad():
        return pipe(prompt=PROMPT, negative_prompt="", height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
                    guidance_scale=guidance_scale, latents=noise,
                    sigmas=np.linspace(1.0, 1.0 / STEPS, STEPS).tolist(), output_type="latent").images


@pytest.mark.parametrize("cfg", [1.0, 4.0], ids=["turbo_cfg1_zero_out", "cfg4_empty_negative"])
def test_txt2img_matches_zimage_pipeline(cfg: float, zimage: ZImageFiles, tmp_path: Path) -> None:
    executor = make_executor(zimage.models_dir, tmp_path / "out")
    graph = zimage_graph(zimage, prompt=PROMPT, seed=SEED, steps=STEPS, cfg=cfg, width=WIDTH, height=HEIGHT,
                         sampler="euler", negative=None if cfg == 1.0 else "")
    report = executor.run(graph, outputs=["unet", "aura", "positive", "sampler", "decode"])
    report.raise_for_status()
    model = report.results["aura"]["MODEL"]
    assert model.rules.name == "zimage" and (model.schedule.shift, model.schedule.multiplier) == (3.0, 1.0)
    assert report.results["unet"]["MODEL"].transformer.config.cap_feat_dim == QWEN_SHAPE["hidden_size"]
    cond = report.results["positive"]["CONDITIONING"]
    assert cond.pooled is None and cond.context.shape[-1] == QWEN_SHAPE["hidden_size"]
    ours = report.results["sampler"]["LATENT"].samples
    ref = reference_latents(zimage, guidance_scale=cfg - 1.0)
    assert ours.shape == ref.shape == (1, 16, HEIGHT // 8, WIDTH // 8)
    assert float(ours.std()) > 0.1
    rel_close(ours, ref)
    image = report.results["decode"]["IMAGE"]
    assert image.shape == (1, HEIGHT, WIDTH, 3) and float(image.std()) > 0.01


def test_prompt_features_are_the_pipelines(zimage: ZImageFiles, tmp_path: Path) -> None:
    """The caption is hidden_states[-2] of the templated prompt's real tokens, as ZImagePipeline.encode_prompt."""
    report = make_executor(zimage.models_dir, tmp_path / "out").run(zimage_graph(zimage, prompt=PROMPT),
                                                                     outputs=["positive"])
    report.raise_for_status()
    ours = report.results["positive"]["CONDITIONING"].context
    with torch.no_grad():
        (ref,), _ = reference_pipeline(zimage).encode_prompt(PROMPT, do_classifier_free_guidance=False)
    assert ours.shape == (1, ref.shape[0], ref.shape[1])
    rel_close(ours[0], ref, 1e-4)


def test_shift_and_sampler_change_the_result(zimage: ZImageFiles, tmp_path: Path) -> None:
    executor = make_executor(zimage.models_dir, tmp_path / "out")
    out = {}
    for key, kw in {"base": {}, "shift": {"shift": 1.0}, "euler": {"sampler": "euler"}}.items():
        report = executor.run(zimage_graph(zimage, steps=3, **kw), outputs=["sampler"])
        report.raise_for_status()
        out[key] = report.results["sampler"]["LATENT"].samples
    assert float((out["base"] - out["shift"]).abs().max()) > 1e-3
    assert float((out["base"] - out["euler"]).abs().max()) > 1e-3


@pytest.mark.parametrize(("prefixed", "layout"), [(False, "comfy"), (True, "diffusers")])
def test_other_file_layouts_load_the_same(prefixed: bool, layout: str, zimage: ZImageFiles, tmp_path: Path) -> None:
    from nodes.diffusion.split_files import identify_file, load_diffusion_model_file

    other = write_zimage_files(tmp_path / "other", prefixed=prefixed, layout=layout)
    ident = identify_file(other.models_dir / "diffusion_models" / other.unet)
    assert ident.kind == "zimage" and f"{layout} layout" in ident.description
    a = load_diffusion_model_file(other.models_dir / "diffusion_models" / other.unet)
    b = load_diffusion_model_file(zimage.models_dir / "diffusion_models" / zimage.unet)
    assert a.transformer.config == b.transformer.config
    for (ka, va), (kb, vb) in zip(a.transformer.state_dict().items(), b.transformer.state_dict().items(),
                                  strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_files_are_identified(zimage: ZImageFiles) -> None:
    from nodes.diffusion.split_files import identify_file

    qwen = identify_file(zimage.models_dir / "text_encoders" / zimage.qwen3)
    assert qwen.kind == "qwen3" and "Qwen3 text encoder (width 64, 3 layers)" in qwen.description
    dit = identify_file(zimage.models_dir / "diffusion_models" / zimage.unet)
    assert dit.kind == "zimage" and dit.info["text_width"] == 64


# ------------------------------------------------------------------ bad input


def _issues(executor, graph, outputs=("decode",)) -> list:  # noqa: ANN001
    with pytest.raises(WorkflowInvalid) as info:
        executor.run(graph, outputs=list(outputs))
    return info.value.issues


@pytest.fixture(scope="module")
def mixed(zimage: ZImageFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Z-Image set plus a T5 (with tokenizer), a CLIP-L and an SD1 checkpoint, as a user's folders hold them."""
    from tests.diffusion.flux_pipeline_fixtures import write_flux_files
    from tests.diffusion.pipeline_fixtures import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("zimage_mixed")
    models = root / "models"
    shutil.copytree(zimage.models_dir, models)
    flux = write_flux_files(root / "flux", guidance=True)
    for name in (flux.t5, "tiny_t5xxl.tokenizer.json", flux.clip_l):
        shutil.copy(flux.models_dir / "text_encoders" / name, models / "text_encoders" / name)
    write_tiny_checkpoint(models, "sd1")
    return models


def test_t5_where_the_qwen3_is_expected(zimage: ZImageFiles, mixed: Path, tmp_path: Path) -> None:
    executor = make_executor(mixed, tmp_path / "out")
    graph = zimage_graph(zimage)
    graph.nodes["clip"].values["clip_name"] = "tiny_t5xxl.safetensors"
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("clip", "clip_name")]
    assert "T5 text encoder" in issues[0].message and "lumina2" in issues[0].message
    assert "Qwen3-4B" in issues[0].message and "qwen_3_4b.safetensors" in issues[0].fix
    assert len(executor.cache) == 0


def test_qwen3_with_another_clip_type_or_loader(zimage: ZImageFiles, mixed: Path, tmp_path: Path) -> None:
    executor = make_executor(mixed, tmp_path / "out")
    graph = zimage_graph(zimage)
    graph.nodes["clip"].values["type"] = "stable_diffusion"
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("clip", "clip_name")]
    assert "Qwen3" in issues[0].message and "type lumina2" in issues[0].fix
    graph = zimage_graph(zimage)
    graph.add_node("diffusion.dual_clip_loader", {"clip_name1": "tiny_clip_l.safetensors",
                                                  "clip_name2": zimage.qwen3, "type": "flux"}, id="dual")
    graph.connect("dual", "CLIP", "positive", "clip")
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("dual", "clip_name2")]
    assert "Qwen3" in issues[0].message and "lumina2" in issues[0].fix


def test_missing_tokenizer_json(zimage: ZImageFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(zimage.models_dir, models)
    (models / "text_encoders" / zimage.tokenizer).unlink()
    executor = make_executor(models, tmp_path / "out")
    issues = _issues(executor, zimage_graph(zimage))
    assert [(i.node_id, i.input) for i in issues] == [("clip", "clip_name")]
    assert "no Qwen3 tokenizer" in issues[0].message and zimage.qwen3 in issues[0].message
    assert "tiny_qwen_3_4b.tokenizer.json" in issues[0].fix and "tokenizer.json" in issues[0].fix
    assert len(executor.cache) == 0


def test_qwen_vocabulary_uses_the_built_in_tokenizer(zimage: ZImageFiles, tmp_path: Path) -> None:
    """A Qwen3 encoder whose embedding has Qwen's 151,936 rows needs no tokenizer.json: validation passes and
    the prompt is tokenised by the tokenizer built from the shipped merges."""
    from nodes.diffusion.models.qwen3 import shipped_qwen_tokenizer
    from tests.diffusion.text_fixtures import grow_embedding

    models = tmp_path / "models"
    shutil.copytree(zimage.models_dir, models)
    (models / "text_encoders" / zimage.tokenizer).unlink()
    grow_embedding(models / "text_encoders" / zimage.qwen3, "model.embed_tokens.weight", 151936)
    executor = make_executor(models, tmp_path / "out")
    report = executor.run(zimage_graph(zimage), outputs=["clip", "positive"])  # WorkflowInvalid on any issue
    report.raise_for_status()
    assert report.results["clip"]["CLIP"].tokenizer._tok is shipped_qwen_tokenizer()
    assert torch.isfinite(report.results["positive"]["CONDITIONING"].context).all()


def test_zimage_model_with_an_sd_vae(zimage: ZImageFiles, mixed: Path, tmp_path: Path) -> None:
    """An SD VAE (4-channel) to decode Z-Image's 16-channel latent: refused at validation, before the
    text encoder, the DiT or the sampler run, naming VAE Decode's vae input, the file and the fix."""
    models = tmp_path / "models"
    shutil.copytree(mixed, models)
    sd = load_file(models / "checkpoints" / "tiny_sd1.safetensors")
    save_file({k.removeprefix("first_stage_model."): v for k, v in sd.items() if k.startswith("first_stage_model.")},
              models / "vae" / "sd_vae.safetensors")
    graph = zimage_graph(zimage, steps=1)
    graph.nodes["vae"].values["vae_name"] = "sd_vae.safetensors"
    executor = make_executor(models, tmp_path / "out")
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("decode", "vae")]
    assert "'sd_vae.safetensors' is a VAE (4-channel latents)" in issues[0].message
    assert "16 channels" in issues[0].message and "ae.safetensors" in issues[0].fix
    assert len(executor.cache) == 0
    # the right VAE validates and runs
    report = executor.run(zimage_graph(zimage, steps=1), outputs=["decode"])
    report.raise_for_status()


def test_sd_prompt_given_to_zimage(zimage: ZImageFiles, mixed: Path, tmp_path: Path) -> None:
    executor = make_executor(mixed, tmp_path / "out")
    graph = zimage_graph(zimage, steps=1)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_sd1.safetensors"}, id="sd")
    graph.connect("sd", "CLIP", "positive", "clip")
    report = executor.run(graph, outputs=["sampler"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("sampler", "positive")
    assert "Z-Image" in report.error.message and "Qwen3" in report.error.message
    assert "lumina2" in report.error.message


def test_zimage_file_in_the_text_encoder_slot(zimage: ZImageFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(zimage.models_dir, models)
    shutil.copy(models / "diffusion_models" / zimage.unet, models / "text_encoders" / "dit_by_mistake.safetensors")
    shutil.copy(models / "text_encoders" / zimage.qwen3, models / "diffusion_models" / "qwen_by_mistake.safetensors")
    executor = make_executor(models, tmp_path / "out")
    graph = zimage_graph(zimage)
    graph.nodes["clip"].values["clip_name"] = "dit_by_mistake.safetensors"
    graph.nodes["unet"].values["unet_name"] = "qwen_by_mistake.safetensors"
    issues = _issues(executor, graph)
    assert sorted((i.node_id, i.input) for i in issues) == [("clip", "clip_name"), ("unet", "unet_name")]
    by_node = {i.node_id: i for i in issues}
    assert "Z-Image diffusion model" in by_node["clip"].message and "Load Diffusion Model" in by_node["clip"].fix
    assert "Qwen3" in by_node["unet"].message and "lumina2" in by_node["unet"].fix


def test_lora_loader_node_patches_the_zimage_model_and_its_qwen3(zimage: ZImageFiles, tmp_path: Path) -> None:
    """A LoRA in diffusers naming (transformer q/k/v slices) plus a kohya text-encoder layer: the node
    changes the result; at strength 0 it is the base result; the cached base model stays unpatched."""
    models = tmp_path / "models"
    shutil.copytree(zimage.models_dir, models)
    (models / "loras").mkdir()
    g = torch.Generator().manual_seed(0)
    lora = {}
    for name in ("layers.0.attention.to_q", "layers.1.attention.to_v", "layers.0.feed_forward.w1"):
        rows = 170 if name.endswith("w1") else 64
        lora[f"transformer.{name}.lora_A.weight"] = 0.3 * torch.randn(2, 64, generator=g)
        lora[f"transformer.{name}.lora_B.weight"] = 0.3 * torch.randn(rows, 2, generator=g)
    lora["lora_te_model_layers_0_self_attn_q_proj.lora_down.weight"] = 0.3 * torch.randn(2, 64, generator=g)
    lora["lora_te_model_layers_0_self_attn_q_proj.lora_up.weight"] = 0.3 * torch.randn(128, 2, generator=g)
    save_file(lora, models / "loras" / "tiny_zimage_lora.safetensors")
    executor = make_executor(models, tmp_path / "out")

    def run(strength: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        graph = zimage_graph(zimage, steps=2)
        if strength is not None:
            graph.add_node("diffusion.lora_loader", {"lora_name": "tiny_zimage_lora.safetensors",
                                                     "strength_model": strength, "strength_clip": strength}, id="lora")
            graph.connect("unet", "MODEL", "lora", "model")
            graph.connect("clip", "CLIP", "lora", "clip")
            graph.connect("lora", "MODEL", "aura", "model")
            graph.connect("lora", "CLIP", "positive", "clip")
        report = executor.run(graph, outputs=["sampler", "positive"])
        report.raise_for_status()
        return report.results["sampler"]["LATENT"].samples, report.results["positive"]["CONDITIONING"].context

    base, base_ctx = run(None)
    patched, patched_ctx = run(0.8)
    assert float((patched - base).abs().max()) > 1e-4 and float((patched_ctx - base_ctx).abs().max()) > 1e-4
    zero, zero_ctx = run(0.0)
    assert torch.equal(zero, base) and torch.equal(zero_ctx, base_ctx)
    again, _ = run(None)
    assert torch.equal(again, base)


def test_batch_with_a_real_negative(zimage: ZImageFiles, tmp_path: Path) -> None:
    """A batch of 2 at CFG 3 with a negative prompt of another length than the positive: the first
    item is the batch-of-1 result (same seed stream), the second differs (its own noise)."""
    executor = make_executor(zimage.models_dir, tmp_path / "out")
    out = []
    for batch in (1, 2):
        graph = zimage_graph(zimage, steps=2, cfg=3.0, negative="blurry, low quality, extra fingers")
        graph.nodes["latent"].values["batch_size"] = batch
        report = executor.run(graph, outputs=["sampler"])
        report.raise_for_status()
        out.append(report.results["sampler"]["LATENT"].samples)
    assert out[1].shape == (2, 16, HEIGHT // 8, WIDTH // 8)
    rel_close(out[1][:1], out[0], 1e-4)
    assert float((out[1][1] - out[1][0]).abs().max()) > 1e-2
