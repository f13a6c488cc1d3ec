"""Qwen3 text encoder: hidden states equal transformers' Qwen3Model on a tiny random model; tokenizer.json reading.

The tiny reference has grouped-query attention (4 query heads sharing 2 key/value heads),
a head width that is not hidden/heads (as Qwen3-4B: 32 x 128 != 2560) and a non-default
RoPE base, so each of those has to be read or passed correctly for the states to agree.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from nodes.diffusion.models.qwen3 import (
    ZIMAGE_TEMPLATE,
    Qwen3Config,
    Qwen3Encoder,
    Qwen3Tokenizer,
    build_qwen3_from_state_dict,
    is_qwen3_state_dict,
    qwen3_config_from_json,
    qwen3_config_from_state_dict,
)
from tests.diffusion.flux_fixtures import assert_rel_close, randomize_

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REL = 1e-4
TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, max_position_embeddings=256,
            tie_word_embeddings=True)  # fmt: skip
THETA = 5000.0


@pytest.fixture(scope="module")
def reference():
    from transformers import Qwen3Config as HFConfig
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = HFConfig(**TINY, rope_parameters={"rope_type": "default", "rope_theta": THETA})
    model = Qwen3ForCausalLM(cfg)
    randomize_(model, 5)
    model.config._attn_implementation = "eager"
    return model.eval()


def _ours(reference) -> Qwen3Encoder:
    return build_qwen3_from_state_dict(reference.state_dict(), Qwen3Config(rope_theta=THETA))


def _hf_states(reference, ids, mask=None):
    with torch.no_grad():
        return reference.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states


def test_config_from_shapes(reference) -> None:
    sd = reference.state_dict()
    assert is_qwen3_state_dict(sd) and not is_qwen3_state_dict(["model.embed_tokens.weight"])
    assert qwen3_config_from_state_dict(sd, Qwen3Config(rope_theta=THETA)) == Qwen3Config(
        vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=3, num_heads=4, num_kv_heads=2,
        head_dim=32, rope_theta=THETA,
    )  # fmt: skip


@pytest.mark.parametrize("layer", [0, 1, -2, -1])
def test_hidden_states_match_transformers(reference, layer: int) -> None:
    ids = torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(1))
    expected = _hf_states(reference, ids)[layer]
    with torch.no_grad():
        actual = _ours(reference)(ids, hidden_layer=layer)
    assert_rel_close(actual, expected, REL)


def test_right_padding_keeps_real_token_states(reference) -> None:
    """A right-padded batch: real tokens' states equal transformers' for the padded batch and
    the unpadded prompt alone (what ZImagePipeline keeps)."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 300, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.int64)
    mask[1, 5:] = 0
    ours = _ours(reference)
    with torch.no_grad():
        batch = ours(ids, mask)
        alone = ours(ids[1:, :5])
    assert_rel_close(batch, _hf_states(reference, ids, mask)[-2], REL)
    assert_rel_close(batch[1, :5], alone[0], 1e-5)


def test_wrong_rope_base_changes_output(reference) -> None:
    """The RoPE base is not in the weights: a wrong one silently changes the states, hence the config."""
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(3))
    wrong = build_qwen3_from_state_dict(reference.state_dict())  # Qwen3's default base 1e6
    right = _ours(reference)
    with torch.no_grad():
        a, b = wrong(ids), right(ids)
    assert (a - b).abs().max() > 1e-3 * b.abs().max()


def test_config_json_and_prefixless_dict(tmp_path, reference) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"rope_parameters": {"rope_theta": THETA}, "rms_norm_eps": 1e-6}))
    base = qwen3_config_from_json(tmp_path / "config.json")
    assert base.rope_theta == THETA
    bare = {k[len("model.") :]: v for k, v in reference.state_dict().items() if k.startswith("model.")}
    ids = torch.randint(0, 300, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert_rel_close(build_qwen3_from_state_dict(bare, base)(ids), _hf_states(reference, ids)[-2], REL)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float8_e4m3fn], ids=["fp16", "fp8"])
def test_low_precision_storage(dtype, reference) -> None:
    half = {k: v.to(dtype) for k, v in reference.state_dict().items()}
    stored = build_qwen3_from_state_dict(half, Qwen3Config(rope_theta=THETA))
    upcast = build_qwen3_from_state_dict({k: v.float() for k, v in half.items()}, Qwen3Config(rope_theta=THETA))
    ids = torch.randint(0, 300, (1, 7), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert_rel_close(stored(ids), upcast(ids), 1e-5)


def test_bad_input(reference) -> None:
    ours = _ours(reference)
    with pytest.raises(ValueError, match="hidden_layer 5 out of range"):
        ours(torch.zeros(1, 3, dtype=torch.int64), hidden_layer=5)
    with pytest.raises(ValueError, match="not a Qwen3"):
        build_qwen3_from_state_dict({"shared.weight": torch.zeros(2, 2)})
    sd = dict(reference.state_dict())
    del sd["model.layers.0.mlp.gate_proj.weight"]
    with pytest.raises(ValueError, match="gate_proj.weight' is missing"):
        build_qwen3_from_state_dict(sd)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Qwen3Tokenizer("/nonexistent/tokenizer.json")
    with torch.device("meta"):
        assert all(p.is_meta for p in Qwen3Encoder(Qwen3Config(num_layers=1)).parameters())


# ----------------------------------------------------------------------------- tokenizer


def _tiny_tokenizer_file(tmp_path) -> str:
    """A byte-level BPE trained on a few sentences, with Qwen's special tokens (as in its tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    corpus = ["a photo of a cat", "a red square on a blue background", "user assistant", "the quick brown fox"] * 20
    tok.train_from_iterator(corpus, trainer)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def test_tokenizer_applies_template_and_pads(tmp_path) -> None:
    from transformers import PreTrainedTokenizerFast

    path = _tiny_tokenizer_file(tmp_path)
    ours = Qwen3Tokenizer(path)
    hf = PreTrainedTokenizerFast(tokenizer_file=path)
    prompts = ["a red square", "a photo of a cat on a blue background"]
    ids, mask = ours(prompts)
    for i, p in enumerate(prompts):
        expected = hf(ZIMAGE_TEMPLATE.format(p), add_special_tokens=False)["input_ids"]
        n = int(mask[i].sum())
        assert ids[i, :n].tolist() == expected
        assert (ids[i, n:] == ours.pad_id).all() and ours.pad_id == hf.convert_tokens_to_ids("<|endoftext|>")
    # The chat markers are single special tokens: the prompt starts <|im_start|> and the turn ends <|im_end|>.
    start, end = hf.convert_tokens_to_ids("<|im_start|>"), hf.convert_tokens_to_ids("<|im_end|>")
    assert ids[0, 0] == start and end in ids[0].tolist()
    assert mask[0].sum() < mask[1].sum() and mask.shape == ids.shape


def test_tokenizer_truncates(tmp_path) -> None:
    ours = Qwen3Tokenizer(_tiny_tokenizer_file(tmp_path), max_length=6)
    ids, mask = ours("the quick brown fox " * 10)
    assert ids.shape == (1, 6) and mask.all()
