"""CLIP BPE tokenizer: known ids, parity with transformers' CLIPTokenizer, pruned vocabularies."""

from __future__ import annotations

import gzip

import pytest

from nodes.diffusion.text.tokenizer import CLIP_NUM_MERGES, ClipTokenizer, default_tokenizer
from tests.diffusion.text_fixtures import write_hf_tokenizer_files

PROMPTS = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "masterpiece, best quality, 1girl, solo, (long hair:1.2)",
    "an astronaut riding a horse on mars, 8k, trending on artstation",
    "it's a dog's life; they're here, we've won, I'm sure, you'll see, he'd go",
    "''s quoted 'words' and \"double quotes\"",
    "3.14159 + 2,718 = 5.85 ... 100% 1st 22nd 2023-11-22",
    "naïve café résumé façade Ångström",
    "NAÏVE CAFÉ",  # lower-casing of non-ASCII letters
    "日本語のテキスト 東京タワー",
    "Привет мир, как дела?",
    "emoji 🐱🚀 and ✨sparkles✨",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "tabs\tand\nnewlines   and    spaces",
    "   leading and trailing   ",
    "",
    "!!!???...,,,;;;:::---___",
    "email@example.com https://example.org/path?q=1&x=y#frag",
    "&amp; &lt;tag&gt; html entities stay literal",
    "under_score snake_case CamelCase kebab-case",
    "C++ C# F# .NET node.js",
    "x²+y³ ½ ¼ Ⅻ numerals",
    "a\u0301 combining accent (NFC)",
    "ﬁ ligature and ＦＵＬＬＷＩＤＴＨ",
    "(((((nested))))) [[[brackets]]] {{{braces}}}",
    "<tag> | pipe | ~tilde~ `backtick` ^caret^",
    "dog,cat;bird:fish/horse\\cow",
    "1girl 2boys 3d 4k 16:9 aspect",
    "hello\u00a0non-breaking\u2003em space",
    "the quick brown fox jumps over the lazy dog " * 12,
    "Zoë's über-cool Straße",
]


def test_known_ids() -> None:
    tok = default_tokenizer()
    assert tok.vocab_size == 49408
    assert len(tok.merges) == CLIP_NUM_MERGES == 48894
    assert tok.encode_padded("a photo of a cat", length=7) == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_padding_and_truncation() -> None:
    tok = default_tokenizer()
    sd1 = tok.encode_padded("a cat", length=77)
    sd2 = tok.encode_padded("a cat", length=77, pad_id=0)
    assert len(sd1) == len(sd2) == 77
    assert sd1[:4] == sd2[:4] == [49406, 320, 2368, 49407]
    assert set(sd1[4:]) == {49407} and set(sd2[4:]) == {0}
    long = tok.encode_padded("cat " * 200, length=77)
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407 and long[1:-1] == [2368] * 75


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("hf_tok")
    vocab, merges = write_hf_tokenizer_files(default_tokenizer(), d)
    assert vocab.parent == merges.parent == d
    return transformers.CLIPTokenizer.from_pretrained(str(d))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_matches_transformers(hf_tokenizer, prompt: str) -> None:
    ours = default_tokenizer().encode(prompt)
    theirs = hf_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ours == theirs


def test_decode_roundtrip() -> None:
    tok = default_tokenizer()
    assert tok.decode(tok.encode("A photo of a CAT, 42!")) == "a photo of a cat , 4 2 !"
    assert tok.decode(tok.encode("emoji 🐱 café")) == "emoji 🐱 café"


def test_pruned_vocabulary_tokenizes_everything(tmp_path) -> None:
    # Keep only the first 500 merges: a self-consistent 1,014-token vocabulary.
    path = tmp_path / "pruned.txt.gz"
    full = default_tokenizer()
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(ClipTokenizer(full.merges[:500]).merges_text())
    tok = ClipTokenizer.from_file(path)
    assert tok.vocab_size == 512 + 500 + 2
    assert (tok.bos_id, tok.eos_id) == (1012, 1013)
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        assert all(0 <= i < tok.vocab_size for i in ids)
        # Byte-level fallback: nothing is lost, decoding gives the cleaned words back.
        assert tok.decode(ids).split() == full.decode(full.encode(prompt)).split()
    # Common short words survive as single tokens only if their merges were kept.
    assert len(tok.encode("antidisestablishmentarianism")) > len(full.encode("antidisestablishmentarianism"))


def test_pruned_vocabulary_matches_transformers(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    tok = ClipTokenizer(default_tokenizer().merges[:2000])
    vocab, merges = write_hf_tokenizer_files(tok, tmp_path)
    assert vocab.parent == merges.parent == tmp_path
    hf = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    for prompt in PROMPTS:
        assert tok.encode(prompt) == hf(prompt, add_special_tokens=False)["input_ids"], prompt
