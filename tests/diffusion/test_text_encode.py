"""Prompt weighting syntax, chunking, weighted encoding and SDXL conditioning.

Reference facts checked here: diffusers' clip-skip path (hidden_states[-(skip)] through the
final LayerNorm for SD1), diffusers' SDXL path (penultimate hidden states of both encoders,
no final LN, concatenated; pooled = bigG text_embeds) and SDXL's size micro-conditioning
(diffusers' ``Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)`` applied to
``original_size + crops_coords_top_left + target_size``). Tolerances: 1e-4 fp32 for model
parity, 1e-5 for pure tensor arithmetic.
"""

from __future__ import annotations

import pytest
import torch

from nodes.diffusion.models.clip_text import build_clip_from_state_dict, openclip_to_hf
from nodes.diffusion.text.encode import (
    SD1,
    SD2,
    chunk_prompt,
    encode,
    encode_sdxl,
    sdxl_size_conditioning,
)
from nodes.diffusion.text.tokenizer import default_tokenizer
from nodes.diffusion.text.weighting import Segment, parse_prompt
from tests.diffusion.text_fixtures import CLIP_ROUNDING, make_hf_clip_sd, make_openclip_sd, strip_prefix
from tests.tolerance import assert_close

# --- weighting syntax ---------------------------------------------------------------------------


def _approx(segments: list[Segment]) -> list[tuple[str, float, bool]]:
    return [(s.text, round(s.weight, 6), s.is_break) for s in segments]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0, False)]),
        ("", [("", 1.0, False)]),
        ("a (cat) dog", [("a ", 1.0, False), ("cat", 1.1, False), (" dog", 1.0, False)]),
        ("((cat))", [("cat", 1.21, False)]),
        ("[cat]", [("cat", round(1 / 1.1, 6), False)]),
        ("(cat:1.5)", [("cat", 1.5, False)]),
        ("( cat : 0.5 )", [(" cat ", 0.5, False)]),
        ("(a (b:2) c)", [("a ", 1.1, False), ("b", 2.2, False), (" c", 1.1, False)]),
        ("[(cat:2)]", [("cat", round(2 / 1.1, 6), False)]),
        ("(x:-0.5) (y:.8)", [("x", -0.5, False), (" ", 1.0, False), ("y", 0.8, False)]),
        (r"\(not weighted\)", [("(not weighted)", 1.0, False)]),
        (r"a \[b\] \\", [("a [b] \\", 1.0, False)]),
        ("(cat:1.2", [("cat:1.2", 1.1, False)]),  # no ')' after the number: ':' is text, '(' unclosed
        ("a (cat", [("a ", 1.0, False), ("cat", 1.1, False)]),  # unclosed: applies to the rest
        ("cat) dog]", [("cat) dog]", 1.0, False)]),  # unmatched closers are literal
        ("time 12:30", [("time 12:30", 1.0, False)]),
        ("ratio 3:2)", [("ratio 3:2)", 1.0, False)]),  # explicit weight without an opener stays literal
        ("(a:b)", [("a:b", 1.1, False)]),
        ("(cat:1.5) (cat:1.5)", [("cat", 1.5, False), (" ", 1.0, False), ("cat", 1.5, False)]),
        ("(a)(b)", [("ab", 1.1, False)]),  # adjacent equal weights merge
        ("Bob BREAKS BREAKFAST", [("Bob BREAKS BREAKFAST", 1.0, False)]),
        ("red cat BREAK blue (dog)", [("red cat", 1.0, False), ("", 1.0, True), ("blue ", 1.0, False),
                                      ("dog", 1.1, False)]),
        ("(a BREAK b)", [("a", 1.1, False), ("", 1.0, True), ("b", 1.1, False)]),
        ("éè (日本:1.3)", [("éè ", 1.0, False), ("日本", 1.3, False)]),
    ],
)
def test_parse_prompt(prompt: str, expected: list[tuple[str, float, bool]]) -> None:
    assert _approx(parse_prompt(prompt)) == expected


def test_break_can_be_disabled() -> None:
    assert _approx(parse_prompt("a BREAK b", allow_break=False)) == [("a BREAK b", 1.0, False)]


# --- chunking -----------------------------------------------------------------------------------


