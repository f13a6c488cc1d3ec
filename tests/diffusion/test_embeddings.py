"""Textual-inversion embeddings: ``embedding:name`` in prompts.

Reference: a hand-built prompt -- the token embeddings of the prompt's words with the
embedding's vectors spliced in at the placeholder positions, plus positions, run through the
same CLIP layers by hand -- must equal what ``encode`` produces.  Formats: A1111 ``.pt``
(``string_to_param``), diffusers ``.bin``, one-tensor safetensors (``emb_params``), SDXL
(``clip_l``/``clip_g``); unsafe pickles are refused; an unknown name is an error on the node's
``text`` input naming the embedding and the folders searched.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from nodegraph.errors import NodeInputError
from nodes.diffusion.families import rules_for
from nodes.diffusion.models.clip_text import build_clip_from_state_dict, openclip_to_hf
from nodes.diffusion.runtime import TextEncoder
from nodes.diffusion.text.embeddings import (
    EmbeddingError,
    EmbeddingLibrary,
    EmbeddingSlots,
    load_embedding,
    split_embeddings,
)
from nodes.diffusion.text.encode import SD1, SDXL_G, SDXL_L, EncoderSettings, encode
from nodes.diffusion.text.tokenizer import default_tokenizer
from tests.diffusion.text_fixtures import CLIP_ROUNDING, make_hf_clip_sd, make_openclip_sd, strip_prefix
from tests.tolerance import assert_close

WIDTH = 64


@pytest.fixture(scope="module")
def clip_l():
    prefix = "cond_stage_model.transformer."
    return build_clip_from_state_dict(strip_prefix(make_hf_clip_sd(prefix), prefix), activation="quick_gelu")


@pytest.fixture(scope="module")
def clip_g():
    return build_clip_from_state_dict(openclip_to_hf(make_openclip_sd("", width=WIDTH)), activation="gelu")


def _vectors(n: int, seed: int, width: int = WIDTH) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)) * 0.5


def _hand_built(model, words_before: str, vectors: torch.Tensor, words_after: str,  # noqa: ANN001
                settings: EncoderSettings, pad: int) -> torch.Tensor:
    """[1, 77, width]: the encoder run by hand on word tokens with ``vectors`` spliced in between."""
    tok = default_tokenizer()
    before, after = tok.encode(words_before), tok.encode(words_after)
    ids = [tok.bos_id, *before, *([0] * len(vectors)), *after, tok.eos_id]
    ids += [pad] * (77 - len(ids))
    tm = model.text_model
    with torch.no_grad():
        x = tm.embeddings.token_embedding(torch.tensor([ids]))
        start = 1 + len(before)
        x[0, start:start + len(vectors)] = vectors
        x = x + tm.embeddings.position_embedding.weight[:77]
        hidden = [x]
        for layer in tm.encoder.layers:
            x = layer(x)
            hidden.append(x)
        h = hidden[-settings.clip_skip]
        return tm.final_layer_norm(h) if settings.final_norm else h


def _slots(table: dict[str, dict[str, torch.Tensor]]) -> EmbeddingSlots:
    return EmbeddingSlots(lambda name: table[name])


def test_split_embeddings_finds_names_at_word_starts() -> None:
    assert split_embeddings("a embedding:foo, embedding:sub/bar.pt cat") == [
        "a ", ("foo",), ", ", ("sub/bar.pt",), " cat"]
    assert split_embeddings("myembedding:foo") == ["myembedding:foo"]  # not at a word start: plain text


def test_embedding_tokens_equal_hand_built_prompt(clip_l) -> None:  # noqa: ANN001
    tok = default_tokenizer()
    vec = _vectors(3, 1)
    cond, _ = encode(clip_l, tok, "a photo of embedding:style cat", settings=SD1,
                     embeddings=_slots({"style": {"": vec}}))
    expected = _hand_built(clip_l, "a photo of", vec, "cat", SD1, tok.eos_id)
    assert_close(cond, expected, **CLIP_ROUNDING)
    # The vectors really matter: a different embedding gives a different encoding.
    other, _ = encode(clip_l, tok, "a photo of embedding:style cat", settings=SD1,
                      embeddings=_slots({"style": {"": _vectors(3, 2)}}))
    assert (other - cond).abs().max() > 1e-2


def test_weighted_embedding_interpolates_from_empty_prompt(clip_l) -> None:  # noqa: ANN001
    tok = default_tokenizer()
    slots = _slots({"style": {"": _vectors(2, 3)}})
    plain, _ = encode(clip_l, tok, "a embedding:style cat", settings=SD1, embeddings=slots)
    weighted, _ = encode(clip_l, tok, "a (embedding:style:1.2) cat", settings=SD1, embeddings=slots)
    empty, _ = encode(clip_l, tok, "", settings=SD1)
    expected = plain.clone()
    expected[:, 2:4] = empty[:, 2:4] + (plain[:, 2:4] - empty[:, 2:4]) * 1.2  # BOS, "a", then the 2 vectors
    assert_close(weighted, expected, **CLIP_ROUNDING)


def test_sdxl_embedding_gives_each_encoder_its_vectors(clip_l, clip_g) -> None:  # noqa: ANN001
    tok = default_tokenizer()
    vl, vg = _vectors(2, 4), _vectors(2, 5)
    enc = TextEncoder((clip_l, clip_g), tok, rules_for("sdxl"), torch.device("cpu"))
    cond = enc.encode("red embedding:xl star", embeddings=_slots({"xl": {"clip_l": vl, "clip_g": vg}})).context
    expected = torch.cat([_hand_built(clip_l, "red", vl, "star", SDXL_L, tok.eos_id),
                          _hand_built(clip_g, "red", vg, "star", SDXL_G, 0)], dim=-1)
    assert_close(cond, expected, **CLIP_ROUNDING)


def test_wrong_width_is_refused(clip_l) -> None:  # noqa: ANN001
    with pytest.raises(EmbeddingError, match="32-wide"):
        encode(clip_l, default_tokenizer(), "embedding:x", settings=SD1,
               embeddings=_slots({"x": {"": _vectors(1, 6, width=32)}}))


def test_file_formats(tmp_path: Path) -> None:
    vec = _vectors(2, 7)
    torch.save({"string_to_param": {"*": vec}, "name": "a1111"}, tmp_path / "a.pt")
    torch.save({"<concept>": vec[0]}, tmp_path / "b.bin")
    save_file({"emb_params": vec}, tmp_path / "c.safetensors")
    save_file({"clip_l": vec, "clip_g": _vectors(2, 8, 32)}, tmp_path / "d.safetensors")
    assert torch.equal(load_embedding(tmp_path / "a.pt")[""], vec)
    assert torch.equal(load_embedding(tmp_path / "b.bin")[""], vec[:1])
    assert torch.equal(load_embedding(tmp_path / "c.safetensors")[""], vec)
    assert set(load_embedding(tmp_path / "d.safetensors")) == {"clip_l", "clip_g"}
    lib = EmbeddingLibrary([tmp_path])
    assert lib.find("c") == tmp_path / "c.safetensors" and lib.find("a.pt") == tmp_path / "a.pt"


class _Evil:
    def __reduce__(self):  # noqa: ANN204
        return (print, ("unpickled!",))


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    torch.save({"string_to_param": {"*": _vectors(1, 9)}, "x": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(EmbeddingError, match="safely"):
        load_embedding(tmp_path / "evil.pt")


def test_node_resolves_embeddings_and_names_missing_ones(tmp_path: Path, clip_l) -> None:  # noqa: ANN001
    from nodes.diffusion.pack.conditioning import text_encode

    folder = tmp_path / "embeddings"
    folder.mkdir()
    vec = _vectors(2, 10)
    save_file({"emb_params": vec}, folder / "style.safetensors")
    ctx = SimpleNamespace(settings={"models_dir": str(tmp_path), "include_demo_models": False},
                          services={}, device="cpu", workflow=None, stats=lambda *a: None)
    enc = TextEncoder((clip_l,), default_tokenizer(), rules_for("sd1"), torch.device("cpu"))
    got = text_encode.fn(ctx, enc, "a photo of embedding:style cat").context
    expected = _hand_built(clip_l, "a photo of", vec, "cat", SD1, default_tokenizer().eos_id)
    assert_close(got, expected, **CLIP_ROUNDING)
    with pytest.raises(NodeInputError) as err:
        text_encode.fn(ctx, enc, "a photo of embedding:missing_one cat")
    assert err.value.input == "text"
    assert "missing_one" in str(err.value) and str(folder) in str(err.value)


def test_missing_embedding_in_a_run_names_node_input_name_and_folder(tmp_path: Path) -> None:
    from tests.diffusion.pipeline_fixtures import make_executor, txt2img_graph, write_tiny_checkpoint

    models = tmp_path / "models"
    ckpt = write_tiny_checkpoint(models, "sd1")
    report = make_executor(models, tmp_path / "out").run(
        txt2img_graph(ckpt.name, prompt="a fox, embedding:EasyNegative", steps=1), outputs=["decode"])
    assert report.status == "error"
    err = report.error
    assert err.node_id == "positive" and err.node_type == "diffusion.text_encode" and err.input == "text"
    assert "EasyNegative" in err.message and str(models / "embeddings") in err.message  # the fix is in it
