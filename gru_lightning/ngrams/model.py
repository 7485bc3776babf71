"""`NGramModel`: NB-weighted logistic regression over hashed word n-grams (NBSVM's logistic
variant, Wang & Manning 2012), the text scorer `ngram=nbsvm` stacks on the network.

A linear model that reads every word of a text (the GRU reads the last `maxlen`), fitted in
closed form plus L-BFGS in a minute on a CPU:

    texts -> hashed n-gram ids (featurizer.py)
          -> logit = bias + sum over the text's n-grams of weight[n-gram]   (logistic.py)

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

import torch
from torch.nn import functional as F

from gru_lightning.folds import fold_ids
from gru_lightning.ngrams.featurizer import CHUNK, PUNCTUATION, NGramFeaturizer
from gru_lightning.ngrams.logistic import fit_classes
from gru_lightning.preprocessing import TextEncoder
from gru_lightning.settings import positive_int
from gru_lightning.stack import TextScorer, TextScores

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when the features of the same text change


class NGramModel(TextScorer):
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
        self.featurizer = NGramFeaturizer(max_n, buckets_log2, max_vocab, max_words,
                                          punctuation, char_ngrams, group_by_last_word)
        positive_int("ngram.model.max_iter", max_iter)
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 0:
            raise ValueError(f"ngram.model.memory_mb must be an integer >= 0, got {memory_mb!r}")
        if not l2 > 0:
            raise ValueError(f"ngram.model.l2 must be positive, got {l2!r}")
        self.l2 = l2
        self.max_iter = max_iter
        self.memory_mb = memory_mb  # not among settings(): it does not change the result
        # [2**buckets_log2] (two classes) or [2**buckets_log2, classes], NB ratios folded in.
        self.weight: torch.Tensor | None = None
        self.bias: float | list[float] = 0.0

    format_version = FORMAT_VERSION

    def describe(self) -> str:
        return "an n-gram model (ngram=nbsvm)"

    @property
    def num_classes(self) -> int:
        return 2 if self.weight is None or self.weight.dim() == 1 else self.weight.shape[1]

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments: what the cache key and the checkpoint record."""
        f = self.featurizer
        return {"max_n": f.max_n, "buckets_log2": f.buckets_log2, "l2": self.l2,
                "max_iter": self.max_iter, "max_vocab": f.max_vocab,
                "max_words": f.max_words, "punctuation": f.punctuation,
                "char_ngrams": None if f.char_ngrams is None else list(f.char_ngrams),
                "group_by_last_word": f.group_by_last_word}

    # ---- fitting --------------------------------------------------------------------------

    def fit(self, texts: Sequence[str], labels: torch.Tensor, num_classes: int = 2
            ) -> NGramModel:
        """Fit on `texts` with labels 0 .. num_classes - 1: the vocabulary, the NB ratios, then
        the weights by L-BFGS on the (strictly convex) regularised log-loss, one class
        against the rest where there are more than two. Logs its progress."""
        labels = _class_labels(texts, labels, num_classes)
        start = time.perf_counter()
        words = self.featurizer.fit(texts).words
        with tempfile.TemporaryDirectory(prefix="gru-lightning-ngrams-") as spill:
            bags = self.featurizer.training_bags(texts, self.memory_mb, Path(spill))
            log.info("n-gram model: %s words, %s distinct n-grams per text on average, "
                     "%.1f s%s", f"{words.vocab_size:,}", f"{bags.pairs / len(texts):,.0f}",
                     time.perf_counter() - start, bags.describe())
            self.weight, self.bias = self._fit(bags, labels, num_classes)
        log.info("n-gram model fitted in %.1f s", time.perf_counter() - start)
        return self

    def _fit(self, bags: Any, labels: torch.Tensor, num_classes: int,
             keep: torch.Tensor | None = None) -> tuple[torch.Tensor, float | list[float]]:
        return fit_classes(bags, labels, num_classes, self.featurizer.buckets_log2, self.l2,
                           self.max_iter, keep)

    def out_of_fold_logits(self, texts: Sequence[str], labels: torch.Tensor, folds: int,
                           seed: int = 0, num_classes: int = 2) -> torch.Tensor:
        """Each text's logit from a model fitted on the other `folds - 1` folds (the fitted
        vocabulary, its own NB ratios and weights): scores of the training texts that are
        as honest as those of new texts, for a model trained on top of them. The texts'
        n-grams are featurized once for all the folds' fits."""
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(f"folds must be an integer >= 2 here, got {folds!r}")
        labels = _class_labels(texts, labels, num_classes)
        start = time.perf_counter()
        fold_of = fold_ids(len(texts), folds, seed)
        scores = torch.empty(len(texts)) if num_classes == 2 else torch.empty(len(texts),
                                                                            num_classes)
        with tempfile.TemporaryDirectory(prefix="gru-lightning-ngrams-") as spill:
            bags = self.featurizer.training_bags(texts, self.memory_mb, Path(spill))
            for fold in range(folds):
                held = fold_of == fold
                weight, bias = self._fit(bags, labels, num_classes, keep=~held)
                scores[held] = bags.scores(weight, bias)[held]
                log.info("n-gram model: out-of-fold scores, fold %d of %d done (%.1f s)",
                         fold + 1, folds, time.perf_counter() - start)
        return scores

    # ---- prediction -----------------------------------------------------------------------

    @torch.no_grad()
    def scores(self, texts: Sequence[str]) -> TextScores:
        """Per text its logits (`[n, 1]` for two classes, else `[n, classes]`) and
        `log(1 + words)`: the n-gram model reads every word, the network the last `maxlen`,
        so how far each is trusted may depend on the length."""
        if self.weight is None:
            raise RuntimeError("the n-gram model is not fitted")
        width = 1 if self.weight.dim() == 1 else self.weight.shape[1]
        logits, lengths = [torch.zeros(0, width)], [torch.zeros(0)]
        for start in range(0, len(texts), CHUNK):  # a chunk at a time: texts from disk
            ids, offsets, words = self.featurizer.chunk_bags(list(texts[start : start + CHUNK]))
            logits.append(self._scores(ids, offsets).reshape(-1, width))
            lengths.append(torch.log1p(words.float()))
        return TextScores(torch.cat(logits), torch.cat(lengths))

    def _scores(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The logits of bags: `[n]` for two classes, else `[n, classes]`."""
        weight = self.weight
        table = weight.unsqueeze(1) if weight.dim() == 1 else weight
        scores = F.embedding_bag(ids, table, offsets, mode="sum") + torch.tensor(self.bias)
        return scores.squeeze(1) if weight.dim() == 1 else scores

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """The model's logits per text: the second class's `[len(texts)]` for two classes,
        else every class's `[len(texts), classes]`."""
        logits = self.scores(texts).logits
        return logits[:, 0] if self.num_classes == 2 else logits

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted model: plain types and one tensor."""
        if self.featurizer.words is None or self.weight is None:
            raise RuntimeError("the n-gram model is not fitted")
        return {"format_version": FORMAT_VERSION, "settings": self.settings(),
                "words": self.featurizer.words.to_dict(), "weight": self.weight,
                "bias": self.bias}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> NGramModel:
        version = state.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"n-gram model format {version!r} is not the one this version of gru-lightning "
                f"reads ({FORMAT_VERSION}); retrain the model or use a matching release")
        # Release 0.1.0 kept the stack's `folds` among the model's settings.
        model = cls(**{k: v for k, v in state["settings"].items() if k != "folds"})
        model.featurizer.words = TextEncoder.from_dict(state["words"])
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


