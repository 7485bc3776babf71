"""An n-gram model: logistic regression over hashed word 1..n-grams with Naive Bayes
log-count-ratio feature weights (NBSVM's logistic variant, Wang & Manning 2012).

A linear model that reads every word of a text (the GRU reads the last `maxlen`), fitted in
closed form plus L-BFGS in a minute on a CPU. `stack.NGramStack` fits it before the network
trains and stacks the two logits (`ngram=nbsvm`).

    texts -> words (a `TextEncoder` over the whole training vocabulary, no padding cap)
          -> the set of distinct 1..max_n-grams of each text (and, with `char_ngrams`, of
             its lowercased characters' n-grams), hashed into 2**buckets_log2 ids
          -> logit = bias + sum over the text's n-grams of weight[n-gram]

The weights are those of an L2-regularised logistic regression on binary n-gram features
scaled by their NB ratios r = log(P(n-gram | pos) / P(n-gram | neg)) (add-one smoothed);
r is folded into the stored weights, so prediction is one `embedding_bag` sum.

More than two classes: one such model per class against the rest (one-vs-rest, each with its
own NB ratios), the weights a `[2**buckets_log2, classes]` table: a logit per class.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from gru_lightning.preprocessing import PAD_ID, TextEncoder, punctuation_marks
from gru_lightning.settings import positive_int

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the features of the same text change
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64: Fibonacci hashing
_CHAR_BASE = 1_000_003  # a character n-gram's key: its code points as digits of this base
_GROUP_SALT = 0x2545F4914F6CDD1D  # a group's word id times this marks its joined n-grams
_CHAR_SALT = 0x5BD1E995  # added to character keys, which then rarely equal a word n-gram's
_CHUNK = 1000  # texts featurized at once: bounds the [chunk, max_words] id tensor
_FIT_CHUNK = 8192  # texts per chunk of the fit's stored n-grams (~45 MB for IMDB reviews)
PUNCTUATION = '!?.,;:"()-*/'  # read as words: marks carry tone ("!", "?") and structure


class NGramModel:
    """NB-weighted logistic regression over hashed word n-grams; one-vs-rest for more than
    two classes.

    Args:
        max_n: longest n-gram (1: words only; 3: words, bigrams and trigrams).
        buckets_log2: the n-grams are hashed into 2**buckets_log2 weights (22: 4.2M, 16 MB).
        l2: L2 penalty on the weights, against the sum of the log-losses (liblinear's 1/C).
        max_iter: L-BFGS iterations at most.
        max_vocab: words kept (most frequent first) before forming n-grams; rarer ones count
            as the unknown word.
        max_words: words read per text (the first ones); longer texts are cut.
        punctuation: the punctuation marks read as words of their own (true: "!" and "?",
            as `data.punctuation`): "not bad." and "not. bad" differ.
        memory_mb: the fit's n-gram features kept in memory (8 bytes per distinct n-gram
            of a text); the rest go to a temporary file (`TMPDIR`), read once per L-BFGS
            evaluation (0: all of them). The same weights either way: what bounds the fit's
            memory on a million texts.
        char_ngrams: `[min, max]`: also the text's character min..max-grams (lowercased,
            whitespace runs as one space, a space at each end: word starts and ends count),
            in the same hashed buckets; None: words only. Short, noisy texts (tweets:
            misspellings, hashtags, elongations) share more characters than words.
    """

    def __init__(self, max_n: int = 3, buckets_log2: int = 22, l2: float = 1.0,
                 max_iter: int = 100, max_vocab: int = 500_000, max_words: int = 3000,
                 punctuation: bool | str = PUNCTUATION, memory_mb: int = 1024,
                 char_ngrams: Sequence[int] | None = None, group_by_last_word: bool = False
                 ) -> None:
        for name, value in (("max_n", max_n), ("buckets_log2", buckets_log2),
                            ("max_iter", max_iter), ("max_vocab", max_vocab),
                            ("max_words", max_words)):
            positive_int(f"ngram.model.{name}", value)
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 0:
            raise ValueError(f"ngram.model.memory_mb must be an integer >= 0, got {memory_mb!r}")
        if buckets_log2 > 30:
            raise ValueError(f"ngram.model.buckets_log2 must be <= 30 (4 GB of weights), got "
                             f"{buckets_log2}")
        if max_vocab**max_n >= 2**62:  # an n-gram's key packs its word ids into one int64
            raise ValueError(f"ngram.model.max_vocab**ngram.model.max_n must be < 2**62 (n-gram "
                             f"keys are int64), got {max_vocab}**{max_n}")
        if not l2 > 0:
            raise ValueError(f"ngram.model.l2 must be positive, got {l2!r}")
        punctuation_marks(punctuation)  # rejects what is not a set of marks
        self.char_ngrams = _char_range(char_ngrams)
        if not isinstance(group_by_last_word, bool):
            raise ValueError(f"ngram.model.group_by_last_word must be true or false, got "
                             f"{group_by_last_word!r}")
        self.group_by_last_word = group_by_last_word
        self.max_n = max_n
        self.buckets_log2 = buckets_log2
        self.l2 = l2
        self.max_iter = max_iter
        self.max_vocab = max_vocab
        self.max_words = max_words
        self.punctuation = punctuation
        self.memory_mb = memory_mb  # not among settings(): it does not change the result
        self.words: TextEncoder | None = None
        # [2**buckets_log2] (two classes) or [2**buckets_log2, classes], NB ratios folded in.
        self.weight: torch.Tensor | None = None
        self.bias: float | list[float] = 0.0

    @property
    def num_classes(self) -> int:
        return 2 if self.weight is None or self.weight.dim() == 1 else self.weight.shape[1]

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments: what the cache key and the checkpoint record."""
        return {"max_n": self.max_n, "buckets_log2": self.buckets_log2, "l2": self.l2,
                "max_iter": self.max_iter, "max_vocab": self.max_vocab,
                "max_words": self.max_words, "punctuation": self.punctuation,
                "char_ngrams": None if self.char_ngrams is None else list(self.char_ngrams),
                "group_by_last_word": self.group_by_last_word}

    # ---- features -------------------------------------------------------------------------

    def bags(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The distinct hashed n-grams of each text, as `embedding_bag` takes them: ids (each
        text's sorted, concatenated) and the offset where each text's ids start."""
        ids, offsets, _ = self._bags_and_lengths(texts)
        return ids, offsets

    def _bags_and_lengths(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """`bags`, and each text's number of words (at most `max_words`)."""
        if self.words is None:
            raise RuntimeError("the n-gram model is not fitted")
        ids, offsets, lengths, total = [], [], [], 0
        for start in range(0, len(texts), _CHUNK):
            chunk_ids, chunk_offsets, chunk_lengths = self._chunk_bags(
                texts[start : start + _CHUNK])
            ids.append(chunk_ids)
            offsets.append(chunk_offsets + total)
            lengths.append(chunk_lengths)
            total += len(chunk_ids)
        if not ids:
            return (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                    torch.zeros(0, dtype=torch.long))
        return torch.cat(ids), torch.cat(offsets), torch.cat(lengths)

    def _chunk_bags(self, texts: Sequence[str]) -> tuple[torch.Tensor, ...]:
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

    # ---- fitting --------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], labels: torch.Tensor, num_classes: int = 2
            ) -> NGramModel:
        """Fit on `texts` with labels 0 .. num_classes - 1: the vocabulary, the NB ratios, then
        the weights by L-BFGS on the (strictly convex) regularised log-loss, one class
        against the rest where there are more than two. Logs its progress."""
        labels = _class_labels(texts, labels, num_classes)
        start = time.perf_counter()
        self.words = TextEncoder.fit(texts, self.max_vocab, self.max_words, padding="post",
                                     truncating="post", punctuation=self.punctuation)
        with tempfile.TemporaryDirectory(prefix="gru-lightning-ngrams-") as spill:
            bags = self._featurize(texts, Path(spill))
            log.info("n-gram model: %s words, %s distinct n-grams per text on average, "
                     "%.1f s%s", f"{self.words.vocab_size:,}", f"{bags.pairs / len(texts):,.0f}",
                     time.perf_counter() - start, bags.describe())
            self.weight, self.bias = self._fit_classes(bags, labels, num_classes)
        log.info("n-gram model fitted in %.1f s", time.perf_counter() - start)
        return self

    def _featurize(self, texts: Sequence[str], spill: Path) -> _Bags:
        """The texts' n-grams for the fit's passes, `_FIT_CHUNK` texts at a time."""
        bags = _Bags(self.memory_mb, spill)
        for start in range(0, len(texts), _FIT_CHUNK):
            chunk = list(texts[start : start + _FIT_CHUNK])
            buckets, rows = [], []
            for first in range(0, len(chunk), _CHUNK):
                ids, offsets, _ = self._chunk_bags(chunk[first : first + _CHUNK])
                buckets.append(ids)
                rows.append(torch.repeat_interleave(
                    torch.arange(first, first + len(offsets)), _bag_sizes(ids, offsets)))
            buckets, rows = torch.cat(buckets), torch.cat(rows)
            order = torch.argsort(buckets, stable=True)  # n-gram-major: the gradient's writes
            bags.add(buckets[order].to(torch.int32), rows[order].to(torch.int32), len(chunk))
        return bags

    def _fit_classes(self, bags: _Bags, labels: torch.Tensor, num_classes: int,
                     keep: torch.Tensor | None = None) -> tuple[torch.Tensor, float | list[float]]:
        """`_fit_weights` for two classes; else one fit per class against the rest."""
        if num_classes == 2:
            return self._fit_weights(bags, labels, keep)
        fits = []
        for k in range(num_classes):
            fits.append(self._fit_weights(bags, (labels == k).float(), keep))
            log.info("n-gram model: class %d of %d fitted against the rest", k + 1,
                     num_classes)
        return torch.stack([w for w, _ in fits], 1), [b for _, b in fits]

    def _scores(self, ids: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor,
                bias: float | list[float]) -> torch.Tensor:
        """The logits of bags: `[n]` for two classes, else `[n, classes]`."""
        table = weight.unsqueeze(1) if weight.dim() == 1 else weight
        scores = F.embedding_bag(ids, table, offsets, mode="sum") + torch.tensor(bias)
        return scores.squeeze(1) if weight.dim() == 1 else scores

    def out_of_fold_logits(self, texts: Sequence[str], labels: torch.Tensor, folds: int,
                           seed: int = 0, num_classes: int = 2) -> torch.Tensor:
        """Each text's logit from a model fitted on the other `folds - 1` folds (the fitted
        vocabulary, its own NB ratios and weights): scores of the training texts that are
        as honest as those of new texts, for a model trained on top of them."""
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(f"folds must be an integer >= 2 here, got {folds!r}")
        labels = _class_labels(texts, labels, num_classes)
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        fold_of = torch.randperm(len(texts), generator=generator) % folds
        scores = torch.empty(len(texts)) if num_classes == 2 else torch.empty(len(texts),
                                                                            num_classes)
        with tempfile.TemporaryDirectory(prefix="gru-lightning-ngrams-") as spill:
            bags = self._featurize(texts, Path(spill))
            for fold in range(folds):
                held = fold_of == fold
                weight, bias = self._fit_classes(bags, labels, num_classes, keep=~held)
                scores[held] = bags.scores(weight, bias)[held]
                log.info("n-gram model: out-of-fold scores, fold %d of %d done (%.1f s)",
                         fold + 1, folds, time.perf_counter() - start)
        return scores

    def _fit_weights(self, bags: _Bags, labels: torch.Tensor, keep: torch.Tensor | None
                     ) -> tuple[torch.Tensor, float]:
        """The NB ratios of the kept texts' n-grams, then the logistic regression's weights
        by L-BFGS, each evaluation one pass over the bags; the ratios are folded into the
        returned weights."""
        size = 1 << self.buckets_log2
        in_pos = torch.ones(size, dtype=torch.float64)  # add-one smoothing
        in_neg = torch.ones(size, dtype=torch.float64)
        for start, n, buckets, rows in bags:
            positive = labels[start : start + n].bool()
            kept = torch.ones(n, dtype=torch.bool) if keep is None else keep[start : start + n]
            in_pos += torch.bincount(buckets[(positive & kept)[rows]], minlength=size)
            in_neg += torch.bincount(buckets[(~positive & kept)[rows]], minlength=size)
        ratio = (torch.log(in_pos / in_pos.sum()) - torch.log(in_neg / in_neg.sum())).float()
        del in_pos, in_neg
        mask = None if keep is None else keep.float()

        weight = torch.zeros(size)
        bias = torch.zeros(1)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=self.max_iter,
                                      history_size=10, line_search_fn="strong_wolfe",
                                      tolerance_grad=1e-5, tolerance_change=1e-9)
        evaluations = [0]

        def objective() -> torch.Tensor:
            # The design matrix has each text's n-grams valued by their NB ratios: its
            # product with the weights is a sum of (weight * ratio) over the text's n-grams,
            # and its transpose's with the residuals a scatter into the n-grams (ratio-scaled).
            pass_start = time.perf_counter()
            table = weight * ratio
            grad = torch.zeros(size)
            loss, bias_grad, correct = 0.5 * self.l2 * weight.square().sum().item(), 0.0, 0
            for start, n, buckets, rows in bags:
                target = labels[start : start + n]
                logits = torch.zeros(n).index_add_(0, rows, table[buckets]) + bias
                losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
                residual = torch.sigmoid(logits) - target
                hits = ((logits > 0).float() == target).float()
                if mask is not None:
                    weights = mask[start : start + n]
                    losses, residual, hits = losses * weights, residual * weights, hits * weights
                loss += losses.double().sum().item()
                bias_grad += residual.double().sum().item()
                correct += hits.sum().item()
                grad.index_add_(0, buckets, residual[rows])
            weight.grad = grad * ratio + self.l2 * weight
            bias.grad = torch.tensor([bias_grad], dtype=torch.float32)
            evaluations[0] += 1
            seconds = time.perf_counter() - pass_start
            if evaluations[0] % 10 == 0 or seconds > 1.0:
                kept = len(labels) if mask is None else int(mask.sum().item())
                log.info("n-gram model: L-BFGS evaluation %d (a pass over %s texts, %.1f s), "
                         "objective %.1f, training accuracy %.4f", evaluations[0],
                         f"{kept:,}", seconds, loss, correct / kept)
            return torch.tensor(loss, dtype=torch.float32)

        optimizer.step(objective)
        log.info("n-gram model: %d L-BFGS iterations, %d evaluations",
                 optimizer.state[optimizer._params[0]].get("n_iter", 0), evaluations[0])
        return (weight * ratio).contiguous(), float(bias.item())

    # ---- prediction -----------------------------------------------------------------------

    @torch.no_grad()
    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """Per text its logits then `log(1 + words)`: `[len(texts), 2]` for two classes
        (`[logit, log length]`), else `[len(texts), classes + 1]`; what the stack takes (the
        n-gram model reads every word, the network the last `maxlen`, so how far each is
        trusted may depend on the length)."""
        if self.weight is None:
            raise RuntimeError("the n-gram model is not fitted")
        width = 1 if self.weight.dim() == 1 else self.weight.shape[1]
        features = [torch.zeros(0, width + 1)]
        for start in range(0, len(texts), _CHUNK):  # a chunk at a time: texts from disk
            ids, offsets, lengths = self._chunk_bags(list(texts[start : start + _CHUNK]))
            logits = self._scores(ids, offsets, self.weight, self.bias).reshape(-1, width)
            features.append(torch.cat([logits, torch.log1p(lengths.float())[:, None]], dim=1))
        return torch.cat(features)

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """The model's logits per text: the second class's `[len(texts)]` for two classes,
        else every class's `[len(texts), classes]`."""
        logits = self.features(texts)[:, :-1]
        return logits[:, 0] if self.num_classes == 2 else logits

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted model: plain types and one tensor."""
        if self.words is None or self.weight is None:
            raise RuntimeError("the n-gram model is not fitted")
        return {"format_version": FORMAT_VERSION, "settings": self.settings(),
                "words": self.words.to_dict(), "weight": self.weight, "bias": self.bias}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> NGramModel:
        version = state.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"n-gram model format {version!r} is not the one this version of gru-lightning "
                f"reads ({FORMAT_VERSION}); retrain the model or use a matching release")
        # Release 0.1.0 kept the stack's `folds` among the model's settings.
        model = cls(**{k: v for k, v in state["settings"].items() if k != "folds"})
        model.words = TextEncoder.from_dict(state["words"])
        model.weight = state["weight"]
        bias = state["bias"]
        model.bias = [float(b) for b in bias] if isinstance(bias, list | tuple) else float(bias)
        return model


def _class_labels(texts: Sequence[str], labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels as float class ids 0 .. num_classes - 1, each class present."""
    labels = torch.as_tensor(labels, dtype=torch.float32).cpu()
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    present = torch.unique(labels)
    if (len(present) != num_classes or labels.min() != 0 or labels.max() != num_classes - 1
            or not torch.equal(present, present.round())):
        raise ValueError(f"the n-gram model needs labels 0 .. {num_classes - 1}, each present "
                         f"in the training texts")
    return labels


def _char_range(value: Sequence[int] | None) -> tuple[int, int] | None:
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


def _bag_sizes(ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """How many ids each bag of (ids, offsets) holds."""
    return torch.diff(offsets, append=torch.tensor([len(ids)]))


class _Bags:
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
