"""Text -> fixed-length id tensors: a Hugging Face `tokenizers` word-level vocabulary
plus Keras `pad_sequences` semantics.

Training builds a `TextEncoder` from the training texts; its `to_dict()` travels with every
checkpoint, so a checkpoint alone can encode new text exactly as the model saw it in training.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from gru_lightning.runtime.kernels import word_ids_kernel
from gru_lightning.settings import positive_int

log = logging.getLogger(__name__)
PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
Side = Literal["pre", "post"]
FORMAT_VERSION = 1  # bump when the encoding of the same text changes
FIT_CHUNK = 8192  # texts counted at once when fitting a vocabulary

# Keras' `pad_sequences` says "pre"/"post"; tokenizers says "left"/"right".
_DIRECTION = {"pre": "left", "post": "right"}


def check_side(name: str, value: str) -> None:
    if value not in _DIRECTION:
        raise ValueError(
            f"{name} must be 'pre' or 'post' (as in Keras pad_sequences), got {value!r}"
        )


ALL_SYMBOLS = "all"  # punctuation="all": every symbol (emoji, #, @, ...) a word of its own


def punctuation_marks(punctuation: bool | str) -> str:
    """The marks kept as words: `True` is "!?" (the data's `punctuation` setting), `False`
    none, a string those characters (the n-gram model's), "all" every character that is not
    a letter, digit, apostrophe or space (emoji and emoticons: what tweets say much with)."""
    if punctuation == ALL_SYMBOLS:
        return ALL_SYMBOLS
    if isinstance(punctuation, bool):
        return "!?" if punctuation else ""
    if not isinstance(punctuation, str) or any(c.isalnum() or c in "_' \t\n" for c in punctuation):
        raise ValueError(f"punctuation must be true, false or a string of punctuation marks, "
                         f"got {punctuation!r}")
    return "".join(dict.fromkeys(punctuation))  # each once, in the order given


def _in_class(marks: str) -> str:
    # Inside a regex character class only these are special; "!" and "?" stay as they are,
    # so the pipeline of punctuation=True is byte for byte the one of earlier releases.
    return "".join("\\" + c if c in "\\]^-[" else c for c in marks)


def build_tokenizer(punctuation: bool | str = False) -> Tokenizer:
    """An untrained word-level tokenizer: lowercased words, HTML line breaks and punctuation
    dropped (as in the Keras IMDB word index, which keeps apostrophes inside words).

    `punctuation=True` keeps "!" and "?" as words of their own: "?" is in 38% of the
    negative training reviews and 21% of the positive ones. A string keeps those marks.
    """
    marks = punctuation_marks(punctuation)
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    if marks == ALL_SYMBOLS:
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Replace("<br />", " "), normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.WhitespaceSplit(),
             pre_tokenizers.Split(Regex(r"[^\w\s']"), behavior="isolated")])
        return tokenizer
    kept = r"\w'" + _in_class(marks)
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace("<br />", " "),
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(f"[^{kept}]+"), " "),
        ]
    )
    split_words = pre_tokenizers.WhitespaceSplit()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [split_words, pre_tokenizers.Split(Regex(f"[{_in_class(marks)}]"), behavior="isolated")]
    ) if marks else split_words
    return tokenizer


def _punctuation_of(tokenizer: Tokenizer) -> str | None:
    """Which `build_tokenizer` pipeline `tokenizer` has (the marks it keeps as words), or
    None for any other: only those have the compiled fast path."""
    config = json.loads(tokenizer.to_str())
    pre = config.get("pre_tokenizer") or {}
    marks = ""
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2:
        pattern = pre["pretokenizers"][1].get("pattern", {}).get("Regex", "")
        if not (pattern.startswith("[") and pattern.endswith("]")):
            return None
        marks = re.sub(r"\\(.)", r"\1", pattern[1:-1])
    try:
        reference = json.loads(build_tokenizer(marks or False).to_str())
    except ValueError:
        return None
    if all(config[k] == reference[k] for k in ("normalizer", "pre_tokenizer")):
        return marks
    return None


def in_batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    """`texts` as lists of `size`, the last one shorter (itertools.batched from Python
    3.12): a million texts read from disk are fitted or encoded a list at a time."""
    iterator = iter(texts)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class TextEncoder:
    """Turns raw reviews into `[n, maxlen]` int64 id tensors.

    Ids: 0 is padding, 1 an out-of-vocabulary word, 2.. the `max_features - 2` most
    frequent training words, so every id is `< max_features`.
    """

    def __init__(self, tokenizer: Tokenizer, maxlen: int, padding: Side = "pre",
                 truncating: Side = "pre") -> None:
        positive_int("maxlen", maxlen)
        check_side("padding", padding)
        check_side("truncating", truncating)
        self.tokenizer = tokenizer
        self._fast: Any = None  # the compiled word-id kernel with this vocabulary, once built
        self.maxlen = maxlen
        self.padding = padding
        self.truncating = truncating
        # The Rust tokenizer pads and truncates in its parallel batch encoder.
        tokenizer.enable_truncation(maxlen, direction=_DIRECTION[truncating])
        tokenizer.enable_padding(direction=_DIRECTION[padding], pad_id=PAD_ID,
                                 pad_token=PAD_TOKEN, length=maxlen)

    @classmethod
    def fit(cls, texts: Iterable[str], max_features: int, maxlen: int, padding: Side = "pre",
            truncating: Side = "pre", punctuation: bool | str = False,
            min_count: int = 1) -> TextEncoder:
        """Learn a vocabulary of at most `max_features` ids (specials included) from `texts`:
        the most frequent words seen at least `min_count` times; `punctuation` as in
        `build_tokenizer`."""
        if not isinstance(max_features, int) or max_features < 3:
            raise ValueError(
                f"max_features must be an integer >= 3 (padding, unknown, one word), "
                f"got {max_features!r}"
            )
        tokenizer = build_tokenizer(punctuation)
        # The compiled kernel splits at a fixed set of marks; "all" takes the tokenizer.
        kernel = word_ids_kernel() if punctuation_marks(punctuation) != ALL_SYMBOLS else None
        if kernel is None:
            trainer = trainers.WordLevelTrainer(
                vocab_size=max_features, min_frequency=min_count,
                special_tokens=[PAD_TOKEN, UNK_TOKEN], show_progress=False)
            tokenizer.train_from_iterator(in_batches(texts, FIT_CHUNK), trainer)
            return cls(tokenizer, maxlen, padding, truncating)
        # The same vocabulary as tokenizers' WordLevelTrainer (most frequent first, ties by
        # the word), counted by the compiled kernel; texts it does not take (not ASCII, or
        # holding "[" that could start a special token) go through the tokenizer's pipeline.
        # A chunk at a time: `texts` may be a million reviews read from disk.
        marks = punctuation_marks(punctuation)
        counter = kernel.WordIds({}, UNK_ID, PAD_ID, marks)
        counts: Counter[str] = Counter()
        # A word split as Split("[marks]", "isolated") does.
        parts = re.compile(f"[{re.escape(marks)}]|[^{re.escape(marks)}]+")
        for chunk in in_batches(texts, FIT_CHUNK):
            chunk_counts, others = counter.count(chunk)
            counts.update(chunk_counts)
            for i in others:
                # After the normalizer every separator is a single space, so splitting at
                # spaces (and isolating the marks) is the pre-tokenizer, without its offsets.
                words = tokenizer.normalizer.normalize_str(chunk[i]).split()
                if marks:
                    words = [part for word in words for part in parts.findall(word)]
                counts.update(words)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        words = [PAD_TOKEN, UNK_TOKEN] + [w for w, n in ranked
                                          if n >= min_count and w not in (PAD_TOKEN, UNK_TOKEN)]
        vocab = {word: i for i, word in enumerate(words[:max_features])}
        tokenizer.model = models.WordLevel(vocab, unk_token=UNK_TOKEN)
        tokenizer.add_special_tokens([PAD_TOKEN, UNK_TOKEN])
        return cls(tokenizer, maxlen, padding, truncating)

    def __getstate__(self) -> dict[str, Any]:
        # The compiled kernel's lookup table does not pickle (a deepcopy of the model, as
        # weight averaging makes, copies the encoder); it is rebuilt on first use.
        return {**self.__dict__, "_fast": None}

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Encode a batch of texts to a `[len(texts), maxlen]` int64 tensor: the compiled
        kernel takes the plain ASCII texts, `tokenizers` the rest, with identical ids."""
        texts = list(texts)
        if not texts:
            return torch.zeros((0, self.maxlen), dtype=torch.long)
        fast = self._word_ids()
        if fast is None:
            return self._encode_with_tokenizers(texts)
        ids, skipped = fast.encode(texts, self.maxlen, self.padding == "pre",
                                   self.truncating == "pre")
        if skipped.any():
            rows = skipped.nonzero().flatten()
            ids[rows] = self._encode_with_tokenizers([texts[i] for i in rows.tolist()])
        return ids

    def _encode_with_tokenizers(self, texts: list[str]) -> torch.Tensor:
        # encode_batch_fast: the same ids, without the character offsets nobody reads here.
        encodings = self.tokenizer.encode_batch_fast(texts)
        return torch.from_numpy(np.array([e.ids for e in encodings], dtype=np.int64))

    @property
    def uses_kernel(self) -> bool:
        """Whether the compiled word-id kernel encodes this encoder's plain ASCII texts."""
        return self._word_ids() is not None

    def _word_ids(self) -> Any:
        if self._fast is None:
            kernel, marks = word_ids_kernel(), _punctuation_of(self.tokenizer)
            if kernel is None or marks is None:
                self._fast = False
            else:
                self._fast = kernel.WordIds(self.tokenizer.get_vocab(), UNK_ID, PAD_ID,
                                            marks)
        return self._fast or None

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this encoder; plain types, safe in a checkpoint."""
        return {
            "format_version": FORMAT_VERSION,
            "tokenizer": self.tokenizer.to_str(),
            "maxlen": self.maxlen,
            "padding": self.padding,
            "truncating": self.truncating,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TextEncoder:
        version = state.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"text encoder format {version!r} is not the one this version of gru-lightning "
                f"reads ({FORMAT_VERSION}); retrain the model or use a matching release"
            )
        return cls(Tokenizer.from_str(state["tokenizer"]), state["maxlen"], state["padding"],
                   state["truncating"])