def test_chunk_short_prompt_matches_tokenizer() -> None:
    tok = default_tokenizer()
    ids, weights = chunk_prompt(tok, "a photo of a (cat:1.3)")
    assert ids == [tok.encode_padded("a photo of a cat", 77)]
    assert weights[0][:7] == [1.0, 1.0, 1.0, 1.0, 1.0, 1.3, 1.0] and set(weights[0][7:]) == {1.0}
    ids0, _ = chunk_prompt(tok, "a cat", pad_id=0)
    assert ids0[0][:4] == [49406, 320, 2368, 49407] and set(ids0[0][4:]) == {0}
    empty, _ = chunk_prompt(tok, "")
    assert empty == [[49406] + [49407] * 76]


def test_chunk_long_prompt_and_break() -> None:
    tok = default_tokenizer()
    ids, weights = chunk_prompt(tok, "cat " * 100)
    assert len(ids) == 2 and all(len(c) == 77 for c in ids)
    assert ids[0] == [49406] + [2368] * 75 + [49407]
    assert ids[1][:27] == [49406] + [2368] * 25 + [49407]
    ids, _ = chunk_prompt(tok, "a cat BREAK a dog")
    assert [c[:4] for c in ids] == [[49406, 320, 2368, 49407], [49406, 320, 1929, 49407]]
    ids, _ = chunk_prompt(tok, "BREAK a dog BREAK")
    assert len(ids) == 1


def test_chunk_keeps_short_words_whole() -> None:
    tok = default_tokenizer()
    word = "antidisestablishmentarianism"  # several tokens
    n = len(tok.encode(word))
    assert 1 < n <= 8
    ids, _ = chunk_prompt(tok, "cat " * 74 + word)
    assert len(ids) == 2
    assert ids[0][1:76] == [2368] * 74 + [49407]  # the word did not fit: chunk closed early
    assert ids[1][1 : 1 + n] == tok.encode(word)


# --- encoding -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd1_model():
    prefix = "cond_stage_model.transformer."
    return build_clip_from_state_dict(strip_prefix(make_hf_clip_sd(prefix), prefix), activation="quick_gelu")


def test_encode_unweighted_equals_model(sd1_model) -> None:
    tok = default_tokenizer()
    cond, pooled = encode(sd1_model, tok, "a photo of a cat")
    with torch.no_grad():
        out = sd1_model(torch.tensor([tok.encode_padded("a photo of a cat", 77)]))
    assert cond.shape == (1, 77, 64) and pooled.shape == (1, 64)
    torch.testing.assert_close(cond, out.last_hidden_state, atol=0, rtol=0)
    torch.testing.assert_close(pooled, out.pooled, atol=0, rtol=0)


def test_encode_weighting_interpolates_from_empty(sd1_model) -> None:
    tok = default_tokenizer()
    plain, _ = encode(sd1_model, tok, "a photo of a cat")
    weighted, _ = encode(sd1_model, tok, "a photo of a (cat:1.5)")
    empty, _ = encode(sd1_model, tok, "")
    expected = plain.clone()
    expected[:, 5] = empty[:, 5] + (plain[:, 5] - empty[:, 5]) * 1.5
    assert_close(weighted, expected, **CLIP_ROUNDING)  # encoded in one batch vs one by one
    assert (weighted[:, 5] - plain[:, 5]).abs().max() > 1e-2
    zero, _ = encode(sd1_model, tok, "a photo of a (cat:0)")
    assert_close(zero[:, 5], empty[:, 5], **CLIP_ROUNDING)


def test_encode_long_prompt_concatenates_chunks(sd1_model) -> None:
    tok = default_tokenizer()
    text = "cat " * 75 + "a red dog"
    cond, pooled = encode(sd1_model, tok, text)
    assert cond.shape == (1, 154, 64)
    first, pooled_first = encode(sd1_model, tok, "cat " * 75)
    second, _ = encode(sd1_model, tok, "a red dog")
    assert_close(cond, torch.cat([first, second], dim=1), **CLIP_ROUNDING)  # chunks run as one batch
    assert_close(pooled, pooled_first, **CLIP_ROUNDING)
    # Batches with different chunk counts are padded with empty-prompt chunks.
    batch, _ = encode(sd1_model, tok, [text, "a red dog"])
    empty, _ = encode(sd1_model, tok, "")
    assert batch.shape == (2, 154, 64)
    assert_close(batch[1], torch.cat([second, empty], dim=1)[0], **CLIP_ROUNDING)


