"""T5 encoder vs transformers' T5EncoderModel on tiny random weights; T5 tokenizer vs transformers' T5Tokenizer.

The reference model's own state dict is what we load (HF key names), so passing strict
loading also proves the naming.  Sequences are longer than 128 tokens so that exact,
logarithmic and clamped relative-position buckets are all exercised.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from nodes.diffusion.models.t5 import (
    T5Config,
    T5Tokenizer,
    T5TokenizerError,
    build_t5_from_state_dict,
    is_t5_state_dict,
    t5_config_from_state_dict,
)
from tests.diffusion.flux_fixtures import assert_rel_close, randomize_

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REL = 1e-4  # fp32; observed differences ~1e-6 relative


def _reference(gated: bool, seed: int = 0):
    from transformers import T5Config as HFConfig
    from transformers import T5EncoderModel

    cfg = HFConfig(
        vocab_size=120, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=3,
        feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return randomize_(T5EncoderModel(cfg), seed).eval()


@pytest.fixture(scope="module", params=[True, False], ids=["v1.1-gated-gelu", "t5-relu"])
def reference(request):
    return request.param, _reference(request.param, seed=5)


def test_config_from_shapes(reference) -> None:
    gated, ref = reference
    cfg = t5_config_from_state_dict(ref.state_dict())
    assert cfg == T5Config(vocab_size=120, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=3, gated=gated)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_hidden_states_match_transformers(reference, masked: bool) -> None:
    _, ref = reference
    ours = build_t5_from_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 120, (2, 140), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 90:] = 0
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask if masked else None).last_hidden_state
        actual = ours(ids, mask if masked else None)
    assert_rel_close(actual, expected, REL)


def test_loads_embed_tokens_alias_and_fp16_storage(reference) -> None:
    """Files holding only ``encoder.embed_tokens.weight`` load; fp16 storage computes in float32."""
    _, ref = reference
    sd = {k: v.half() for k, v in ref.state_dict().items()}
    sd["encoder.embed_tokens.weight"] = sd.pop("shared.weight")
    ours = build_t5_from_state_dict(sd)
    assert ours.shared.weight.dtype == torch.float16
    upcast = build_t5_from_state_dict({k: v.float() for k, v in sd.items()})
    ids = torch.randint(0, 120, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = ours(ids), upcast(ids)
    assert a.dtype == torch.float32
    assert_rel_close(a, b, 1e-5)


# ------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------

CORPUS = [
    "a red circle in the top left",
    "a small blue square on a white background",
    "two green triangles at the bottom right",
    "a large yellow star in the centre of the picture",
] * 20


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small SentencePiece-unigram vocabulary trained here, saved by transformers' T5Tokenizer.

    The real T5 ``tokenizer.json`` cannot be downloaded in tests; a transformers-written file
    has the same structure (Metaspace pre-tokenizer, unigram model, ``</s>`` post-processor).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer as HFT5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(CORPUS, trainer)
    vocab = [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]]
    hf = HFT5Tokenizer(vocab=vocab, extra_ids=0)
    directory = tmp_path_factory.mktemp("t5tok")
    hf.save_pretrained(directory)
    return directory, hf


def test_tokenizer_matches_transformers_padding(tokenizer_dir) -> None:
    directory, hf = tokenizer_dir
    ours = T5Tokenizer(directory / "tokenizer.json")
    texts = ["a red circle in the top left", "two green triangles at the bottom right of a large star", ""]
    for max_length in (8, 16):
        expected = hf(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        ids, mask = ours(texts, max_length=max_length)
        assert torch.equal(ids, expected["input_ids"]), max_length
        assert torch.equal(mask, expected["attention_mask"])
    assert ours.pad_id == 0 and ours.eos_id == 1
    assert ids[2, 0] == 1 and ids[2, 1:].eq(0).all()  # empty prompt: just </s>


def test_tokenizer_found_beside_encoder(tokenizer_dir, tmp_path) -> None:
    directory, _ = tokenizer_dir
    encoder = tmp_path / "t5xxl_fp16.safetensors"
    encoder.write_bytes(b"")
    with pytest.raises(T5TokenizerError, match="put the T5 tokenizer.json at one of"):
        T5Tokenizer.beside(encoder)
    (tmp_path / "t5xxl_fp16.tokenizer.json").write_text((directory / "tokenizer.json").read_text())
    assert T5Tokenizer.beside(encoder).encode("a red circle")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(T5TokenizerError, match="not a readable tokenizer.json"):
        T5Tokenizer(tmp_path / "broken.json")


def test_t5_detection_and_incomplete_file(reference) -> None:
    _, ref = reference
    sd = ref.state_dict()
    assert is_t5_state_dict(sd)
    clip_like = {"text_model.embeddings.token_embedding.weight": torch.zeros(4, 4)}
    assert not is_t5_state_dict(clip_like)
    partial = {k: v for k, v in sd.items() if "DenseReluDense" not in k}
    with pytest.raises(ValueError, match="DenseReluDense.*is missing"):
        t5_config_from_state_dict(partial)
