"""SD3.5 end to end on tiny split files: our node graph vs diffusers' StableDiffusion3Pipeline, bad input.

The reference pipeline is assembled from the *same files*: transformers' CLIPTextModelWithProjection
(twice) and T5EncoderModel hold the text-encoder weights, diffusers' SD3Transformer2DModel the
transformer, the tokenizers read the same vocabularies (bigG pads with "!", as SD3's tokenizer_2);
same seed (the initial noise is passed in), same sigmas (ComfyUI's "simple" schedule at shift 3,
given to diffusers as ``sigmas``), CFG with the empty negative prompt.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph.errors import WorkflowInvalid
from nodes.diffusion.sampling import initial_noise
from nodes.diffusion.text.tokenizer import default_tokenizer
from tests.diffusion.flux_pipeline_fixtures import flux_graph, write_flux_files
from tests.diffusion.pipeline_fixtures import make_executor
from tests.diffusion.sd3_pipeline_fixtures import (
    CLIP_G_WIDTH,
    CLIP_L_WIDTH,
    T5_SHAPE,
    SD3Files,
    sd3_graph,
    write_sd3_files,
)
from tests.diffusion.text_fixtures import MAX_POS, VOCAB, write_hf_tokenizer_files

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

PROMPT = "a small blue square on a white background"
SEED, STEPS, WIDTH, HEIGHT, CFG = 42, 4, 64, 48, 4.5
REL = 1e-3  # the issue's bar for latents; everything is fp32


def rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = REL) -> None:
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> SD3Files:
    return write_sd3_files(tmp_path_factory.mktemp("sd3") / "models")


@pytest.fixture(scope="module")
def clip_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clip_vocab")
    write_hf_tokenizer_files(default_tokenizer(), d)
    return d


def _load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Load a HF-layout file into a transformers model whatever its prefix convention (4.x/5.x)."""
    own = set(model.state_dict())
    mapped = {k if k in own else k.removeprefix("text_model."): v for k, v in sd.items()}
    result = model.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys and all("position_ids" in k for k in result.missing_keys), result
    return model.eval()


def _clip(path: Path, width: int) -> torch.nn.Module:
    cfg = transformers.CLIPTextConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2,
                                      num_attention_heads=width // 64, vocab_size=VOCAB,
                                      max_position_embeddings=MAX_POS, hidden_act="quick_gelu", projection_dim=width)
    return _load_into(transformers.CLIPTextModelWithProjection(cfg), load_file(path))


