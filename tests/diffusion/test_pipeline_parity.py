"""End to end: load -> encode -> sample -> decode through the engine matches diffusers + transformers.

For each tiny checkpoint (SD1-like eps, SD2-like v-prediction, SDXL-like; see
``pipeline_fixtures``) the graph checkpoint_loader -> text_encode x2 ->
empty_latent -> ksampler (euler, normal, 4 steps, cfg 5, seed 42) ->
vae_decode runs in the :class:`~nodegraph.Executor`, and an independent
reference repeats it with the upstream libraries on the same file:

* text: ``transformers.CLIPTokenizer`` (built from the vocabulary files we ship)
  and ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` holding the
  checkpoint's tensors converted by diffusers' single-file converters, used
  the way diffusers' pipelines use them (SD1: last layer; SD2: diffusers' own
  trick of dropping the last layer, padding with "!" = id 0; SDXL: penultimate
  layers of both encoders concatenated, pooled = bigG ``text_embeds``);
* UNet / VAE: ``UNet2DConditionModel`` / ``AutoencoderKL`` loaded strictly from
  diffusers' LDM converters (SDXL gets ``added_cond_kwargs`` with
  ``time_ids = [h, w, 0, 0, h, w]``, on a non-square 48x32 image);
* sampling: ``EulerDiscreteScheduler`` with SD's betas and the checkpoint's
  prediction type, in a plain classifier-free-guidance loop.  Its own
  "linspace" spacing with 4 steps visits timesteps 999, 666, 333, 0 -- integers,
  where ComfyUI's "normal" (log-sigma interpolation) and diffusers' (linear
  sigma interpolation) agree -- so the reference computes its sigmas itself and
  the test checks ours equal them.  The one deliberate convention difference:
  our first x is ``noise * sigma_max`` (diffusers: ``noise * sqrt(sigma_max^2 + 1)``),
  so the reference starts from ``noise * sigmas[0]``; the noise is ours
  (``initial_noise(shape, seed)``).

Tolerances (fp32, CPU; tests/tolerance.py): final latents within the UNet's
rounding bound times the number of steps (each Euler step adds the UNet's error),
relative to the latents' magnitude (eps models' latents reach |x| ~ 100, because a
random UNet cannot predict the noise it is meant to remove; SD2's v-prediction keeps
them near unit scale); decoded images (0..1) within that plus the VAE decoder's bound;
sigmas within 1e-4 relative (diffusers' alphas_cumprod is float32).  Guards against vacuous passes: the
latents and images must vary, the images must not be mostly clamped, and the
two prompts must give different conditioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from nodes.diffusion.models.unet import UNET_PREFIX
from nodes.diffusion.sampling.noise import initial_noise
from nodes.diffusion.sampling.schedulers import sigmas_for
from nodes.diffusion.text.tokenizer import default_tokenizer
from tests.diffusion.ldm_fixtures import SDXL_TIME_EMBED_DIM, TINY_UNET_ROUNDING, diffusers_unet
from tests.diffusion.pipeline_fixtures import (
    CLIP_G_WIDTH,
    CLIP_L_WIDTH,
    CLIP_LAYERS,
    HEIGHT,
    KINDS,
    SD1_CLIP,
    SD2_CLIP,
    SDXL_CLIP_G,
    SDXL_CLIP_L,
    VAE_CONFIG,
    VAE_PREFIX,
    WIDTH,
    TinyCheckpoint,
    make_executor,
    txt2img_graph,
    write_tiny_checkpoint,
)
from tests.diffusion.text_fixtures import MAX_POS, VOCAB, write_hf_tokenizer_files
from tests.tolerance import assert_close

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
sfu = pytest.importorskip("diffusers.loaders.single_file_utils")

# diffusers 0.42 builds numpy arrays from tensors in a way numpy 2 deprecates; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# diffusers accumulates alphas_cumprod in float32 (we use float64): 1.3e-5 relative at sigma_min.
RTOL_SIGMA = 1e-4
PROMPT = "a red fox in the snow, oil painting"
NEGATIVE = ""
SEED, STEPS, CFG = 42, 4, 5.0
LATENT_ROUNDING = {"reduction": TINY_UNET_ROUNDING["reduction"], "depth": STEPS * TINY_UNET_ROUNDING["depth"]}
IMAGE_ROUNDING = {**LATENT_ROUNDING, "depth": LATENT_ROUNDING["depth"] + 10}  # + the decoder's ~10 blocks


@pytest.fixture(scope="module")
def hf_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hf_vocab")
    write_hf_tokenizer_files(default_tokenizer(), d)
    return d


def _tokenize(vocab_dir: Path, text: str, pad_with_zero: bool) -> torch.Tensor:
    # SD2's and SDXL's second tokenizer pad with "!" (id 0); SD1's pads with EOS.
    kwargs = {"pad_token": "!"} if pad_with_zero else {}
    tok = transformers.CLIPTokenizer.from_pretrained(str(vocab_dir), **kwargs)
    ids = tok(text, padding="max_length", max_length=MAX_POS, truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (1, MAX_POS)
    return ids


def _clip_config(width: int, layers: int, act: str, projection: int | None = None):
    kw = {"projection_dim": projection} if projection is not None else {}
    return transformers.CLIPTextConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                                       num_attention_heads=width // 64, vocab_size=VOCAB,
                                       max_position_embeddings=MAX_POS, hidden_act=act, layer_norm_eps=1e-5, **kw)


def _load(model: torch.nn.Module, sd: dict[str, torch.Tensor], allowed_unexpected: tuple[str, ...] = ()) -> None:
    result = model.load_state_dict(sd, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.startswith(allowed_unexpected)]
    assert not result.missing_keys and not unexpected, (result.missing_keys, unexpected)


@dataclass
class Conditioning:
    context: torch.Tensor
    pooled: torch.Tensor | None = None


def _reference_text(ckpt: TinyCheckpoint, vocab_dir: Path, text: str, text_l: str | None = None) -> Conditioning:
    """The prompt encoded the way diffusers' pipelines encode it for this family (SDXL: ``text_l``, if
    given, is CLIP-L's prompt, diffusers' ``prompt``, and ``text`` bigG's, its ``prompt_2``)."""
    with torch.no_grad():
        if ckpt.kind == "sd1":
            model = transformers.CLIPTextModel(_clip_config(CLIP_L_WIDTH, CLIP_LAYERS, "quick_gelu")).eval()
            conv = sfu.convert_ldm_clip_checkpoint(ckpt.component(SD1_CLIP))
            _load(model, {k.removeprefix("text_model."): v for k, v in conv.items() if "position_ids" not in k})
            return Conditioning(model(input_ids=_tokenize(vocab_dir, text, False)).last_hidden_state)
        if ckpt.kind == "sd2":
            # diffusers builds SD2's text encoder one layer short (its last_hidden_state is then the
            # penultimate layer through the final LN) and drops the unused text projection.
            model = transformers.CLIPTextModel(_clip_config(CLIP_L_WIDTH, CLIP_LAYERS - 1, "gelu")).eval()
            conv = sfu.convert_open_clip_checkpoint(model, ckpt.component(SD2_CLIP), prefix=SD2_CLIP)
            conv = {k.removeprefix("text_model."): v for k, v in conv.items()}
            _load(model, conv, allowed_unexpected=(f"encoder.layers.{CLIP_LAYERS - 1}.", "text_projection"))
            return Conditioning(model(input_ids=_tokenize(vocab_dir, text, True)).last_hidden_state)
        clip_l = transformers.CLIPTextModel(_clip_config(CLIP_L_WIDTH, CLIP_LAYERS, "quick_gelu")).eval()
        conv = sfu.convert_ldm_clip_checkpoint(ckpt.component(SDXL_CLIP_L))
        _load(clip_l, {k.removeprefix("text_model."): v for k, v in conv.items()})
        clip_g = transformers.CLIPTextModelWithProjection(
            _clip_config(CLIP_G_WIDTH, CLIP_LAYERS, "gelu", projection=ckpt.unet_config.adm_in_channels
                         - 6 * SDXL_TIME_EMBED_DIM)).eval()
        _load(clip_g, sfu.convert_open_clip_checkpoint(clip_g, ckpt.component(SDXL_CLIP_G), prefix=SDXL_CLIP_G))
        out_l = clip_l(input_ids=_tokenize(vocab_dir, text if text_l is None else text_l, False),
                       output_hidden_states=True)
        out_g = clip_g(input_ids=_tokenize(vocab_dir, text, True), output_hidden_states=True)
        context = torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], dim=-1)
        return Conditioning(context, out_g.text_embeds)