def test_sd1_clip_skip_matches_diffusers_convention(sd1_model) -> None:
    transformers = pytest.importorskip("transformers")
    prefix = "cond_stage_model.transformer."
    cfg = transformers.CLIPTextConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=1, hidden_act="quick_gelu")
    ref = transformers.CLIPTextModel(cfg).eval()
    sd = strip_prefix(make_hf_clip_sd(prefix), prefix + "text_model.")
    ref.load_state_dict(sd, strict=True)
    tok = default_tokenizer()
    ids = torch.tensor([tok.encode_padded("an astronaut riding a horse", 77)])
    with torch.no_grad():
        hs = ref(input_ids=ids, output_hidden_states=True).hidden_states
        # diffusers: clip_skip=1 -> hidden_states[-2] through final_layer_norm (our clip_skip=2)
        expected = ref.final_layer_norm(hs[-2])  # transformers 5: CLIPTextModel is the text transformer
    cond, _ = encode(sd1_model, tok, "an astronaut riding a horse", clip_skip=2)
    assert_close(cond, expected, **CLIP_ROUNDING)


def test_sd2_settings_use_penultimate_with_final_norm() -> None:
    tok = default_tokenizer()
    model = build_clip_from_state_dict(openclip_to_hf(make_openclip_sd("")), activation="gelu")
    cond, _ = encode(model, tok, "a cat", settings=SD2)
    with torch.no_grad():
        out = model(torch.tensor([tok.encode_padded("a cat", 77, pad_id=0)]))
    torch.testing.assert_close(cond, model.text_model.final_layer_norm(out.hidden_states[-2]), atol=0, rtol=0)
    assert SD1.pad_id is None and SD2.pad_id == 0


def test_sdxl_matches_transformers_reference() -> None:
    transformers = pytest.importorskip("transformers")
    sfu = pytest.importorskip("diffusers.loaders.single_file_utils")
    l_prefix, g_prefix = "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."
    ckpt = {**make_hf_clip_sd(l_prefix, seed=5), **make_openclip_sd(g_prefix, seed=6, projection=32)}
    clip_l = build_clip_from_state_dict(strip_prefix(ckpt, l_prefix), activation="quick_gelu")
    clip_g = build_clip_from_state_dict(openclip_to_hf(strip_prefix(ckpt, g_prefix)), activation="gelu")

    base = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1)
    ref_l = transformers.CLIPTextModel(transformers.CLIPTextConfig(hidden_act="quick_gelu", **base)).eval()
    ref_l.load_state_dict({k.removeprefix("text_model."): v for k, v in sfu.convert_ldm_clip_checkpoint(ckpt).items()
                           if k.startswith("text_model.")}, strict=True)
    ref_g = transformers.CLIPTextModelWithProjection(
        transformers.CLIPTextConfig(hidden_act="gelu", projection_dim=32, **base)).eval()
    ref_g.load_state_dict(sfu.convert_open_clip_checkpoint(ref_g, ckpt, prefix=g_prefix), strict=True)

    tok = default_tokenizer()
    prompt = "a majestic lion, golden hour"
    cond, pooled = encode_sdxl(clip_l, clip_g, tok, prompt)
    with torch.no_grad():
        out_l = ref_l(input_ids=torch.tensor([tok.encode_padded(prompt, 77)]), output_hidden_states=True)
        out_g = ref_g(input_ids=torch.tensor([tok.encode_padded(prompt, 77, pad_id=0)]), output_hidden_states=True)
    expected = torch.cat([out_l.hidden_states[-2], out_g.hidden_states[-2]], dim=-1)
    assert cond.shape == (1, 77, 128) and pooled.shape == (1, 32)
    assert_close(cond, expected, **CLIP_ROUNDING)
    assert_close(pooled, out_g.text_embeds, **CLIP_ROUNDING)


def test_sdxl_size_conditioning_matches_diffusers() -> None:
    embeddings = pytest.importorskip("diffusers.models.embeddings")
    pooled = torch.randn(2, 1280)
    y = sdxl_size_conditioning(pooled, width=1024, height=768, crop_w=16, crop_h=32,
                               target_width=1152, target_height=896)
    # diffusers: add_time_ids = original_size (h, w) + crops_coords_top_left (top, left) + target_size (h, w)
    time_ids = torch.tensor([[768.0, 1024.0, 32.0, 16.0, 896.0, 1152.0]] * 2)
    proj = embeddings.Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
    expected = torch.cat([pooled, proj(time_ids.flatten()).reshape(2, -1)], dim=-1)
    assert y.shape == (2, 2816)
    # sin/cos of t * freq: a rounding of the argument is relative to |t| (up to 1152), not to |sin| <= 1
    assert_close(y, expected, scale=float(time_ids.max()))
    default = sdxl_size_conditioning(pooled[:1], width=1024, height=1024)
    torch.testing.assert_close(default[:, 1280 + 4 * 256 :], default[:, 1280 : 1280 + 2 * 256], atol=0, rtol=0)
