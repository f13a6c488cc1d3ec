"""CLIP byte-level BPE tokenizer, implemented from the published algorithm.

Stable Diffusion's text encoders (OpenAI CLIP-L, OpenCLIP ViT-H and ViT-bigG) all
share one tokenizer: text is cleaned and lower-cased, split into words, numbers
and punctuation runs, each piece is turned into a string of "byte characters"
(every UTF-8 byte maps to one printable code point, so no input is ever out of
vocabulary) and then byte-pair merges are applied in rank order, with ``</w>``
marking the end of each word.

Why our own implementation: the app must not depend on ``transformers``, and
the vocabulary must be swappable (the tiny demo model uses a pruned merge
list). The vocabulary is *derived* from the merge list exactly as CLIP does it
(256 byte symbols, their 256 end-of-word variants, one token per merge, then
the two special tokens), so any subset of merges is a self-consistent
vocabulary in which every string still tokenizes.

Text cleaning matches the ``tokenizers``-backed ``transformers.CLIPTokenizer``
(the reference used by diffusers and ComfyUI): Unicode NFC, whitespace runs
collapsed, lower-casing. ``ftfy`` repairs and HTML-entity unescaping done by
OpenAI's original tokenizer are deliberately not applied (they would make
``&amp;`` or mojibake tokenize differently from the reference pipelines).

Pre-tokenization reproduces CLIP's split pattern
``<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``
with a small scanner over ``unicodedata`` categories instead of the
third-party ``regex`` module (the stdlib ``re`` has no ``\\p{L}``).
"""

from __future__ import annotations

import functools
import gzip
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "BOS_TOKEN",
    "CLIP_NUM_MERGES",
    "DEFAULT_VOCAB_PATH",
    "EOS_TOKEN",
    "ClipTokenizer",
    "bytes_to_unicode",
    "default_tokenizer",
]

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
#: CLIP uses only the first 49152 - 256 - 2 merge lines of the shipped file.
CLIP_NUM_MERGES = 49152 - 256 - 2
DEFAULT_VOCAB_PATH = Path(__file__).with_name("vocab") / "bpe_simple_vocab_16e6.txt.gz"

_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte value to a printable, non-whitespace character.

    Printable Latin-1 bytes map to themselves; the remaining 68 bytes
    (controls, space, NBSP, soft hyphen ...) are assigned code points 256, 257 ...
    in byte order. This is the GPT-2/CLIP convention, so our token strings equal
    the vocabulary's.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _category(ch: str) -> str:
    """Return 'L' for letters, 'N' for numbers, 'S' for whitespace, 'P' for anything else."""
    if ch.isspace():
        return "S"
    major = unicodedata.category(ch)[0]
    if major in ("L", "N"):
        return major
    return "P"


def _split_pieces(text: str) -> list[str]:
    """Split normalised text the way CLIP's regular expression does (leftmost match, first alternative)."""
    pieces: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith(BOS_TOKEN, i) or text.startswith(EOS_TOKEN, i):
            tok = BOS_TOKEN if text.startswith(BOS_TOKEN, i) else EOS_TOKEN
            pieces.append(tok)
            i += len(tok)
            continue
        ch = text[i]
        if ch == "'":
            contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
            if contraction is not None:
                pieces.append(contraction)
                i += len(contraction)
                continue
        cat = _category(ch)
        if cat == "S":
            i += 1
            continue
        if cat == "N":  # numbers are split into single digits
            pieces.append(ch)
            i += 1
            continue
        j = i + 1
        while j < n and _category(text[j]) == cat:
            j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = " ".join(text.split())
    return text.lower()