def _reference_vae(ckpt: TinyCheckpoint):
    widths = [VAE_CONFIG.ch * m for m in VAE_CONFIG.ch_mult]
    config = {
        "in_channels": 3, "out_channels": 3, "latent_channels": VAE_CONFIG.embed_dim,
        "layers_per_block": VAE_CONFIG.num_res_blocks, "block_out_channels": widths,
        "down_block_types": ["DownEncoderBlock2D"] * len(widths), "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "norm_num_groups": 32, "scaling_factor": ckpt.scaling_factor,
    }
    vae = diffusers.AutoencoderKL(**config).eval()
    _load(vae, sfu.convert_ldm_vae_checkpoint(ckpt.component(VAE_PREFIX), config))
    return vae


def reference_txt2img(ckpt: TinyCheckpoint, vocab_dir: Path, *, prompt_l: str | None = None,
                      time_ids: tuple[int, ...] = (HEIGHT, WIDTH, 0, 0, HEIGHT, WIDTH),
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(final latents, image [B,H,W,C] in 0..1, sigmas) from diffusers/transformers alone.

    SDXL only: ``prompt_l`` is CLIP-L's positive prompt (bigG's stays :data:`PROMPT`), ``time_ids`` the
    positive prompt's size conditioning (original h, w, crop top, left, target h, w); the negative keeps
    the image size, as diffusers' ``negative_original_size`` defaults do."""
    cond = _reference_text(ckpt, vocab_dir, PROMPT, prompt_l)
    uncond = _reference_text(ckpt, vocab_dir, NEGATIVE)
    assert (cond.context - uncond.context).abs().max() > 0.1
    unet_sd = {k.removeprefix(UNET_PREFIX): v for k, v in ckpt.component(UNET_PREFIX).items()}
    unet = diffusers_unet(ckpt.unet_config, unet_sd)
    vae = _reference_vae(ckpt)
    scheduler = diffusers.EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type={"eps": "epsilon", "v": "v_prediction"}[ckpt.prediction_type],
        timestep_spacing="linspace", final_sigmas_type="zero")
    scheduler.set_timesteps(STEPS)

    f = 2 ** (len(VAE_CONFIG.ch_mult) - 1)
    shape = (1, VAE_CONFIG.embed_dim, HEIGHT // f, WIDTH // f)
    latents = initial_noise(shape, SEED) * scheduler.sigmas[0]
    context = torch.cat([cond.context, uncond.context])
    extra = {}
    if ckpt.kind == "sdxl":
        time_ids = torch.tensor([list(time_ids), [HEIGHT, WIDTH, 0, 0, HEIGHT, WIDTH]], dtype=torch.float32)
        extra["added_cond_kwargs"] = {"text_embeds": torch.cat([cond.pooled, uncond.pooled]), "time_ids": time_ids}
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            out = unet(model_in, t, encoder_hidden_states=context, **extra).sample
            out_cond, out_uncond = out.chunk(2)
            latents = scheduler.step(out_uncond + CFG * (out_cond - out_uncond), t, latents).prev_sample
        image = vae.decode(latents / ckpt.scaling_factor).sample
    image = ((image.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
    return latents, image, scheduler.sigmas


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parity") / "models"


@pytest.mark.parametrize("kind", KINDS)
def test_txt2img_matches_diffusers(kind: str, models_dir: Path, hf_vocab_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ckpt = write_tiny_checkpoint(models_dir, kind)
    executor = make_executor(models_dir, tmp_path / "out")
    graph = txt2img_graph(ckpt.name, prompt=PROMPT, negative=NEGATIVE, seed=SEED, steps=STEPS, cfg=CFG,
                          sampler="euler", scheduler="normal", width=WIDTH, height=HEIGHT)
    report = executor.run(graph, outputs=["ckpt", "sampler", "decode"])
    report.raise_for_status()
    model = report.results["ckpt"]["MODEL"]
    ours_latent = report.results["sampler"]["LATENT"].samples
    ours_image = report.results["decode"]["IMAGE"]
    # The file's declarations (or, for the undeclared SD1-like file, SD1 conventions) were applied.
    assert model.rules.name == {"sd1": "custom", "sd2": "sd2", "sdxl": "sdxl"}[kind]
    assert model.rules.prediction_type == ckpt.prediction_type
    assert report.results["ckpt"]["VAE"].vae.config.scaling_factor == pytest.approx(ckpt.scaling_factor)

    ref_latent, ref_image, ref_sigmas = reference_txt2img(ckpt, hf_vocab_dir)
    ours_sigmas = sigmas_for("normal", STEPS, model.schedule, 1.0)
    torch.testing.assert_close(ours_sigmas, ref_sigmas.to(ours_sigmas.dtype), rtol=RTOL_SIGMA, atol=0)
    assert ours_latent.shape == ref_latent.shape and ours_image.shape == ref_image.shape == (1, HEIGHT, WIDTH, 3)
    assert ours_latent.std() > 0.1 and ours_image.std() > 0.05
    assert ((ours_image > 0) & (ours_image < 1)).float().mean() > 0.5, "image mostly clamped"
    assert_close(ours_latent, ref_latent, **LATENT_ROUNDING)
    assert_close(ours_image, ref_image, **IMAGE_ROUNDING)


def test_sdxl_text_encode_with_two_prompts_and_sizes_matches_diffusers(models_dir: Path, hf_vocab_dir: Path,
                                                                      tmp_path: Path) -> None:
    """Text Encode (SDXL) = ComfyUI's CLIPTextEncodeSDXL: CLIP-L and bigG read their own prompts and the
    size numbers reach SDXL's vector input -- against diffusers' ``prompt`` / ``prompt_2`` and
    ``original_size`` / ``crops_coords_top_left`` / ``target_size`` on the same tiny weights."""
    torch.set_num_threads(1)
    ckpt = write_tiny_checkpoint(models_dir, "sdxl")
    executor = make_executor(models_dir, tmp_path / "out")
    graph = txt2img_graph(ckpt.name, prompt=PROMPT, negative=NEGATIVE, seed=SEED, steps=STEPS, cfg=CFG,
                          sampler="euler", scheduler="normal", width=WIDTH, height=HEIGHT)
    graph.remove_node("positive")
    sizes = {"width": 96, "height": 80, "crop_w": 16, "crop_h": 8, "target_width": 64, "target_height": 40}
    graph.add_node("diffusion.text_encode_sdxl", {**sizes, "text_g": PROMPT, "text_l": "a blue bird"},
                   id="positive")
    graph.connect("ckpt", "CLIP", "positive", "clip")
    graph.connect("positive", "CONDITIONING", "sampler", "positive")
    report = executor.run(graph, outputs=["sampler"])
    report.raise_for_status()
    ours = report.results["sampler"]["LATENT"].samples

    time_ids = (sizes["height"], sizes["width"], sizes["crop_h"], sizes["crop_w"], sizes["target_height"],
                sizes["target_width"])
    ref, _, _ = reference_txt2img(ckpt, hf_vocab_dir, prompt_l="a blue bird", time_ids=time_ids)
    assert_close(ours, ref, **LATENT_ROUNDING)
    # Each input matters: dropping CLIP-L's own prompt, or the size numbers, moves the reference far away.
    err = float((ours - ref).abs().max())
    one_prompt, _, _ = reference_txt2img(ckpt, hf_vocab_dir, time_ids=time_ids)
    image_size, _, _ = reference_txt2img(ckpt, hf_vocab_dir, prompt_l="a blue bird")
    assert float((one_prompt - ref).abs().max()) > 100 * err
    assert float((image_size - ref).abs().max()) > 100 * err


def test_sdxl_text_encode_pads_the_shorter_prompt_and_refuses_one_encoder(models_dir: Path) -> None:
    """A CLIP-L prompt two chunks long beside a one-chunk bigG prompt: bigG's half is padded with its
    empty-prompt chunk (ComfyUI pads the token lists the same way); an SD1 CLIP is refused on ``clip``."""
    from nodegraph.errors import NodeInputError
    from nodes.diffusion.checkpoint import load_checkpoint
    from nodes.diffusion.pack.conditioning import text_encode_sdxl
    from tests.diffusion.fake_context import FakeContext

    torch.set_num_threads(1)
    sdxl = load_checkpoint(models_dir / "checkpoints" / write_tiny_checkpoint(models_dir, "sdxl").name)
    long_l = ", ".join(["a red fox in the snow"] * 20)  # > 75 tokens: two chunks
    sizes = {"width": WIDTH, "height": HEIGHT, "crop_w": 0, "crop_h": 0, "target_width": WIDTH,
             "target_height": HEIGHT}
    cond = text_encode_sdxl.fn(FakeContext(), **sizes, text_g=PROMPT, text_l=long_l, clip=sdxl.clip)
    assert cond.context.shape == (1, 2 * MAX_POS, CLIP_L_WIDTH + CLIP_G_WIDTH)
    g_half = cond.context[0, :, CLIP_L_WIDTH:]
    empty_g = sdxl.clip.encode("").context[0, :, CLIP_L_WIDTH:]
    short_g = sdxl.clip.encode(PROMPT).context[0, :, CLIP_L_WIDTH:]
    assert_close(g_half[:MAX_POS], short_g, reduction=CLIP_G_WIDTH, depth=4)
    assert_close(g_half[MAX_POS:], empty_g, reduction=CLIP_G_WIDTH, depth=4)
    assert cond.size_cond == (HEIGHT, WIDTH, 0, 0, HEIGHT, WIDTH)

    sd1 = load_checkpoint(models_dir / "checkpoints" / write_tiny_checkpoint(models_dir, "sd1").name)
    with pytest.raises(NodeInputError) as err:
        text_encode_sdxl.fn(FakeContext(), **sizes, text_g=PROMPT, text_l=PROMPT, clip=sd1.clip)
    assert err.value.input == "clip" and "Text Encode (Prompt)" in err.value.fix
