"""The n-gram model's features: each text's distinct word (and character) n-grams, hashed.

    texts -> words (a `TextEncoder` over the whole training vocabulary, no padding cap)
          -> the set of distinct 1..max_n-grams of each text (and, with `char_ngrams`, of
             its lowercased characters' n-grams), hashed into 2**buckets_log2 ids

`NGramFeaturizer` gives them as `embedding_bag` takes them (prediction), or for a fit's many
passes as `Bags` (n-gram, text) pairs, in memory up to a budget and the rest in a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gru_lightning.preprocessing import PAD_ID, TextEncoder, punctuation_marks
from gru_lightning.settings import positive_int

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64: Fibonacci hashing
_CHAR_BASE = 1_000_003  # a character n-gram's key: its code points as digits of this base
_GROUP_SALT = 0x2545F4914F6CDD1D  # a group's word id times this marks its joined n-grams
_CHAR_SALT = 0x5BD1E995  # added to character keys, which then rarely equal a word n-gram's
CHUNK = 1000  # texts featurized at once: bounds the [chunk, max_words] id tensor
FIT_CHUNK = 8192  # texts per chunk of the fit's stored n-grams (~45 MB for IMDB reviews)
PUNCTUATION = '!?.,;:"()-*/'  # read as words: marks carry tone ("!", "?") and structure


class NGramFeaturizer:
    """Texts to their distinct hashed n-grams (the settings are `NGramModel`'s, which see).

    `fit` learns the word vocabulary from the training texts; every other method needs it.
    """

    def __init__(self, max_n: int = 3, buckets_log2: int = 22, max_vocab: int = 500_000,
                 max_words: int = 3000, punctuation: bool | str = PUNCTUATION,
                 char_ngrams: Sequence[int] | None = None, group_by_last_word: bool = False,
                 ) -> None:
        for name, value in (("max_n", max_n), ("buckets_log2", buckets_log2),
                            ("max_vocab", max_vocab), ("max_words", max_words)):
            positive_int(f"ngram.model.{name}", value)
        if buckets_log2 > 30:
            raise ValueError(f"ngram.model.buckets_log2 must be <= 30 (4 GB of weights), got "
                             f"{buckets_log2}")
        if max_vocab**max_n >= 2**62:  # an n-gram's key packs its word ids into one int64
            raise ValueError(f"ngram.model.max_vocab**ngram.model.max_n must be < 2**62 (n-gram "
                             f"keys are int64), got {max_vocab}**{max_n}")
        punctuation_marks(punctuation)  # rejects what is not a set of marks
        if not isinstance(group_by_last_word, bool):
            raise ValueError(f"ngram.model.group_by_last_word must be true or false, got "
                             f"{group_by_last_word!r}")
        self.max_n = max_n
        self.buckets_log2 = buckets_log2
        self.max_vocab = max_vocab
        self.max_words = max_words
        self.punctuation = punctuation
        self.char_ngrams = char_range(char_ngrams)
        self.group_by_last_word = group_by_last_word
        self.words: TextEncoder | None = None

    def fit(self, texts: Sequence[str]) -> NGramFeaturizer:
        """The word vocabulary of the training texts."""
        self.words = TextEncoder.fit(texts, self.max_vocab, self.max_words, padding="post",
                                     truncating="post", punctuation=self.punctuation)
        return self

    def bags(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct hashed n-grams of each text, as `embedding_bag` takes them: ids (each
        text's sorted, concatenated) and the offset where each text's ids start."""
        ids, offsets, _ = self.bags_and_lengths(texts)
        return ids, offsets

    def bags_and_lengths(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """`bags`, and each text's number of words (at most `max_words`)."""
        if self.words is None:
            raise RuntimeError("the n-gram model is not fitted")
        ids, offsets, lengths, total = [], [], [], 0
        for start in range(0, len(texts), CHUNK):
            chunk_ids, chunk_offsets, chunk_lengths = self.chunk_bags(
                texts[start : start + CHUNK])
            ids.append(chunk_ids)
            offsets.append(chunk_offsets + total)
            lengths.append(chunk_lengths)
            total += len(chunk_ids)
        if not ids:
            return (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                    torch.zeros(0, dtype=torch.long))
        return torch.cat(ids), torch.cat(offsets), torch.cat(lengths)

    def chunk_bags(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """`bags_and_lengths` of at most `CHUNK` texts: bounds the [texts, max_words] ids."""
        words = self.words.encode(texts)  # [n, max_words], padded after the text
        vocab = self.words.vocab_size
        present = words != PAD_ID
        keys, valid = words, present
        bucket_keys = [words[present]]
        rows = [present.nonzero()[:, 0]]
        for n in range(2, self.max_n + 1):
            # The key of an n-gram packs its word ids (ids >= 1, so n-grams of different
            # lengths never share a key).
            keys = keys[:, :-1] * vocab + words[:, n - 1 :]
            valid = valid[:, :-1] & present[:, n - 1 :]
            bucket_keys.append(keys[valid])
            rows.append(valid.nonzero()[:, 0])
        if self.char_ngrams is not None:
            char_keys, char_rows = self._char_keys(texts)
            bucket_keys.append(char_keys)
            rows.append(char_rows)
        if self.group_by_last_word:
            # Each n-gram also joined to the text's group: the group's own weight beside the
            # shared one.
            lengths = present.sum(dim=1)
            group = words[torch.arange(len(words)), (lengths - 1).clamp(min=0)]
            keys, text_of = torch.cat(bucket_keys), torch.cat(rows)
            bucket_keys.append(keys ^ (group[text_of] * _GROUP_SALT))
            rows.append(text_of)
        shift = 64 - self.buckets_log2
        mask = (1 << self.buckets_log2) - 1
        buckets = ((torch.cat(bucket_keys) * _GOLDEN) >> shift) & mask
        # Binary features: each n-gram once per text. unique() sorts by (text, bucket).
        pairs = torch.unique(torch.cat(rows) * (mask + 1) + buckets)
        text_of = pairs >> self.buckets_log2
        offsets = torch.searchsorted(text_of, torch.arange(len(texts)))
        return pairs & mask, offsets, present.sum(dim=1)

    def _char_keys(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys of each text's character n-grams (`char_ngrams`), and the text of each."""
        low, high = self.char_ngrams
        normal = [" " + " ".join(text.lower().split()[: self.max_words]) + " " for text in texts]
        lengths = torch.tensor([len(text) for text in normal])
        # One UTF-32 code unit per character: len() counts the same code points.
        flat = np.frombuffer("".join(normal).encode("utf-32-le"), dtype=np.uint32)
        codes = torch.zeros(len(texts), int(lengths.max()) if len(texts) else 0, dtype=torch.long)
        inside = torch.arange(codes.shape[1])[None] < lengths[:, None]
        codes[inside] = torch.from_numpy(flat.astype(np.int64))
        keys, valid = codes, inside
        found, rows = [], []
        for n in range(1, high + 1):
            if n > 1:  # wraps around 2**64 for long n-grams: a hash, not a packing
                keys = keys[:, :-1] * _CHAR_BASE + codes[:, n - 1 :]
                valid = valid[:, :-1] & inside[:, n - 1 :]
            if n >= low:
                found.append(keys[valid] + _CHAR_SALT * n)
                rows.append(valid.nonzero()[:, 0])
        return torch.cat(found), torch.cat(rows)

    def training_bags(self, texts: Sequence[str], memory_mb: int, spill: Path) -> Bags:
        """The texts' n-grams for the fit's passes, `FIT_CHUNK` texts at a time."""
        bags = Bags(memory_mb, spill)
        for start in range(0, len(texts), FIT_CHUNK):
            chunk = list(texts[start : start + FIT_CHUNK])
            buckets, rows = [], []
            for first in range(0, len(chunk), CHUNK):
                ids, offsets, _ = self.chunk_bags(chunk[first : first + CHUNK])
                buckets.append(ids)
                rows.append(torch.repeat_interleave(
                    torch.arange(first, first + len(offsets)), bag_sizes(ids, offsets)))
            buckets, rows = torch.cat(buckets), torch.cat(rows)
            order = torch.argsort(buckets, stable=True)  # n-gram-major: the gradient's writes
            bags.add(buckets[order].to(torch.int32), rows[order].to(torch.int32), len(chunk))
        return bags


def char_range(value: Sequence[int] | None) -> tuple[int, int] | None:
    """`char_ngrams` as (min, max), or None; anything else is refused."""
    if value is None:
        return None
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [
        value]
    if (len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in values)
            or not 1 <= values[0] <= values[1] <= 8):
        raise ValueError(f"ngram.model.char_ngrams must be null or [min, max] with "
                         f"1 <= min <= max <= 8, got {value!r}")
    return values[0], values[1]


def bag_sizes(ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """How many ids each bag of (ids, offsets) holds."""
    return torch.diff(offsets, append=torch.tensor([len(ids)]))


class Bags:
    """The training texts' hashed n-grams, featurized once for the fit's many passes (one per
    L-BFGS evaluation): per chunk of texts, its (n-gram, text) pairs as two int32 arrays,
    sorted by n-gram. The first chunks stay in memory up to `memory_mb`; the rest go to a
    file in `spill`, read back (through the page cache, not into the process) each pass."""

    def __init__(self, memory_mb: int, spill: Path) -> None:
        self.budget = memory_mb * 2**20
        self.chunks: list[tuple[int, int, Any]] = []  # (first text, texts, pairs or offset)
        self.texts = self.pairs = self.in_memory = 0
        self.path = spill / "bags.bin"
        self._file: Any = None

    def add(self, buckets: torch.Tensor, rows: torch.Tensor, n: int) -> None:
        size = 8 * len(buckets)
        if self.in_memory + size <= self.budget:
            self.chunks.append((self.texts, n, (buckets, rows)))
            self.in_memory += size
        else:
            if self._file is None:
                # Appended to ("ab"): chunks added after a pass keep the earlier ones.
                self._file = open(self.path, "ab")  # noqa: SIM115 (closed on the next read)
            offset = self._file.tell()
            torch.cat([buckets, rows]).numpy().tofile(self._file)
            self.chunks.append((self.texts, n, (offset, len(buckets))))
        self.texts += n
        self.pairs += len(buckets)

    def describe(self) -> str:
        spilled = self.pairs * 8 - self.in_memory
        return (f" ({self.in_memory / 2**20:,.0f} MB in memory, {spilled / 2**20:,.0f} MB in a "
                f"temporary file, ngram.model.memory_mb={self.budget // 2**20})" if spilled
                else "")

    def __iter__(self) -> Any:
        """(first text, texts, n-gram ids, text of each id within the chunk) per chunk."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for start, n, stored in self.chunks:
            if isinstance(stored[0], torch.Tensor):
                yield start, n, *stored
            else:
                offset, count = stored
                pairs = torch.from_numpy(np.fromfile(self.path, dtype=np.int32,
                                                     count=2 * count, offset=offset))
                yield start, n, pairs[:count], pairs[count:]

    def scores(self, weight: torch.Tensor, bias: float | list[float]) -> torch.Tensor:
        """Every text's logits under a fitted `weight` (ratios folded in): `[texts]` or
        `[texts, classes]`."""
        columns = [weight] if weight.dim() == 1 else [weight[:, k].contiguous()
                                                      for k in range(weight.shape[1])]
        scores = torch.empty(self.texts, len(columns))
        for start, n, buckets, rows in self:
            for k, column in enumerate(columns):
                scores[start : start + n, k] = torch.zeros(n).index_add_(0, rows,
                                                                         column[buckets])
        scores += torch.tensor(bias)
        return scores[:, 0] if weight.dim() == 1 else scores