class ClipTokenizer:
    """Byte-level BPE tokenizer with CLIP's vocabulary layout.

    ``merges`` is the ordered merge list (rank = position). Token ids are: the
    256 byte characters, the same with ``</w>``, one per merge (the merged
    string), then ``<|startoftext|>`` and ``<|endoftext|>``.
    """

    def __init__(self, merges: Sequence[tuple[str, str]]) -> None:
        self.merges: list[tuple[str, str]] = [tuple(m) for m in merges]  # type: ignore[misc]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        base = list(self.byte_encoder.values())
        tokens = base + [c + END_OF_WORD for c in base] + ["".join(m) for m in self.merges]
        tokens += [BOS_TOKEN, EOS_TOKEN]
        self.vocab: dict[str, int] = {}
        for tok in tokens:  # first occurrence wins if a (pruned) merge list repeats a result
            self.vocab.setdefault(tok, len(self.vocab))
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.ranks = {m: r for r, m in enumerate(self.merges)}
        self.bos_id = self.vocab[BOS_TOKEN]
        self.eos_id = self.vocab[EOS_TOKEN]
        self._cache: dict[str, list[int]] = {}

    # -- construction -------------------------------------------------------
    @classmethod
    def from_file(
        cls, path: str | Path = DEFAULT_VOCAB_PATH, max_merges: int | None = CLIP_NUM_MERGES
    ) -> ClipTokenizer:
        """Load a merge file (plain or ``.gz``; first line is a header, then ``left right`` per line).

        ``max_merges`` caps the number of merges read (CLIP's file holds more than it
        uses); files with fewer merges (pruned vocabularies) are used whole.
        """
        path = Path(path)
        opener = gzip.open if path.suffix == ".gz" else open
        merges: list[tuple[str, str]] = []
        # Line by line, stopping at max_merges: CLIP's file has 262k lines of which it uses 49k, and a pruned
        # vocabulary (the demo model's 4,000 merges) needs the first few; reading it all took ~40 ms per load.
        with opener(path, "rt", encoding="utf-8") as fh:
            next(fh, None)  # header
            for line in fh:
                if max_merges is not None and len(merges) >= max_merges:
                    break
                parts = line.split()
                if len(parts) == 2:
                    merges.append((parts[0], parts[1]))
        return cls(merges)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # -- encoding -------------------------------------------------------------
    def _bpe(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        if piece in (BOS_TOKEN, EOS_TOKEN):
            ids = [self.vocab[piece]]
        else:
            chars = [self.byte_encoder[b] for b in piece.encode("utf-8")]
            symbols = chars[:-1] + [chars[-1] + END_OF_WORD]
            while len(symbols) > 1:
                best_rank, best = None, None
                for pair in zip(symbols, symbols[1:], strict=False):
                    rank = self.ranks.get(pair)
                    if rank is not None and (best_rank is None or rank < best_rank):
                        best_rank, best = rank, pair
                if best is None:
                    break
                merged: list[str] = []
                k = 0
                while k < len(symbols):
                    if k + 1 < len(symbols) and (symbols[k], symbols[k + 1]) == best:
                        merged.append(symbols[k] + symbols[k + 1])
                        k += 2
                    else:
                        merged.append(symbols[k])
                        k += 1
                symbols = merged
            ids = [self.vocab[s] for s in symbols]
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def words(self, text: str) -> list[str]:
        """The pre-tokenized pieces (after cleaning) that BPE is applied to."""
        return _split_pieces(_normalise(text))

    def encode_words(self, text: str) -> list[list[int]]:
        """Token ids grouped by pre-tokenized piece; used to avoid splitting a word across chunks."""
        return [self._bpe(p) for p in self.words(text)]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS/EOS."""
        return [i for ids in self.encode_words(text) for i in ids]

    def encode_padded(self, text: str, length: int = 77, pad_id: int | None = None) -> list[int]:
        """``[BOS] ids [EOS] [pad]...`` truncated/padded to ``length`` (pad defaults to EOS, as SD1 does)."""
        body = self.encode(text)[: length - 2]
        pad = self.eos_id if pad_id is None else pad_id
        ids = [self.bos_id, *body, self.eos_id]
        return ids + [pad] * (length - len(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Inverse of :meth:`encode` up to cleaning (special tokens are dropped)."""
        text = "".join(
            self.id_to_token[int(i)] for i in ids if int(i) not in (self.bos_id, self.eos_id)
        )
        raw = bytearray()
        for part in text.split(END_OF_WORD):
            raw.extend(self.byte_decoder[c] for c in part)
            raw.extend(b" ")
        return raw.decode("utf-8", errors="replace").strip()

    # -- export -----------------------------------------------------------------
    def merges_text(self) -> str:
        """The merge list in the ``#version: 0.2`` text format understood by :meth:`from_file`."""
        return "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> ClipTokenizer:
    """The standard 49,408-token CLIP tokenizer from the vocabulary shipped in ``vocab/`` (cached)."""
    return ClipTokenizer.from_file(DEFAULT_VOCAB_PATH)
