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

    Tiny encoders need a tiny vocabulary (the real one, shipped, is tested below); a transformers-written
    file has the real one's structure (Metaspace pre-tokenizer, unigram model, ``</s>`` post-processor).
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


# ----------------------------------------------------------------------------- the shipped T5 tokenizer


@pytest.fixture(scope="module")
def shipped() -> T5Tokenizer:
    return T5Tokenizer.shipped()  # parsed once per process (lru_cache); the fixture only names it


def test_shipped_tokenizer_gives_the_documented_ids(shipped) -> None:
    """The ids Hugging Face's T5 documentation prints for its training example (input and labels, with
    ``</s>`` = 1 appended), through our padding call."""
    documented = {
        "translate English to German: The house is wonderful.": [13959, 1566, 12, 2968, 10, 37, 629, 19, 1627, 5, 1],
        "Das Haus ist wunderbar.": [644, 4598, 229, 19250, 5, 1],
    }
    for text, expected in documented.items():
        ids, mask = shipped(text, max_length=16)
        n = len(expected)
        assert ids[0, :n].tolist() == expected and mask[0, :n].all()
        assert ids[0, n:].eq(shipped.pad_id).all() and not mask[0, n:].any()
    assert (shipped.pad_id, shipped.eos_id) == (0, 1) and shipped.path is None
    assert shipped._tok.get_vocab_size() == 32100
    assert T5Tokenizer.shipped()._tok is shipped._tok  # one parse per process


def test_shipped_tokenizer_only_for_t5_v11_vocabularies(shipped, tokenizer_dir, tmp_path) -> None:
    """No tokenizer.json beside the encoder: T5 v1.1 / T5-XXL (32,128 rows; 32,100 ids) get the shipped one;
    a tiny test vocabulary, mT5/umT5 (~250k rows) or an unknown size keep the error naming where to put it."""
    encoder = tmp_path / "t5xxl_fp16.safetensors"
    encoder.write_bytes(b"")
    for rows in (32128, 32100):
        assert T5Tokenizer.beside(encoder, rows)._tok is shipped._tok
    for rows in (100, 32099, 32129, 250112, 256384, None):
        with pytest.raises(T5TokenizerError, match="put the T5 tokenizer.json at one of"):
            T5Tokenizer.beside(encoder, rows)
    with pytest.raises(T5TokenizerError, match="256384-token vocabulary is not T5 v1.1's 32128"):
        T5Tokenizer.beside(encoder, 256384)
    # A tokenizer.json beside the encoder wins even when the shipped one would fit.
    directory, hf = tokenizer_dir
    (tmp_path / "tokenizer.json").write_text((directory / "tokenizer.json").read_text())
    beside = T5Tokenizer.beside(encoder, 32128)
    assert beside.path == tmp_path / "tokenizer.json"
    text = "a red circle in the top left"
    assert beside.encode(text) == hf(text, add_special_tokens=False)["input_ids"] != shipped.encode(text)


def _t5_file(path, vocab: int) -> dict[str, torch.Tensor]:
    """A one-block T5 v1.1 encoder with ``vocab`` embedding rows, saved as safetensors."""
    from safetensors.torch import save_file

    from nodes.diffusion.models.t5 import T5Encoder

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=vocab, d_model=16, d_kv=4, num_heads=2, d_ff=24, num_layers=1)
    sd = {k: v.contiguous() for k, v in T5Encoder(cfg).state_dict().items()}
    save_file(sd, str(path))
    return sd


def test_header_vocab_decides_validation_and_load(shipped, tmp_path) -> None:
    """The embedding rows come from the file header at validation (safetensors and GGUF) and from the
    model at load; a 32,128-row T5 without a tokenizer.json validates and loads with the shipped tokenizer,
    a 100-row one is refused at validation with the put-it-beside message."""
    from nodegraph.errors import NodeInputError
    from nodes.diffusion.pack.flux import _need_t5_tokenizer
    from nodes.diffusion.split_files import identify_file, load_text_encoder_part

    big, small = tmp_path / "big" / "t5xxl_fp16.safetensors", tmp_path / "small" / "tiny_t5.safetensors"
    for path, vocab in ((big, 32128), (small, 100)):
        path.parent.mkdir()
        _t5_file(path, vocab)
        identity = identify_file(path)
        assert identity.kind == "t5" and identity.info["vocab"] == vocab and identity.info["width"] == 16
    _need_t5_tokenizer(big, "clip_name2", identify_file(big).info["vocab"])
    with pytest.raises(NodeInputError, match="no T5 tokenizer") as err:
        _need_t5_tokenizer(small, "clip_name2", identify_file(small).info["vocab"])
    assert "tiny_t5.tokenizer.json" in err.value.fix
    part = load_text_encoder_part(big)
    assert part.tokenizer._tok is shipped._tok and part.tokenizer.encode("Hello world") == [8774, 296]
    with pytest.raises(T5TokenizerError, match="put the T5 tokenizer.json"):
        load_text_encoder_part(small)


def test_gguf_header_carries_the_vocab(tmp_path) -> None:
    import numpy as np

    from nodes.diffusion.quant.gguf_write import write_gguf
    from nodes.diffusion.split_files import identify_file

    tensors = {"token_embd.weight": np.zeros((32128, 32), np.float32),
               "enc.blk.0.attn_q.weight": np.zeros((32, 32), np.float32)}
    write_gguf(tmp_path / "t5-Q8_0.gguf", tensors, 8, arch="t5encoder")
    identity = identify_file(tmp_path / "t5-Q8_0.gguf")
    assert identity.kind == "t5" and (identity.info["vocab"], identity.info["width"]) == (32128, 32)