def reference_latents(files: SD3Files, clip_vocab_dir: Path, *, with_t5: bool = True) -> torch.Tensor:
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    td = files.models_dir / "text_encoders"
    t5 = None
    if with_t5:
        t5_sd = load_file(td / files.t5)
        t5 = transformers.T5EncoderModel(transformers.T5Config(vocab_size=t5_sd["shared.weight"].shape[0],
                                                               **T5_SHAPE))
        t5.load_state_dict(t5_sd, strict=False)
        t5.tie_weights()
        t5.eval()
    tok = transformers.CLIPTokenizer.from_pretrained(str(clip_vocab_dir), model_max_length=MAX_POS)
    tok_g = transformers.CLIPTokenizer.from_pretrained(str(clip_vocab_dir), model_max_length=MAX_POS, pad_token="!")
    pipe = StableDiffusion3Pipeline(
        transformer=files.transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=None,
        text_encoder=_clip(td / files.clip_l, CLIP_L_WIDTH), tokenizer=tok,
        text_encoder_2=_clip(td / files.clip_g, CLIP_G_WIDTH), tokenizer_2=tok_g,
        text_encoder_3=t5, tokenizer_3=transformers.AutoTokenizer.from_pretrained(str(td / "_t5tok")) if t5 else None)
    noise = initial_noise((1, 16, HEIGHT // 8, WIDTH // 8), SEED)
    with torch.no_grad():
        return pipe(prompt=PROMPT, negative_prompt="", height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
                    guidance_scale=CFG, latents=noise, sigmas=np.linspace(1.0, 1.0 / STEPS, STEPS).tolist(),
                    max_sequence_length=77, output_type="latent").images


@pytest.mark.parametrize("with_t5", [True, False], ids=["three_encoders", "t5_missing"])
def test_txt2img_matches_stable_diffusion_3_pipeline(with_t5: bool, sd3: SD3Files, clip_vocab_dir: Path,
                                                     tmp_path: Path) -> None:
    torch.set_num_threads(1)
    executor = make_executor(sd3.models_dir, tmp_path / "out")
    names = (sd3.clip_l, sd3.clip_g, sd3.t5 if with_t5 else None)
    graph = sd3_graph(sd3, prompt=PROMPT, seed=SEED, steps=STEPS, cfg=CFG, width=WIDTH, height=HEIGHT,
                      clip_names=names)
    report = executor.run(graph, outputs=["unet", "sampler", "decode"])
    report.raise_for_status()
    model = report.results["unet"]["MODEL"]
    assert model.rules.name == "sd3" and model.schedule.shift == 3.0
    assert model.transformer.config.qk_norm and model.transformer.config.attn2_layers == (0,)
    ours = report.results["sampler"]["LATENT"].samples
    ref = reference_latents(sd3, clip_vocab_dir, with_t5=with_t5)
    assert ours.shape == ref.shape == (1, 16, HEIGHT // 8, WIDTH // 8)
    assert float(ours.std()) > 0.1
    rel_close(ours, ref)
    image = report.results["decode"]["IMAGE"]
    assert image.shape == (1, HEIGHT, WIDTH, 3) and float(image.std()) > 0.01


def test_shift_changes_the_result(sd3: SD3Files, tmp_path: Path) -> None:
    executor = make_executor(sd3.models_dir, tmp_path / "out")
    out = []
    for shift in (3.0, 1.0):
        report = executor.run(sd3_graph(sd3, shift=shift, steps=2), outputs=["sampler"])
        report.raise_for_status()
        out.append(report.results["sampler"]["LATENT"].samples)
    assert float((out[0] - out[1]).abs().max()) > 1e-3


def test_unprefixed_mmdit_file_loads_the_same(sd3: SD3Files, tmp_path: Path) -> None:
    from nodes.diffusion.split_files import identify_file, load_diffusion_model_file

    bare = write_sd3_files(tmp_path / "bare", prefixed=False)
    ident = identify_file(bare.models_dir / "diffusion_models" / bare.unet)
    assert ident.kind == "sd3" and "SD3.5-medium" in ident.description
    a = load_diffusion_model_file(bare.models_dir / "diffusion_models" / bare.unet)
    b = load_diffusion_model_file(sd3.models_dir / "diffusion_models" / sd3.unet)
    assert a.transformer.config == b.transformer.config
    for (ka, va), (kb, vb) in zip(a.transformer.state_dict().items(), b.transformer.state_dict().items(),
                                  strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_vae_decode_follows_the_model_family_when_the_file_does_not_tell(sd3: SD3Files, tmp_path: Path) -> None:
    """The 16-channel VAE named neutrally decodes SD3 latents with SD3's scaling; the same file named
    ``sd3_vae`` gets SD3's scaling from its name; both decode the sampled latent to the same image."""
    from nodes.diffusion.checkpoint import load_vae_file

    models = tmp_path / "models"
    shutil.copytree(sd3.models_dir, models)
    shutil.copy(models / "vae" / sd3.vae, models / "vae" / "sd3_vae.safetensors")
    named = load_vae_file(models / "vae" / "sd3_vae.safetensors")
    guessed = load_vae_file(models / "vae" / sd3.vae)
    assert (named.vae.config.scaling_factor, named.vae.config.shift_factor) == (1.5305, 0.0609)
    assert not named.scaling_guessed and guessed.scaling_guessed
    assert guessed.vae.config.scaling_factor == 0.3611  # FLUX's unless told: the model family decides at decode
    executor = make_executor(models, tmp_path / "out")
    images = []
    for vae in (sd3.vae, "sd3_vae.safetensors"):
        graph = sd3_graph(sd3, steps=2)
        graph.nodes["vae"].values["vae_name"] = vae
        report = executor.run(graph, outputs=["decode"])
        report.raise_for_status()
        images.append(report.results["decode"]["IMAGE"])
    torch.testing.assert_close(images[0], images[1], rtol=1e-4, atol=1e-4)


def test_clip_loader_type_sd3_gives_zeros_for_the_other_encoders(sd3: SD3Files, tmp_path: Path) -> None:
    executor = make_executor(sd3.models_dir, tmp_path / "out")
    graph = sd3_graph(sd3, steps=1)
    graph.add_node("diffusion.clip_loader", {"clip_name": sd3.t5, "type": "sd3"}, id="t5only")
    graph.connect("t5only", "CLIP", "positive", "clip")
    report = executor.run(graph, outputs=["positive"])
    report.raise_for_status()
    cond = report.results["positive"]["CONDITIONING"]
    assert cond.context.shape == (1, 77 + 77, T5_SHAPE["d_model"])
    assert not cond.context[:, :77].any() and cond.context[:, 77:].abs().sum() > 0
    assert cond.pooled.shape == (1, 768 + 1280) and not cond.pooled.any()  # released widths, zeros
    # the zeros have the released widths, which this tiny model does not take: the sampler says so
    report = executor.run(graph, outputs=["sampler"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("sampler", "positive")
    assert "TripleCLIPLoader" in report.error.message


# ------------------------------------------------------------------ bad input


def _issues(executor, graph, outputs=("decode",)) -> list:  # noqa: ANN001
    with pytest.raises(WorkflowInvalid) as info:
        executor.run(graph, outputs=list(outputs))
    return info.value.issues


def test_flux_text_encoder_in_an_sd3_slot(sd3: SD3Files, tmp_path: Path) -> None:
    executor = make_executor(sd3.models_dir, tmp_path / "out")
    graph = sd3_graph(sd3, clip_names=(sd3.t5, sd3.clip_g, sd3.t5))
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("clip", "clip_name1")]
    assert "T5" in issues[0].message and "clip_l slot" in issues[0].message and "CLIP-L" in issues[0].fix
    graph = sd3_graph(sd3, clip_names=(sd3.clip_l, sd3.clip_g, sd3.clip_l))
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("clip", "clip_name3")]
    assert "CLIP" in issues[0].message and "T5-XXL" in issues[0].fix
    assert len(executor.cache) == 0


def test_flux_model_with_sd3_encoders_and_sd3_model_with_flux_encoders(sd3: SD3Files, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(sd3.models_dir, models)
    flux = write_flux_files(tmp_path / "flux", guidance=True)
    for sub, name in (("diffusion_models", flux.unet), ("text_encoders", flux.clip_l), ("text_encoders", flux.t5)):
        shutil.copy(flux.models_dir / sub / name, models / sub / ("flux_" + name))
    shutil.copy(flux.models_dir / "text_encoders" / "tiny_t5xxl.tokenizer.json",
                models / "text_encoders" / "flux_tiny_t5xxl.tokenizer.json")
    executor = make_executor(models, tmp_path / "out")
    # FLUX transformer where the SD3 graph expects SD3: SD3 prompt given to a FLUX model
    graph = sd3_graph(sd3, steps=1)
    graph.nodes["unet"].values["unet_name"] = "flux_" + flux.unet
    report = executor.run(graph, outputs=["sampler"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("sampler", "positive")
    assert "FLUX" in report.error.message and "TripleCLIPLoader" not in report.error.message
    assert "DualCLIPLoader" in report.error.message
    # SD3 transformer with FLUX's DualCLIPLoader pair
    mixed = replace(flux, models_dir=models, unet=sd3.unet, clip_l="flux_" + flux.clip_l, t5="flux_" + flux.t5,
                    vae=sd3.vae)
    graph = flux_graph(mixed, steps=1, shift_for_size=False)
    report = executor.run(graph, outputs=["sampler"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("sampler", "positive")
    assert "SD3" in report.error.message and "TripleCLIPLoader" in report.error.message


def test_sd3_model_with_model_sampling_flux_is_refused(sd3: SD3Files, tmp_path: Path) -> None:
    graph = sd3_graph(sd3, steps=1)
    graph.add_node("diffusion.model_sampling_flux", {"max_shift": 1.15, "base_shift": 0.5, "width": 64,
                                                     "height": 48}, id="msf")
    graph.connect("unet", "MODEL", "msf", "model")
    graph.connect("msf", "MODEL", "sampler", "model")
    report = make_executor(sd3.models_dir, tmp_path / "out").run(graph, outputs=["sampler"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("msf", "model")
    assert "FLUX" in report.error.message


@pytest.mark.parametrize("with_text", [True, False], ids=["with_text_encoders", "model_and_vae_only"])
def test_all_in_one_sd3_file_loads_through_the_checkpoint_loader(with_text: bool, sd3: SD3Files,
                                                                 tmp_path: Path) -> None:
    """ComfyUI's SD3 all-in-one layout (with text encoders, or Stability's model + VAE file): same latents
    and image as the split files."""
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    parts = {"": sd3.models_dir / "diffusion_models" / sd3.unet,  # already under model.diffusion_model.
             "first_stage_model.": sd3.models_dir / "vae" / sd3.vae}
    if with_text:
        parts.update({"text_encoders.clip_l.transformer.": sd3.models_dir / "text_encoders" / sd3.clip_l,
                      "text_encoders.clip_g.transformer.": sd3.models_dir / "text_encoders" / sd3.clip_g,
                      "text_encoders.t5xxl.transformer.": sd3.models_dir / "text_encoders" / sd3.t5})
    flat = {prefix + k: v for prefix, path in parts.items() for k, v in load_file(path).items()}
    save_file(flat, models / "checkpoints" / "tiny_sd3_aio.safetensors")
    tok = (sd3.models_dir / "text_encoders" / "tiny_t5xxl.tokenizer.json").read_text()
    (models / "checkpoints" / "tiny_sd3_aio.tokenizer.json").write_text(tok)
    for sub in ("text_encoders", "vae"):
        shutil.copytree(sd3.models_dir / sub, models / sub)

    split = make_executor(sd3.models_dir, tmp_path / "out2").run(sd3_graph(sd3, steps=2),
                                                                 outputs=["sampler", "decode"])
    split.raise_for_status()
    graph = sd3_graph(sd3, steps=2)
    graph.remove_node("unet")
    graph.remove_node("vae")
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_sd3_aio.safetensors"}, id="ckpt")
    graph.connect("ckpt", "MODEL", "msd3", "model")
    graph.connect("ckpt", "VAE", "decode", "vae")
    if with_text:
        graph.remove_node("clip")
        for n in ("positive", "negative"):
            graph.connect("ckpt", "CLIP", n, "clip")
    report = make_executor(models, tmp_path / "out").run(graph, outputs=["ckpt", "sampler", "decode"])
    report.raise_for_status()
    assert (report.results["ckpt"]["CLIP"] is None) is not with_text
    # same numbers, other memory layout (one flat file): kernels may round differently in the last bits
    rel_close(report.results["sampler"]["LATENT"].samples, split.results["sampler"]["LATENT"].samples)
    rel_close(report.results["decode"]["IMAGE"], split.results["decode"]["IMAGE"])


def test_mmdit_file_in_checkpoints_and_t5_in_diffusion_models(sd3: SD3Files, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(sd3.models_dir, models)
    (models / "checkpoints").mkdir()
    shutil.copy(models / "diffusion_models" / sd3.unet, models / "checkpoints" / "sd3_medium_only.safetensors")
    shutil.copy(models / "text_encoders" / sd3.t5, models / "diffusion_models" / "t5_by_mistake.safetensors")
    executor = make_executor(models, tmp_path / "out")
    graph = sd3_graph(sd3)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "sd3_medium_only.safetensors"}, id="ckpt")
    graph.connect("ckpt", "MODEL", "msd3", "model")
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("ckpt", "ckpt_name")]
    assert "SD3.5-medium (MMDiT-X) MMDiT" in issues[0].message and "Load Diffusion Model" in issues[0].fix
    graph = sd3_graph(sd3)
    graph.nodes["unet"].values["unet_name"] = "t5_by_mistake.safetensors"
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("unet", "unet_name")]
    assert "T5" in issues[0].message and "TripleCLIPLoader" in issues[0].fix
    assert len(executor.cache) == 0


def test_dual_clip_loader_type_sd3_equals_triple_with_the_third_empty(sd3: SD3Files, tmp_path: Path) -> None:
    executor = make_executor(sd3.models_dir, tmp_path / "out")
    graph = sd3_graph(sd3, clip_names=(sd3.clip_l, sd3.clip_g, None))
    graph.add_node("diffusion.dual_clip_loader", {"clip_name1": sd3.clip_g, "clip_name2": sd3.clip_l,
                                                  "type": "sd3"}, id="dual")
    graph.add_node("diffusion.text_encode", {"text": graph.nodes["positive"].values["text"]}, id="dual_text")
    graph.connect("dual", "CLIP", "dual_text", "clip")
    report = executor.run(graph, outputs=["positive", "dual_text"])
    report.raise_for_status()
    a, b = report.results["positive"]["CONDITIONING"], report.results["dual_text"]["CONDITIONING"]
    assert torch.equal(a.context, b.context) and torch.equal(a.pooled, b.pooled)
    assert not a.context[:, 77:].any()  # no T5: zeros
    graph.nodes["dual"].values["clip_name1"] = sd3.clip_l
    issues = _issues(executor, graph, ("dual_text",))
    assert [(i.node_id, i.input) for i in issues] == [("dual", "clip_name2")]
    assert "same kind" in issues[0].message and "TripleCLIPLoader" in issues[0].fix


def test_img2img_with_a_neutrally_named_vae_equals_the_sd3_named_one(sd3: SD3Files, tmp_path: Path) -> None:
    """VAE Encode with a guessed (FLUX) scaling marks the latent; the SD3 sampler re-expresses it in SD3's
    scaling, so the whole img2img matches the run with the VAE whose name says sd3."""
    models = tmp_path / "models"
    shutil.copytree(sd3.models_dir, models)
    shutil.copy(models / "vae" / sd3.vae, models / "vae" / "sd3_vae.safetensors")
    executor = make_executor(models, tmp_path / "out")
    images = []
    for vae in (sd3.vae, "sd3_vae.safetensors"):
        graph = sd3_graph(sd3, steps=2)  # txt2img -> decode: the source image (same for both VAE names)
        graph.nodes["vae"].values["vae_name"] = vae
        graph.add_node("diffusion.vae_encode", {}, id="enc")
        graph.add_node("diffusion.ksampler", {"seed": 7, "steps": 3, "cfg": 4.5, "sampler_name": "euler",
                                              "scheduler": "simple", "denoise": 0.6}, id="s2")
        graph.add_node("diffusion.vae_decode", {}, id="d2")
        graph.connect("decode", "IMAGE", "enc", "pixels")
        graph.connect("vae", "VAE", "enc", "vae")
        for src, out, dst, inp in (("msd3", "MODEL", "s2", "model"), ("positive", "CONDITIONING", "s2", "positive"),
                                   ("negative", "CONDITIONING", "s2", "negative"),
                                   ("enc", "LATENT", "s2", "latent_image"),
                                   ("s2", "LATENT", "d2", "samples"), ("vae", "VAE", "d2", "vae")):
            graph.connect(src, out, dst, inp)
        report = executor.run(graph, outputs=["d2"])
        report.raise_for_status()
        images.append(report.results["d2"]["IMAGE"])
    rel_close(images[0], images[1])
