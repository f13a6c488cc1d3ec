"""FLUX.1 end to end on tiny split files: our node graph vs diffusers' FluxPipeline, loaders, fp8, bad input.

The reference pipeline is assembled from the *same files*: transformers' CLIPTextModel and
T5EncoderModel hold the text-encoder weights, diffusers' FluxTransformer2DModel the
transformer, the tokenizers read the same vocabularies; same seed (the initial noise is
passed in), same sigmas.  dev (guidance embedding, BFL keys, resolution shift) and
schnell (no guidance embedding, diffusers keys, fixed shift) are both covered.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph.errors import WorkflowInvalid
from nodes.diffusion.sampling import initial_noise
from nodes.diffusion.text.tokenizer import default_tokenizer
from tests.diffusion.flux_fixtures import pack_latents, unpack_latents
from tests.diffusion.flux_pipeline_fixtures import CLIP_WIDTH, FluxFiles, flux_graph, write_flux_files
from tests.diffusion.pipeline_fixtures import make_executor, write_tiny_checkpoint
from tests.diffusion.text_fixtures import MAX_POS, VOCAB, write_hf_tokenizer_files

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

PROMPT = "a small blue square on a white background"
SEED, STEPS, WIDTH, HEIGHT = 42, 4, 64, 48
REL = 1e-3  # the issue's bar for latents; fp32 everywhere, observed ~1e-6


def rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = REL) -> None:
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * float(expected.abs().max()))


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> FluxFiles:
    return write_flux_files(tmp_path_factory.mktemp("flux_dev") / "models", guidance=True, layout="bfl")


@pytest.fixture(scope="module")
def schnell(tmp_path_factory: pytest.TempPathFactory) -> FluxFiles:
    return write_flux_files(tmp_path_factory.mktemp("flux_schnell") / "models", guidance=False, layout="diffusers",
                            seed=5)


@pytest.fixture(scope="module")
def clip_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clip_vocab")
    write_hf_tokenizer_files(default_tokenizer(), d)
    return d


def reference_pipeline(files: FluxFiles, clip_vocab_dir: Path):
    """diffusers' FluxPipeline built from the files of ``files`` (no VAE: latents are compared)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    td = files.models_dir / "text_encoders"
    clip_cfg = transformers.CLIPTextConfig(hidden_size=CLIP_WIDTH, intermediate_size=4 * CLIP_WIDTH,
                                           num_hidden_layers=2, num_attention_heads=1, vocab_size=VOCAB,
                                           max_position_embeddings=MAX_POS, hidden_act="quick_gelu")
    clip = transformers.CLIPTextModel(clip_cfg).eval()
    result = clip.load_state_dict({k.removeprefix("text_model."): v for k, v in load_file(td / files.clip_l).items()},
                                  strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result
    t5_sd = load_file(td / files.t5)
    t5_cfg = transformers.T5Config(vocab_size=t5_sd["shared.weight"].shape[0], d_model=32, d_kv=8, d_ff=48,
                                   num_layers=2, num_heads=4, relative_attention_num_buckets=32,
                                   feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    t5 = transformers.T5EncoderModel(t5_cfg).eval()
    result = t5.load_state_dict(t5_sd, strict=False)
    assert not result.missing_keys or result.missing_keys == ["encoder.embed_tokens.weight"], result
    t5.tie_weights()
    if files.guidance:
        scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                    base_image_seq_len=256, max_image_seq_len=4096)
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    clip_tokenizer = transformers.CLIPTokenizer.from_pretrained(str(clip_vocab_dir), model_max_length=MAX_POS)
    return FluxPipeline(scheduler=scheduler, vae=None, text_encoder=clip, tokenizer=clip_tokenizer,
                        text_encoder_2=t5, tokenizer_2=transformers.AutoTokenizer.from_pretrained(str(td / "_t5tok")),
                        transformer=files.transformer)


def reference_latents(files: FluxFiles, clip_vocab_dir: Path, guidance: float) -> torch.Tensor:
    pipe = reference_pipeline(files, clip_vocab_dir)
    noise = initial_noise((1, 16, HEIGHT // 8, WIDTH // 8), SEED)
    with torch.no_grad():
        out = pipe(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=guidance,
                   latents=pack_latents(noise), max_sequence_length=256, output_type="latent").images
    return unpack_latents(out, HEIGHT // 8, WIDTH // 8)


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_txt2img_matches_flux_pipeline(variant: str, dev: FluxFiles, schnell: FluxFiles, clip_vocab_dir: Path,
                                       tmp_path: Path) -> None:
    torch.set_num_threads(1)
    files = dev if variant == "dev" else schnell
    guidance = 4.0
    executor = make_executor(files.models_dir, tmp_path / "out")
    graph = flux_graph(files, prompt=PROMPT, seed=SEED, steps=STEPS, width=WIDTH, height=HEIGHT, guidance=guidance,
                       shift_for_size=files.guidance)  # diffusers shifts dev by image size, schnell not at all
    report = executor.run(graph, outputs=["unet", "sampler", "decode"])
    report.raise_for_status()
    model = report.results["unet"]["MODEL"]
    assert model.has_guidance is files.guidance
    assert model.rules.name == ("flux-dev" if files.guidance else "flux-schnell")
    ours = report.results["sampler"]["LATENT"].samples
    ref = reference_latents(files, clip_vocab_dir, guidance)
    assert ours.shape == ref.shape == (1, 16, HEIGHT // 8, WIDTH // 8)
    assert float(ours.std()) > 0.1
    rel_close(ours, ref)
    image = report.results["decode"]["IMAGE"]
    assert image.shape == (1, HEIGHT, WIDTH, 3) and float(image.std()) > 0.01


def test_guidance_changes_dev_output_and_not_schnell(dev: FluxFiles, schnell: FluxFiles, tmp_path: Path) -> None:
    out = {}
    for files in (dev, schnell):
        executor = make_executor(files.models_dir, tmp_path / "out")
        for g in (1.5, 6.0):
            report = executor.run(flux_graph(files, guidance=g, steps=2), outputs=["sampler"])
            report.raise_for_status()
            out[files.guidance, g] = report.results["sampler"]["LATENT"].samples
    assert float((out[True, 1.5] - out[True, 6.0]).abs().max()) > 1e-3
    assert torch.equal(out[False, 1.5], out[False, 6.0])


def test_cfg_1_skips_the_negative_pass(dev: FluxFiles, tmp_path: Path) -> None:
    executor = make_executor(dev.models_dir, tmp_path / "out")
    first = executor.run(flux_graph(dev, steps=2), outputs=["unet"])
    first.raise_for_status()
    transformer = first.results["unet"]["MODEL"].transformer
    seen: list[int] = []
    handle = transformer.register_forward_hook(lambda m, args, out: seen.append(int(args[0].shape[0])))
    try:
        graph = flux_graph(dev, steps=2)
        executor.run(graph, outputs=["sampler"]).raise_for_status()
        assert seen == [1, 1]  # one conditional pass per step
        seen.clear()
        graph.nodes["sampler"].values["cfg"] = 2.0
        executor.run(graph, outputs=["sampler"]).raise_for_status()
        assert sum(seen) == 4  # cond + uncond per step
    finally:
        handle.remove()


def test_basic_guider_graph_equals_ksampler_at_cfg_1(dev: FluxFiles, tmp_path: Path) -> None:
    executor = make_executor(dev.models_dir, tmp_path / "out")
    graph = flux_graph(dev, steps=3)
    graph.add_node("diffusion.basic_guider", {}, id="guider")
    graph.add_node("diffusion.random_noise", {"noise_seed": 42}, id="noise")
    graph.add_node("diffusion.sampler_select", {"sampler_name": "euler"}, id="select")
    graph.add_node("diffusion.basic_scheduler", {"scheduler": "simple", "steps": 3, "denoise": 1.0}, id="sched")
    graph.add_node("diffusion.sampler_custom_advanced", {}, id="custom")
    graph.connect("msf", "MODEL", "guider", "model")
    graph.connect("guidance", "CONDITIONING", "guider", "conditioning")
    graph.connect("msf", "MODEL", "sched", "model")
    for src, out, dst in (("noise", "NOISE", "noise"), ("guider", "GUIDER", "guider"), ("select", "SAMPLER", "sampler"),
                          ("sched", "SIGMAS", "sigmas"), ("latent", "LATENT", "latent_image")):
        graph.connect(src, out, "custom", dst)
    report = executor.run(graph, outputs=["sampler", "custom"])
    report.raise_for_status()
    assert torch.equal(report.results["custom"]["output"].samples, report.results["sampler"]["LATENT"].samples)


def test_clip_text_encode_flux_sends_each_text_to_its_encoder(dev: FluxFiles, tmp_path: Path) -> None:
    executor = make_executor(dev.models_dir, tmp_path / "out")
    graph = flux_graph(dev, prompt=PROMPT)
    graph.add_node("diffusion.clip_text_encode_flux", {"clip_l": "a red circle", "t5xxl": PROMPT, "guidance": 2.5},
                   id="pair")
    graph.add_node("diffusion.text_encode", {"text": "a red circle"}, id="clip_only")
    for n in ("pair", "clip_only"):
        graph.connect("clip", "CLIP", n, "clip")
    report = executor.run(graph, outputs=["positive", "pair", "clip_only"])
    report.raise_for_status()
    pair, same = report.results["pair"]["CONDITIONING"], report.results["positive"]["CONDITIONING"]
    clip_only = report.results["clip_only"]["CONDITIONING"]
    assert torch.equal(pair.context, same.context)  # T5 got the prompt
    assert torch.equal(pair.pooled, clip_only.pooled)  # CLIP-L got "a red circle"
    assert not torch.equal(pair.pooled, same.pooled)
    assert pair.guidance == 2.5 and same.guidance is None
    assert pair.context.shape == (1, 256, 32) and pair.pooled.shape == (1, CLIP_WIDTH)


def test_prompt_weights_act_on_t5_tokens(dev: FluxFiles, tmp_path: Path) -> None:
    executor = make_executor(dev.models_dir, tmp_path / "out")
    graph = flux_graph(dev)
    graph.add_node("diffusion.text_encode", {"text": "a small (blue:1.5) square"}, id="weighted")
    graph.add_node("diffusion.text_encode", {"text": "a small (blue:1.0) square"}, id="plain")
    graph.add_node("diffusion.text_encode", {"text": "a small blue square"}, id="bare")
    for n in ("weighted", "plain", "bare"):
        graph.connect("clip", "CLIP", n, "clip")
    report = executor.run(graph, outputs=["weighted", "plain", "bare"])
    report.raise_for_status()
    weighted, plain = report.results["weighted"]["CONDITIONING"], report.results["plain"]["CONDITIONING"]
    diff = (weighted.context - plain.context).abs().amax(dim=-1)[0]
    changed = torch.nonzero(diff > 1e-6).flatten().tolist()
    # only the tokens of "blue" moved (a few adjacent ones; the tiny vocabulary splits words)
    assert 0 < len(changed) <= 4 and changed == list(range(changed[0], changed[0] + len(changed)))
    assert torch.equal(weighted.pooled, plain.pooled)  # CLIP's pooled vector ignores weights
    bare = report.results["bare"]["CONDITIONING"]
    torch.testing.assert_close(plain.context, bare.context, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ loading


def _resident_bytes(module: torch.nn.Module) -> int:
    """Bytes of every tensor the module keeps (state dict: parameters and persistent buffers; a GGUF/fp8
    layer's weight is its storage buffer, so this is what stays in memory)."""
    return sum(t.element_size() * t.nelement() for t in module.state_dict().values())


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e5m2"])
def test_fp8_weight_dtype_keeps_weights_in_8_bits(dev: FluxFiles, tmp_path: Path, weight_dtype: str) -> None:
    from nodes.diffusion.quant.layers import quantized_layers

    executor = make_executor(dev.models_dir, tmp_path / "out")
    report = executor.run(flux_graph(dev, weight_dtype=weight_dtype), outputs=["unet", "sampler"])
    report.raise_for_status()
    model = report.results["unet"]["MODEL"]
    fp8 = getattr(torch, weight_dtype.replace("fp8_", "float8_"))
    layers = [m for _, m in quantized_layers(model.transformer)]
    linears = [m for m in model.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and len(layers) == len(linears)  # every Linear keeps its weight in 8 bits
    assert all(m.storage.dtype == fp8 and m.storage.shape == m.qshape for m in layers)
    matrix_elems = sum(m.qshape.numel() for m in layers)
    other = _resident_bytes(model.transformer) - sum(m.storage.nbytes for m in layers)
    assert _resident_bytes(model.transformer) == matrix_elems + other  # 1 byte per matrix weight
    full = executor.run(flux_graph(dev), outputs=["unet", "sampler"])
    full.raise_for_status()
    assert model.__nodegraph_nbytes__() < 0.35 * full.results["unet"]["MODEL"].__nodegraph_nbytes__()
    a, b = report.results["sampler"]["LATENT"].samples, full.results["sampler"]["LATENT"].samples
    assert torch.isfinite(a).all()
    # 8-bit weights change the numbers, not the picture: strongly correlated with the fp32 result
    assert float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) > 0.9


def test_fp8_file_stays_fp8_with_default_weight_dtype(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    sd = load_file(models / "diffusion_models" / dev.unet)
    fp8_sd = {k: v.to(torch.float8_e4m3fn) if v.ndim >= 2 else v for k, v in sd.items()}
    save_file(fp8_sd, models / "diffusion_models" / "tiny_fp8.safetensors")
    file_bytes = sum(v.element_size() * v.nelement() for v in fp8_sd.values())
    files = FluxFiles(models, "tiny_fp8.safetensors", dev.clip_l, dev.t5, dev.vae, True, None)
    report = make_executor(models, tmp_path / "out").run(flux_graph(files, steps=2), outputs=["unet", "sampler"])
    report.raise_for_status()
    transformer = report.results["unet"]["MODEL"].transformer
    assert _resident_bytes(transformer) == file_bytes  # resident weight bytes = the file's tensor bytes
    assert torch.isfinite(report.results["sampler"]["LATENT"].samples).all()


def test_unet_and_clip_folder_aliases_and_extra_model_paths(dev: FluxFiles, tmp_path: Path) -> None:
    """ComfyUI's older folder names (unet/, clip/) and extra_model_paths.yaml are searched."""
    models = tmp_path / "models"
    for sub, alias in (("diffusion_models", "unet"), ("text_encoders", "clip"), ("vae", "vae")):
        shutil.copytree(dev.models_dir / sub, models / alias)
    report = make_executor(models, tmp_path / "out").run(flux_graph(dev, steps=1), outputs=["sampler"])
    report.raise_for_status()
    elsewhere = tmp_path / "elsewhere"
    for sub in ("diffusion_models", "text_encoders", "vae"):
        shutil.copytree(dev.models_dir / sub, elsewhere / sub)
    (tmp_path / "extra_model_paths.yaml").write_text(
        f"other:\n  base_path: {elsewhere}\n  unet: diffusion_models\n  clip: text_encoders\n  vae: vae\n")
    empty = tmp_path / "empty_models"
    empty.mkdir()
    from nodes.diffusion.paths import ModelPaths

    paths = ModelPaths.from_settings({"models_dir": str(empty), "extra_model_paths": str(tmp_path /
                                                                                          "extra_model_paths.yaml")})
    assert dev.unet in paths.list("diffusion_models") and dev.t5 in paths.list("text_encoders")


def test_all_in_one_flux_file_loads_through_the_checkpoint_loader(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    parts = {"model.diffusion_model.": dev.models_dir / "diffusion_models" / dev.unet,
             "text_encoders.clip_l.transformer.": dev.models_dir / "text_encoders" / dev.clip_l,
             "text_encoders.t5xxl.transformer.": dev.models_dir / "text_encoders" / dev.t5,
             "vae.": dev.models_dir / "vae" / dev.vae}
    flat = {prefix + k: v for prefix, path in parts.items() for k, v in load_file(path).items()}
    save_file(flat, models / "checkpoints" / "tiny_flux_aio.safetensors")
    tok = (dev.models_dir / "text_encoders" / "tiny_t5xxl.tokenizer.json").read_text()
    (models / "checkpoints" / "tiny_flux_aio.tokenizer.json").write_text(tok)

    executor = make_executor(models, tmp_path / "out")
    split = make_executor(dev.models_dir, tmp_path / "out2").run(flux_graph(dev), outputs=["sampler", "decode"])
    split.raise_for_status()
    graph = flux_graph(dev)
    for n in ("unet", "clip", "vae"):
        graph.remove_node(n)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_flux_aio.safetensors"}, id="ckpt")
    graph.connect("ckpt", "MODEL", "msf", "model")
    graph.connect("ckpt", "CLIP", "positive", "clip")
    graph.connect("ckpt", "VAE", "decode", "vae")
    report = executor.run(graph, outputs=["sampler", "decode"])
    report.raise_for_status()
    assert torch.equal(report.results["sampler"]["LATENT"].samples, split.results["sampler"]["LATENT"].samples)
    assert torch.equal(report.results["decode"]["IMAGE"], split.results["decode"]["IMAGE"])


# ------------------------------------------------------------------ bad input


def _issues(executor, graph, outputs=("decode",)) -> list:  # noqa: ANN001
    with pytest.raises(WorkflowInvalid) as info:
        executor.run(graph, outputs=list(outputs))
    return info.value.issues


def _issue_text(issues: list) -> str:
    return "\n".join(str(i) for i in issues)


def test_t5_file_where_clip_l_is_expected(dev: FluxFiles, tmp_path: Path) -> None:
    executor = make_executor(dev.models_dir, tmp_path / "out")
    graph = flux_graph(dev)
    graph.nodes["clip"].values.update(clip_name1=dev.t5, clip_name2=dev.t5)
    issues = _issues(executor, graph)
    assert len(issues) == 1 and issues[0].node_id == "clip" and issues[0].input == "clip_name2"
    assert "T5" in issues[0].message and "CLIP-L" in issues[0].message

    graph = flux_graph(dev)
    graph.add_node("diffusion.clip_loader", {"clip_name": dev.t5, "type": "stable_diffusion"}, id="sd_clip")
    graph.add_node("diffusion.text_encode", {"text": "x"}, id="sd_text")
    graph.connect("sd_clip", "CLIP", "sd_text", "clip")
    issues = _issues(executor, graph, ("sd_text",))
    assert [(i.node_id, i.input) for i in issues] == [("sd_clip", "clip_name")]
    assert "T5" in issues[0].message and "DualCLIPLoader" in issues[0].fix
    assert len(executor.cache) == 0  # failed before any work: nothing loaded, nothing cached


def test_two_clip_files_for_flux_name_the_second_input(dev: FluxFiles, tmp_path: Path) -> None:
    graph = flux_graph(dev)
    graph.nodes["clip"].values.update(clip_name1=dev.clip_l, clip_name2=dev.clip_l)
    issues = _issues(make_executor(dev.models_dir, tmp_path / "out"), graph)
    assert [(i.node_id, i.input) for i in issues] == [("clip", "clip_name2")]
    assert "needs a T5-XXL" in issues[0].message


def test_sd_checkpoint_in_diffusion_models(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    ckpt = write_tiny_checkpoint(tmp_path / "sd", "sd1")
    shutil.copy(ckpt.path, models / "diffusion_models" / "sd15.safetensors")
    files = FluxFiles(models, "sd15.safetensors", dev.clip_l, dev.t5, dev.vae, True, None)
    executor = make_executor(models, tmp_path / "out")
    issues = _issues(executor, flux_graph(files))
    assert [(i.node_id, i.input) for i in issues] == [("unet", "unet_name")]
    assert "Stable Diffusion checkpoint" in issues[0].message and "Load Checkpoint" in issues[0].fix
    assert len(executor.cache) == 0


def test_truncated_diffusion_model(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    path = models / "diffusion_models" / dev.unet
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    executor = make_executor(models, tmp_path / "out")
    issues = _issues(executor, flux_graph(dev))
    assert [(i.node_id, i.input) for i in issues] == [("unet", "unet_name")]
    assert "truncated" in issues[0].message and "re-download" in issues[0].fix
    assert len(executor.cache) == 0


def test_missing_text_encoder_file(dev: FluxFiles, tmp_path: Path) -> None:
    graph = flux_graph(dev)
    graph.nodes["clip"].values["clip_name2"] = "t5xxl_fp16.safetensors"
    issues = _issues(make_executor(dev.models_dir, tmp_path / "out"), graph)
    assert [(i.node_id, i.input) for i in issues] == [("clip", "clip_name2")]
    assert "t5xxl_fp16.safetensors" in issues[0].message


def test_flux_prompt_needs_both_text_encoders(dev: FluxFiles, tmp_path: Path) -> None:
    graph = flux_graph(dev)
    graph.add_node("diffusion.clip_loader", {"clip_name": dev.clip_l, "type": "flux"}, id="half")
    graph.connect("half", "CLIP", "positive", "clip")
    report = make_executor(dev.models_dir, tmp_path / "out").run(graph, outputs=["sampler"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("positive", "clip")
    assert "no T5-XXL part" in report.error.message and "DualCLIPLoader" in report.error.message


def test_flux_vae_with_a_unet_model_and_sd_prompt_with_flux(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    write_tiny_checkpoint(models, "sd1")
    executor = make_executor(models, tmp_path / "out")
    # SD UNet sampling a 16-channel latent made for the FLUX VAE
    graph = flux_graph(dev)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_sd1.safetensors"}, id="sd")
    graph.connect("sd", "MODEL", "sampler", "model")
    report = executor.run(graph, outputs=["sampler"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("sampler", "latent_image")
    assert "16 channels" in report.error.message and "expects 4" in report.error.message
    # the FLUX VAE decoding a 4-channel SD latent: both known at planning, refused at validation
    graph = flux_graph(dev)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_sd1.safetensors"}, id="sd")
    graph.add_node("diffusion.empty_latent", {"width": 48, "height": 32, "batch_size": 1}, id="sd_latent")
    graph.connect("sd_latent", "LATENT", "decode", "samples")
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("decode", "vae")]
    assert "16-channel" in issues[0].message and "4 channels" in issues[0].message
    # ... and at run time when planning cannot know the VAE (the checkpoint's VAE on a 16-channel latent)
    graph = flux_graph(dev)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_sd1.safetensors"}, id="sd")
    graph.connect("sd", "VAE", "decode", "vae")
    report = executor.run(graph, outputs=["decode"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("decode", "vae")
    assert "4-channel" in report.error.message and "16 channels" in report.error.message
    # an SD prompt given to the FLUX model
    graph = flux_graph(dev)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_sd1.safetensors"}, id="sd")
    graph.connect("sd", "CLIP", "positive", "clip")
    report = executor.run(graph, outputs=["sampler"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("sampler", "positive")
    assert "T5" in report.error.message


def test_text_encoder_in_the_vae_folder(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    shutil.copy(models / "text_encoders" / dev.t5, models / "vae" / "t5_by_mistake.safetensors")
    files = FluxFiles(models, dev.unet, dev.clip_l, dev.t5, "t5_by_mistake.safetensors", True, None)
    issues = _issues(make_executor(models, tmp_path / "out"), flux_graph(files))
    assert [(i.node_id, i.input) for i in issues] == [("vae", "vae_name")]
    assert "T5" in issues[0].message and "not a VAE" in issues[0].message and "text_encoders" in issues[0].fix


def test_flux_vae_file_gets_flux_latent_scaling(dev: FluxFiles) -> None:
    from nodes.diffusion.checkpoint import load_vae_file

    vae = load_vae_file(dev.models_dir / "vae" / dev.vae)
    assert vae.latent_channels == 16 and vae.downscale == 8
    assert (vae.vae.config.scaling_factor, vae.vae.config.shift_factor) == (0.3611, 0.1159)


def test_canny_depth_variant_loads_and_samples_without_a_control_image(tmp_path: Path) -> None:
    """FLUX canny/depth files (32 latent input channels) load and, like ComfyUI, sample with a zero control
    latent when no InstructPixToPixConditioning gave one (parity with a control image: test_flux_fill_control)."""
    from tests.diffusion.flux_fixtures import diffusers_flux
    from tests.diffusion.flux_pipeline_fixtures import CLIP_WIDTH as PW
    from tests.diffusion.flux_pipeline_fixtures import T5_WIDTH, flux_bfl_sd

    models = tmp_path / "models"
    files = write_flux_files(models, guidance=True)
    canny = diffusers_flux(True, 3, in_channels=128, out_channels=64, joint_attention_dim=T5_WIDTH,
                           pooled_projection_dim=PW)
    save_file(flux_bfl_sd(canny), models / "diffusion_models" / "tiny_canny.safetensors")
    graph = flux_graph(FluxFiles(models, "tiny_canny.safetensors", files.clip_l, files.t5, files.vae, True, None))
    report = make_executor(models, tmp_path / "out").run(graph, outputs=["unet", "sampler"])
    report.raise_for_status()
    assert report.results["unet"]["MODEL"].concat_channels == 16
    assert report.results["sampler"]["LATENT"].samples.shape == (1, 16, 6, 8)
    from nodes.diffusion.split_files import identify_file

    assert "canny/depth" in identify_file(models / "diffusion_models" / "tiny_canny.safetensors").description


def test_lora_loader_node_patches_flux_model_and_both_text_encoders(dev: FluxFiles, tmp_path: Path) -> None:
    """Load LoRA on a FLUX graph: BFL-named transformer layers and lora_te1_/lora_te2_ text-encoder layers
    merge into copies; strength 0 reproduces the base image exactly; the cached base is untouched."""
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    g = torch.Generator().manual_seed(0)
    lora = {}
    for key, (out_dim, in_dim) in {"diffusion_model.double_blocks.0.img_attn.qkv": (3 * 64, 64),
                                   "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": (CLIP_WIDTH, CLIP_WIDTH),
                                   "lora_te2_encoder_block_0_layer_0_SelfAttention_q": (32, 32)}.items():
        lora[f"{key}.lora_down.weight"] = 0.3 * torch.randn(2, in_dim, generator=g)
        lora[f"{key}.lora_up.weight"] = 0.3 * torch.randn(out_dim, 2, generator=g)
    (models / "loras").mkdir()
    save_file(lora, models / "loras" / "tiny_flux_lora.safetensors")
    files = FluxFiles(models, dev.unet, dev.clip_l, dev.t5, dev.vae, True, None)

    def run(strength: float):  # noqa: ANN202
        graph = flux_graph(files, steps=2)
        graph.add_node("diffusion.lora_loader", {"lora_name": "tiny_flux_lora.safetensors",
                                                 "strength_model": strength, "strength_clip": strength}, id="lora")
        graph.connect("unet", "MODEL", "lora", "model")
        graph.connect("clip", "CLIP", "lora", "clip")
        graph.connect("lora", "MODEL", "msf", "model")
        graph.connect("lora", "CLIP", "positive", "clip")
        report = executor.run(graph, outputs=["lora", "positive", "sampler"])
        report.raise_for_status()
        return report

    executor = make_executor(models, tmp_path / "out")
    base = executor.run(flux_graph(files, steps=2), outputs=["positive", "sampler"])
    base.raise_for_status()
    patched = run(1.0)
    clip = patched.results["lora"]["CLIP"]
    assert clip.patches and patched.results["lora"]["MODEL"].patches
    for name in ("context", "pooled"):  # both text encoders were patched
        a = getattr(patched.results["positive"]["CONDITIONING"], name)
        assert not torch.equal(a, getattr(base.results["positive"]["CONDITIONING"], name)), name
    assert float((patched.results["sampler"]["LATENT"].samples
                  - base.results["sampler"]["LATENT"].samples).abs().max()) > 1e-4
    zero = run(0.0)
    assert torch.equal(zero.results["sampler"]["LATENT"].samples, base.results["sampler"]["LATENT"].samples)
    again = executor.run(flux_graph(files, steps=2), outputs=["sampler"])  # base model not modified in cache
    assert torch.equal(again.results["sampler"]["LATENT"].samples, base.results["sampler"]["LATENT"].samples)


def test_t5_without_its_tokenizer_file(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    (models / "text_encoders" / "tiny_t5xxl.tokenizer.json").unlink()
    shutil.rmtree(models / "text_encoders" / "_t5tok")
    executor = make_executor(models, tmp_path / "out")
    issues = _issues(executor, flux_graph(FluxFiles(models, dev.unet, dev.clip_l, dev.t5, dev.vae, True, None)))
    assert [(i.node_id, i.input) for i in issues] == [("clip", "clip_name2")]
    assert "tokenizer" in issues[0].message and "tiny_t5xxl.tokenizer.json" in issues[0].fix
    assert len(executor.cache) == 0


def test_t5xxl_vocabulary_uses_the_built_in_tokenizer(dev: FluxFiles, tmp_path: Path) -> None:
    """A T5 whose embedding has T5-XXL's 32,128 rows needs no tokenizer.json: validation passes and the
    prompt is tokenised by the shipped T5 tokenizer (a tokenizer.json beside the file would still win)."""
    from nodes.diffusion.models.t5 import T5Tokenizer
    from tests.diffusion.text_fixtures import grow_embedding

    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    (models / "text_encoders" / "tiny_t5xxl.tokenizer.json").unlink()
    shutil.rmtree(models / "text_encoders" / "_t5tok")
    grow_embedding(models / "text_encoders" / dev.t5, "shared.weight", 32128)
    executor = make_executor(models, tmp_path / "out")
    graph = flux_graph(FluxFiles(models, dev.unet, dev.clip_l, dev.t5, dev.vae, True, None))
    report = executor.run(graph, outputs=["clip", "positive"])  # validation raises WorkflowInvalid on any issue
    report.raise_for_status()
    clip = report.results["clip"]["CLIP"]
    assert clip.t5_tokenizer._tok is T5Tokenizer.shipped()._tok
    assert torch.isfinite(report.results["positive"]["CONDITIONING"].context).all()


def test_every_sampler_and_scheduler_on_a_flux_model(dev: FluxFiles, tmp_path: Path) -> None:
    """Node level: each sampler runs on FLUX (SDE samplers are refused on the sampler_name input before
    sampling), and each scheduler gives a finite, distinct result."""
    from nodes.diffusion.pack.common import SAMPLER_NAMES, SCHEDULER_NAMES
    from nodes.diffusion.sampling.samplers import FLOW_UNSUPPORTED_SAMPLERS

    executor = make_executor(dev.models_dir, tmp_path / "out")
    results = {}
    for sampler in SAMPLER_NAMES:
        report = executor.run(flux_graph(dev, steps=3, sampler=sampler), outputs=["sampler"])
        if sampler in FLOW_UNSUPPORTED_SAMPLERS:
            assert report.status == "error"
            assert (report.error.node_id, report.error.input) == ("sampler", "sampler_name")
            assert "flow-matching" in report.error.message
            continue
        report.raise_for_status()
        out = report.results["sampler"]["LATENT"].samples
        assert torch.isfinite(out).all() and float(out.std()) > 0.1, sampler
        results[sampler] = out
    for scheduler in SCHEDULER_NAMES:
        report = executor.run(flux_graph(dev, steps=3, scheduler=scheduler), outputs=["sampler"])
        report.raise_for_status()
        out = report.results["sampler"]["LATENT"].samples
        assert torch.isfinite(out).all(), scheduler
        results[scheduler] = out
    # euler = ddim and the simple scheduler is the graph's default: a few coincide by definition
    assert len({tuple(v.flatten()[:8].tolist()) for v in results.values()}) >= len(results) - 3


def test_flux_diffusion_model_in_checkpoints(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    (models / "checkpoints").mkdir()
    shutil.copy(models / "diffusion_models" / dev.unet, models / "checkpoints" / "flux1-dev.safetensors")
    graph = flux_graph(dev)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "flux1-dev.safetensors"}, id="ckpt")
    graph.connect("ckpt", "MODEL", "msf", "model")
    executor = make_executor(models, tmp_path / "out")
    issues = _issues(executor, graph)
    assert [(i.node_id, i.input) for i in issues] == [("ckpt", "ckpt_name")]
    assert "FLUX.1-dev diffusion model" in issues[0].message and "not a full checkpoint" in issues[0].message
    assert "Load Diffusion Model" in issues[0].fix
    from nodes.diffusion.checkpoint import load_checkpoint
    from nodes.diffusion.models.loading import CheckpointError

    with pytest.raises(CheckpointError, match="FLUX.1-dev diffusion model.*diffusion_models"):
        load_checkpoint(models / "checkpoints" / "flux1-dev.safetensors")


def test_flux_only_nodes_refuse_a_unet_model_or_sd_text_encoder(dev: FluxFiles, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(dev.models_dir, models)
    write_tiny_checkpoint(models, "sd1")
    executor = make_executor(models, tmp_path / "out")
    graph = flux_graph(dev)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_sd1.safetensors"}, id="sd")
    graph.connect("sd", "MODEL", "msf", "model")
    report = executor.run(graph, outputs=["msf"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("msf", "model")
    assert "needs a FLUX model" in report.error.message
    graph = flux_graph(dev)
    graph.add_node("diffusion.checkpoint_loader", {"ckpt_name": "tiny_sd1.safetensors"}, id="sd")
    graph.add_node("diffusion.clip_text_encode_flux", {"clip_l": "a", "t5xxl": "b", "guidance": 3.5}, id="pair")
    graph.connect("sd", "CLIP", "pair", "clip")
    report = executor.run(graph, outputs=["pair"])
    assert report.status == "error" and (report.error.node_id, report.error.input) == ("pair", "clip")
    assert "DualCLIPLoader" in report.error.message
