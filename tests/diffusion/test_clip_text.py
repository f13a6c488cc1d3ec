"""CLIP text encoder parity with transformers, on tiny random checkpoints in the original layouts.

The checkpoints are converted with diffusers' own single-file converters into
transformers models that must load with no missing/unexpected keys: that proves
the fixtures use the real SD layouts, and therefore that our key names are the
real ones. Tolerance: 1e-4 absolute in fp32 on every hidden state and the pooled output.
"""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.models.clip_text import (
    ClipTextModel,
    build_clip_from_state_dict,
    infer_clip_config,
    openclip_to_hf,
    select_hidden,
)
from nodes.diffusion.text.tokenizer import default_tokenizer
from tests.diffusion.text_fixtures import (
    CLIP_ROUNDING,
    MAX_POS,
    VOCAB,
    make_hf_clip_sd,
    make_openclip_sd,
    strip_prefix,
)
from tests.tolerance import assert_close

transformers = pytest.importorskip("transformers")
single_file_utils = pytest.importorskip("diffusers.loaders.single_file_utils")

WIDTH, LAYERS = 64, 2
PROMPTS = ["a photo of a cat", "an astronaut riding a horse on mars, highly detailed, 8k"]


def _ids(pad_id: int | None) -> torch.Tensor:
    tok = default_tokenizer()
    return torch.tensor([tok.encode_padded(p, length=MAX_POS, pad_id=pad_id) for p in PROMPTS])


def _hf_config(act: str, heads: int, projection: int | None = None):
    kw = {"projection_dim": projection} if projection is not None else {}
    return transformers.CLIPTextConfig(
        hidden_size=WIDTH,
        intermediate_size=4 * WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=heads,
        vocab_size=VOCAB,
        max_position_embeddings=MAX_POS,
        hidden_act=act,
        layer_norm_eps=1e-5,
        **kw,
    )


def _load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    result = model.load_state_dict(sd, strict=False)
    assert not result.missing_keys and not result.unexpected_keys, result


def _compare(ours: ClipTextModel, ref, ids: torch.Tensor, projection: torch.Tensor | None = None) -> None:
    with torch.no_grad():
        out = ours(ids)
        hf = ref(input_ids=ids, output_hidden_states=True)
    assert len(out.hidden_states) == len(hf.hidden_states) == LAYERS + 1
    for mine, theirs in zip(out.hidden_states, hf.hidden_states, strict=True):
        assert_close(mine, theirs, **CLIP_ROUNDING)
    assert_close(out.last_hidden_state, hf.last_hidden_state, **CLIP_ROUNDING)
    if hasattr(hf, "text_embeds"):
        ref_pooled = hf.text_embeds
    else:
        ref_pooled = hf.pooler_output if projection is None else hf.pooler_output @ projection
    assert_close(out.pooled, ref_pooled, **CLIP_ROUNDING)
    # The outputs must actually depend on the weights (guards against comparing zeros).
    assert out.last_hidden_state.std() > 0.1


@pytest.mark.parametrize("prefix", ["cond_stage_model.transformer.", "conditioner.embedders.0.transformer."])
def test_hf_layout_matches_transformers(prefix: str) -> None:
    ckpt = make_hf_clip_sd(prefix, position_ids=prefix.startswith("cond_stage"))
    converted = single_file_utils.convert_ldm_clip_checkpoint(ckpt)
    # transformers 5 drops the text_model. prefix of CLIPTextModel and has no position_ids buffer in
    # its state dict; old SD1 files carry position_ids, which both sides ignore.
    converted = {k.removeprefix("text_model."): v for k, v in converted.items() if "position_ids" not in k}
    ref = transformers.CLIPTextModel(_hf_config("quick_gelu", heads=1)).eval()
    _load_strict(ref, converted)

    ours = build_clip_from_state_dict(strip_prefix(ckpt, prefix), activation="quick_gelu")
    assert ours.config.heads == WIDTH // 64 and ours.config.projection_dim is None
    _compare(ours, ref, _ids(pad_id=None))


def test_sd2_openclip_layout_matches_transformers() -> None:
    prefix = "cond_stage_model.model."
    ckpt = make_openclip_sd(prefix, projection=WIDTH)
    ref = transformers.CLIPTextModel(_hf_config("gelu", heads=1)).eval()
    converted = single_file_utils.convert_open_clip_checkpoint(ref, ckpt, prefix=prefix)
    converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    _load_strict(ref, converted)  # diffusers drops SD2's text_projection (unused by SD2)

    ours = build_clip_from_state_dict(openclip_to_hf(strip_prefix(ckpt, prefix)), activation="gelu")
    _compare(ours, ref, _ids(pad_id=0), projection=ckpt[prefix + "text_projection"])


