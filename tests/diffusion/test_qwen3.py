"""Qwen3 text encoder: hidden states equal transformers' Qwen3Model on a tiny random model; tokenizer.json reading;
the built-in Qwen tokenizer equals transformers' Qwen2Tokenizer reading the same merges.

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
    shipped_qwen_tokenizer,
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


# ----------------------------------------------------------------------------- the built-in Qwen tokenizer

#: English prompts, Chinese, mixed scripts, digits, punctuation runs, contractions, newlines / CRLF, runs of
#: spaces and tabs, emoji, a decomposed accent (NFC), code, and Z-Image's chat template with its markers.
QWEN_CORPUS = [
    "a photo of a cat sitting on a windowsill, golden hour, 35mm, f/1.8",
    "A serene Japanese garden with cherry blossoms; koi pond & stone lanterns!!!",
    "一只橘猫坐在窗台上，阳光洒在它的毛上。",
    "中文和English混合的提示词 with 数字 2024年12月4日",
    "numbers 12345 and 3.14159 and 1,000,000 and -42",
    'punctuation runs: ?!?! ... --- *** ((( ))) "quoted" \'single\' ~~~///\\\\',
    "don't I'LL we've they're IT'S you'd she's",
    "line one\nline two\n\n\nline three\r\nline four\n",
    "multiple   spaces    here\t\ttabs  \n  indented",
    "   leading and trailing spaces   ",
    "emoji 🐱🎨🌸 and accents café naïve cafe\u0301 Ångström",
    "Ünïcödé Ελληνικά русский العربية हिन्दी 한국어 日本語のテキスト",
    "code: def f(x):\n    return x**2  # square\n",
    "URL https://example.com/path?q=1&r=2 and a.b@c.de",
    "",
    ZIMAGE_TEMPLATE.format("a red square on a blue background"),
    ZIMAGE_TEMPLATE.format("一只猫在雪地里，水彩画风格"),
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
]


@pytest.fixture(scope="module")
def qwen_pair(tmp_path_factory):
    """(ours, transformers' Qwen2Tokenizer): transformers reads a vocab.json + merges.txt + tokenizer_config.json
    folder written here from the shipped merges (transformers' own byte alphabet; its Qwen2 class defines the
    normaliser, split pattern and byte-level steps itself).  Built once: ~1 s each."""
    import gzip

    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from nodes.diffusion.models.qwen3 import QWEN_SPECIAL_TOKENS, SHIPPED_MERGES

    with gzip.open(SHIPPED_MERGES, "rt", encoding="utf-8") as fh:
        lines = [line for line in fh.read().split("\n") if line]
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for line in lines:
        vocab[line.replace(" ", "", 1)] = len(vocab)
    directory = tmp_path_factory.mktemp("qwen2tok")
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    added = {str(len(vocab) + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "special": True} for i, t in enumerate(QWEN_SPECIAL_TOKENS)}
    config = {"tokenizer_class": "Qwen2Tokenizer", "added_tokens_decoder": added, "eos_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>", "unk_token": None, "bos_token": None}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return shipped_qwen_tokenizer(), Qwen2Tokenizer.from_pretrained(str(directory))


def test_builtin_qwen_tokenizer_matches_transformers(qwen_pair) -> None:
    import unicodedata

    ours, hf = qwen_pair
    for text in QWEN_CORPUS:
        ids = ours.encode(text, add_special_tokens=False).ids
        assert ids == hf.encode(text, add_special_tokens=False), text
        assert ours.decode(ids, skip_special_tokens=False) == unicodedata.normalize("NFC", text)
    assert len(hf) == ours.get_vocab_size() == 151669
    # The added tokens sit where Qwen's tokenizer_config puts them.
    for token, expected in {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                            "<|vision_pad|>": 151654, "<think>": 151667, "</think>": 151668}.items():
        assert ours.token_to_id(token) == hf.convert_tokens_to_ids(token) == expected, token
    # Numbers split into single digits; the chat markers are single tokens.
    assert ours.encode("12345", add_special_tokens=False).ids == [ours.token_to_id(d) for d in "12345"]
    assert shipped_qwen_tokenizer() is ours  # built once per process


def test_qwen3_tokenizer_from_a_prepared_tokenizer_applies_the_template(qwen_pair) -> None:
    ours, hf = qwen_pair
    tok = Qwen3Tokenizer(ours)
    prompts = ["a red square", "一只猫在雪地里"]
    ids, mask = tok(prompts)
    for i, p in enumerate(prompts):
        expected = hf(ZIMAGE_TEMPLATE.format(p), add_special_tokens=False)["input_ids"]
        assert ids[i, : int(mask[i].sum())].tolist() == expected
    assert ids[0, 0] == 151644 and tok.pad_id == 151643
    assert (ids[mask == 0] == 151643).all() and mask[0].sum() != mask[1].sum()


def _qwen3_file(path, vocab: int) -> None:
    """A one-layer Qwen3 with ``vocab`` embedding rows (narrow, so a 151,936-row table is ~5 MB in fp16)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=16, intermediate_size=24, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=8)
    save_file({k: v.half().contiguous() for k, v in Qwen3Encoder(cfg).state_dict().items()}, str(path))


def test_builtin_qwen_tokenizer_only_for_qwen_vocabularies(qwen_pair, tmp_path) -> None:
    """No tokenizer.json beside a Qwen3 encoder: Qwen's 151,936-row vocabulary (read from the header at
    validation, from the model at load) gets the built-in tokenizer; a tiny test vocabulary keeps the error
    naming where to put the file; a tokenizer.json beside the encoder wins."""
    from nodegraph.errors import NodeInputError
    from nodes.diffusion.pack.flux import _need_qwen3_tokenizer
    from nodes.diffusion.split_files import (
        MissingTokenizer,
        identify_file,
        load_text_encoder_part,
        qwen3_tokenizer_beside,
        qwen3_tokenizer_path,
    )

    ours, hf = qwen_pair
    big, small = tmp_path / "big" / "qwen_3_4b.safetensors", tmp_path / "small" / "tiny_qwen.safetensors"
    for path, vocab in ((big, 151936), (small, 300)):
        path.parent.mkdir()
        _qwen3_file(path, vocab)
        identity = identify_file(path)
        assert identity.kind == "qwen3" and identity.info["vocab"] == vocab
    assert qwen3_tokenizer_path(big, 151936) is None
    _need_qwen3_tokenizer(big, "clip_name", identify_file(big).info["vocab"])
    for rows in (300, 151643, 151937, None):
        with pytest.raises(MissingTokenizer, match="no Qwen3 tokenizer"):
            qwen3_tokenizer_path(small, rows)
    with pytest.raises(NodeInputError, match="no Qwen3 tokenizer") as err:
        _need_qwen3_tokenizer(small, "clip_name", identify_file(small).info["vocab"])
    assert "tiny_qwen.tokenizer.json" in err.value.fix
    part = load_text_encoder_part(big)
    text = "a cat, 12345!"
    assert part.tokenizer._tok is ours
    assert part.tokenizer.token_ids(text) == hf(ZIMAGE_TEMPLATE.format(text), add_special_tokens=False)["input_ids"]
    # A tokenizer.json beside the encoder takes precedence over the built-in one.
    (big.parent / "tokenizer.json").write_text(ours.to_str().replace('"<think>"', '"<thinking>"'), encoding="utf-8")
    assert qwen3_tokenizer_path(big, 151936) == big.parent / "tokenizer.json"
    beside = qwen3_tokenizer_beside(big, 151936)
    assert beside._tok is not ours and beside._tok.token_to_id("<thinking>") == 151667