def test_sdxl_bigg_layout_matches_transformers_with_projection() -> None:
    prefix = "conditioner.embedders.1.model."
    ckpt = make_openclip_sd(prefix, projection=32)
    ref = transformers.CLIPTextModelWithProjection(_hf_config("gelu", heads=1, projection=32)).eval()
    converted = single_file_utils.convert_open_clip_checkpoint(ref, ckpt, prefix=prefix)
    _load_strict(ref, converted)

    ours = build_clip_from_state_dict(openclip_to_hf(strip_prefix(ckpt, prefix)), activation="gelu")
    assert ours.config.projection_dim == 32
    _compare(ours, ref, _ids(pad_id=0))


def test_multi_head_override_matches_transformers() -> None:
    prefix = "cond_stage_model.transformer."
    ckpt = make_hf_clip_sd(prefix, seed=3)
    ref = transformers.CLIPTextModel(_hf_config("quick_gelu", heads=4)).eval()
    converted = single_file_utils.convert_ldm_clip_checkpoint(ckpt)
    _load_strict(ref, {k.removeprefix("text_model."): v for k, v in converted.items()})
    ours = build_clip_from_state_dict(strip_prefix(ckpt, prefix), activation="quick_gelu", heads=4)
    _compare(ours, ref, _ids(pad_id=None))


def test_openclip_rename_is_copy_free() -> None:
    sd = make_openclip_sd("", projection=32)
    hf = openclip_to_hf(sd)
    in_proj = sd["transformer.resblocks.0.attn.in_proj_weight"]
    q = hf["text_model.encoder.layers.0.self_attn.q_proj.weight"]
    v = hf["text_model.encoder.layers.0.self_attn.v_proj.weight"]
    assert q.untyped_storage().data_ptr() == in_proj.untyped_storage().data_ptr()
    torch.testing.assert_close(v, in_proj[2 * WIDTH :], atol=0, rtol=0)
    proj = hf["text_projection.weight"]
    assert proj.shape == (32, WIDTH) and proj.data_ptr() == sd["text_projection"].data_ptr()
    # Loading assigns the views: the model shares memory with the checkpoint tensors.
    model = build_clip_from_state_dict(hf, activation="gelu")
    layer0 = model.text_model.encoder.layers[0]
    assert layer0.self_attn.k_proj.weight.untyped_storage().data_ptr() == in_proj.untyped_storage().data_ptr()
    assert not any(p.is_meta for p in model.parameters())


def test_openclip_rename_rejects_unknown_keys() -> None:
    sd = make_openclip_sd("", projection=None)
    sd["logit_scale"] = torch.tensor(4.6)
    openclip_to_hf(sd)  # known bookkeeping key: dropped
    sd["transformer.resblocks.0.attn.bogus"] = torch.zeros(1)
    with pytest.raises(KeyError):
        openclip_to_hf(sd)


def test_infer_config() -> None:
    sd = strip_prefix(make_hf_clip_sd("p.", layers=3, projection=16), "p.")
    cfg = infer_clip_config(sd, activation="quick_gelu")
    assert (cfg.width, cfg.layers, cfg.heads, cfg.intermediate) == (64, 3, 1, 256)
    assert (cfg.vocab_size, cfg.max_positions, cfg.projection_dim, cfg.eos_id) == (VOCAB, MAX_POS, 16, 49407)


def test_select_hidden_clip_skip() -> None:
    prefix = "cond_stage_model.transformer."
    model = build_clip_from_state_dict(strip_prefix(make_hf_clip_sd(prefix), prefix), activation="quick_gelu")
    with torch.no_grad():
        out = model(_ids(None))
        last = select_hidden(model, out, -1, final_norm=True)
        penult = select_hidden(model, out, -2, final_norm=True)
        raw = select_hidden(model, out, -2, final_norm=False)
    torch.testing.assert_close(last, out.last_hidden_state, atol=0, rtol=0)
    assert raw is out.hidden_states[-2]
    assert not torch.allclose(penult, last, atol=1e-2)
    with pytest.raises(ValueError):
        select_hidden(model, out, -3, final_norm=True)
