"""A scorer of texts stacked on the network (`ngram=nbsvm`: the n-gram model of ngrams/).

    TextScorer   the contract of a model of texts fitted before the network (fit, scores,
                 to_dict); `ngrams.NGramModel` is one, a new one is a class and a config
    TextScores   what a scorer says of each text: its logits and its log length, the feature
                 block a split carries in every batch (`TextDataModule.attach`)
    Stack        the stage: the scorer's fit and its cache entry, each split's scores, the
                 stacking weights fitted on the validation texts after every epoch
                 (stack_weights.py), and its part of every checkpoint

The classifier calls a stack in one place for logits (`train_logits` / `eval_logits`), once
per validation epoch (`fit_on_validation`) and in its checkpoints (`to_dict`, `load_state`);
prediction calls `text_logits`.
"""

from __future__ import annotations

import abc
import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from gru_lightning.data import cache
from gru_lightning.folds import fold_ids
from gru_lightning.stack_weights import fit_stacking, stacked_logits, weight_vector

if TYPE_CHECKING:
    from gru_lightning.data.datamodule import TextDataModule

log = logging.getLogger(__name__)
LOGITS, LOG_LENGTH = "scorer_logits", "log_length"  # the batches' columns of `TextScores`
VALIDATION_FOLDS_SEED = 0  # every process draws the same validation folds


@dataclass(frozen=True)
class TextScores:
    """A scorer's view of each text: `logits` `[n, 1]` (two classes) or `[n, classes]`, and
    `log_length` `[n]`, log(1 + words)."""

    logits: torch.Tensor
    log_length: torch.Tensor

    def to(self, device: torch.device | str) -> TextScores:
        return TextScores(self.logits.to(device), self.log_length.to(device))

    def columns(self) -> dict[str, torch.Tensor]:
        """As a split's columns (`TextDataModule.attach`), gathered with every batch."""
        return {LOGITS: self.logits, LOG_LENGTH: self.log_length}

    @classmethod
    def of_batch(cls, batch: dict[str, torch.Tensor]) -> TextScores:
        if LOGITS not in batch or LOG_LENGTH not in batch:
            raise RuntimeError("the batches carry no scores of the stacked model: the stack's "
                               "prepare() (or add_scores()) adds them to the data first")
        return cls(batch[LOGITS], batch[LOG_LENGTH])


class TextScorer(abc.ABC):
    """A model of texts, fitted on the training texts before the network trains, whose
    logits `Stack` combines with the network's. A subclass is named by `model._target_` in
    a config of conf/ngram/ (as `conf/ngram/nbsvm.yaml`), and by its import path in
    checkpoints, which rebuild it with `from_dict`."""

    format_version = 1  # in the cache key: bump when the same settings score differently

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """The constructor's keyword arguments that change the fit: the cache key, and what
        `out_of_fold_logits` builds its fold models with."""

    @abc.abstractmethod
    def fit(self, texts: Sequence[str], labels: torch.Tensor, num_classes: int
            ) -> TextScorer:
        """Fit on `texts` with labels 0 .. num_classes - 1 (float for two classes); self."""

    @abc.abstractmethod
    def scores(self, texts: Sequence[str]) -> TextScores:
        """The fitted model's `TextScores` of `texts` (a sequence that may read from disk)."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The fitted model in plain types and tensors (checkpoints load weights only)."""

    @classmethod
    @abc.abstractmethod
    def from_dict(cls, state: dict[str, Any]) -> TextScorer:
        """The fitted model `to_dict` gave."""

    def describe(self) -> str:
        return type(self).__name__

    def out_of_fold_logits(self, texts: Sequence[str], labels: torch.Tensor, folds: int,
                           seed: int, num_classes: int) -> torch.Tensor:
        """Each text's logits from a model of these settings fitted on the other folds
        (`[n]` for two classes, else `[n, classes]`); a scorer may do it faster."""
        fold_of = fold_ids(len(texts), folds, seed)
        scores: torch.Tensor | None = None
        for fold in range(folds):
            held = fold_of == fold
            kept = [t for t, k in zip(texts, (~held).tolist(), strict=True) if k]
            model = type(self)(**self.settings()).fit(kept, labels[~held], num_classes)
            logits = model.scores([t for t, h in zip(texts, held.tolist(), strict=True) if h]
                                  ).logits
            if scores is None:
                scores = torch.empty(len(texts), logits.shape[1])
            scores[held] = logits
        return scores[:, 0] if num_classes == 2 else scores


def scorer_class(path: str) -> type[TextScorer]:
    """The `TextScorer` subclass a checkpoint names; anything else is refused. (importlib, not
    Hydra's get_class: prediction does without Hydra.)"""
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"the checkpoint's stacked model {path!r} cannot be imported "
                         f"({error})") from None
    if not (isinstance(found, type) and issubclass(found, TextScorer)):
        raise ValueError(f"the checkpoint's stacked model {path!r} is not a TextScorer")
    return found


class Stack:
    """A scorer fitted before the network, its logits stacked on the network's.

    Args:
        model: the scorer (a `TextScorer`, e.g. `ngrams.NGramModel`), fitted on the training
            texts.
        folds: 0: the network trains alone, and the two logits are only stacked on the
            validation texts; k >= 2: the network trains on top of the scorer's logits of
            its training texts (its logit plus theirs), taken out of fold: k more fits,
            each without one k-th of the texts, so no text is scored by a model that saw it.
        stacking_l2: the L2 penalty of the stacking weights, against the mean log-loss of the
            validation texts: a few hundred validation texts want more than IMDB's 1,000.
        validation_folds: 0: the validation texts are scored by the weights fitted on them
            (in sample); k >= 2: each by weights fitted on the other k - 1 folds of them, so
            the validation metrics that pick the epoch and the checkpoint are out of sample
            (a few hundred validation texts overfit the stack's 6, or 4 + 2 * classes,
            numbers); the weights kept for testing and prediction are fitted on all of them
            either way.
    """

    def __init__(self, model: TextScorer, folds: int = 0, stacking_l2: float = 1e-3,
                 validation_folds: int = 0) -> None:
        _check_folds("folds", folds, "stack only")
        if not stacking_l2 >= 0:
            raise ValueError(f"ngram.stacking_l2 must be >= 0, got {stacking_l2!r}")
        _check_folds("validation_folds", validation_folds, "in sample")
        if not isinstance(model, TextScorer):
            raise ValueError(f"ngram.model must be a TextScorer, got {type(model).__name__}")
        self.model = model
        self.folds = folds
        self.stacking_l2 = stacking_l2
        self.validation_folds = validation_folds
        self.weights: dict[str, Any] | None = None  # fitted at the end of validation
        # The loss's class weights the last fit used: the cross-fit of a checkpoint's
        # validation scores (bench/tweeteval.py) repeats that fit exactly.
        self.class_weight: list[float] | None = None
        # The weights as a tensor on the device that scores, made once per fit: not a new
        # device tensor (a copy and a sync) for every batch.
        self._vector: torch.Tensor | None = None

    def describe(self) -> str:
        return self.model.describe()

    # ---- the stage before training --------------------------------------------------------

    def prepare(self, datamodule: TextDataModule) -> dict[str, float]:
        """Fit the scorer on the training texts (or read it from the cache, keyed by the
        data's cache entry and these settings: seeds and network settings share it), and
        attach its scores to the splits. Returns its own accuracies."""
        if not datamodule.has_validation_split:
            raise ValueError(f"the stack of {self.describe()} fits its weights on validation "
                             "texts, held out of training: set data.val_size > 0")
        start = time.perf_counter()
        model = self.model
        path = datamodule.derived_cache_path("ngram", {
            "scorer": _path_of(model), "ngram": model.settings(), "folds": self.folds,
            "format": model.format_version})
        texts = datamodule.split_texts()
        train_labels = datamodule.splits["train"].labels
        classes = datamodule.num_classes

        def fit() -> dict[str, Any]:
            fitted = {"model": model.fit(texts["train"], train_labels, classes).to_dict()}
            if self.folds:
                fitted["train_logits"] = model.out_of_fold_logits(
                    texts["train"], train_labels, self.folds, datamodule.split_seed, classes)
            return fitted

        # Parallel sweep jobs fit it once.
        fitted = cache.load_or_build(path, fit, f"Stacked model ({type(model).__name__})")
        self.model = type(model).from_dict(fitted["model"])
        if self.folds:  # the network trains on top of the out-of-fold logits
            logits = fitted["train_logits"].reshape(len(texts["train"]), -1)
            datamodule.attach("train", {LOGITS: logits})
        metrics = self.add_scores(datamodule, texts)
        metrics["ngram/seconds"] = time.perf_counter() - start
        log.info("%s alone: val accuracy %.4f, test accuracy %.4f (%.1f s, the stage in all)",
                 self.describe(), metrics["ngram/val_acc"], metrics["ngram/test_acc"],
                 metrics["ngram/seconds"])
        return metrics

    def add_scores(self, datamodule: TextDataModule,
                   texts: dict[str, Sequence[str]] | None = None) -> dict[str, float]:
        """The fitted scorer's scores of the validation and test texts attached to those
        splits (a stack read from a checkpoint scores new data so); returns its accuracies
        on them."""
        texts = texts if texts is not None else datamodule.split_texts()
        metrics = {}
        for split in ("val", "test"):
            scores = self.model.scores(texts[split])
            datamodule.attach(split, scores.columns())
            labels = datamodule.splits[split].labels.cpu()
            logits = scores.logits
            predicted = (logits[:, 0] > 0).float() if logits.shape[1] == 1 else logits.argmax(1)
            metrics[f"ngram/{split}_acc"] = (predicted == labels).float().mean().item()
        return metrics

    # ---- hooks of the classifier ----------------------------------------------------------

    def train_logits(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]
                     ) -> torch.Tensor:
        """What training scores: the network's logits, plus the scorer's out-of-fold ones
        with `folds`."""
        if LOGITS not in batch:
            return logits
        return logits + batch[LOGITS].reshape(logits.shape)

    def eval_logits(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]
                    ) -> torch.Tensor:
        """What testing and prediction score: the stack's logits."""
        return self._stacked(logits, TextScores.of_batch(batch))

    def fit_on_validation(self, outputs: dict[str, torch.Tensor],
                          gather: Callable[[torch.Tensor], torch.Tensor],
                          class_weight: torch.Tensor | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Fit the stacking weights on the epoch's validation outputs (the network's logits
        and the batches' scores) of every process (DDP: `gather`, so all fit the same
        weights), each class weighted by `class_weight` (the classifier's loss weights) if
        given; returns the stack's logits (cross-fitted with `validation_folds` and two texts
        or more: `cross_fitted_logits`), the labels (float for two classes, class ids for
        more) and the network's own accuracy."""
        logits = outputs["logits"].reshape(len(outputs["labels"]), -1)
        width = logits.shape[1]
        rows = torch.cat([logits, outputs[LOGITS].float(), outputs[LOG_LENGTH][:, None].float(),
                          outputs["labels"][:, None].float()], 1)
        rows = gather(rows).reshape(-1, 2 * width + 2)
        net, labels = rows[:, :width], rows[:, -1]
        scores = TextScores(rows[:, width:-2], rows[:, -2])
        if width == 1:
            net = net[:, 0]
            predicted = (net > 0).float()
        else:
            labels = labels.long()
            predicted = net.argmax(1)
        self.class_weight = None if class_weight is None else class_weight.tolist()
        self.weights = fit_stacking(net, scores, labels, self.stacking_l2, class_weight)
        self._vector = None
        net_acc = (predicted == labels).float().mean()
        stacked = (self.cross_fitted_logits(net, scores, labels).to(net.device)
                   if self.validation_folds and len(labels) > 1
                   else self._stacked(net, scores))
        return stacked, labels, {"val/net_acc": net_acc}

    def cross_fitted_logits(self, net_logits: torch.Tensor, scores: TextScores,
                            labels: torch.Tensor) -> torch.Tensor:
        """The stack's logits of held-out texts, each from weights fitted (with this stack's
        L2 and class weights) on the other `validation_folds` - 1 folds: out-of-sample scores
        of the texts the weights are fitted on. Folds are drawn by position with a fixed seed
        (every DDP process draws the same; under DDP the gathered rows are in rank order and
        the sampler's padding repeats a few, so a single-process recomputation draws other
        folds); fewer texts than folds: one text per fold."""
        folds = min(self.validation_folds, len(labels))
        if folds < 2:
            raise ValueError(f"cross-fitting the stack needs validation_folds >= 2 and as many "
                             f"texts, got {self.validation_folds!r} folds and {len(labels)} "
                             f"texts")
        net_logits, scores = net_logits.detach().cpu(), scores.to("cpu")
        labels = labels.detach().cpu()
        class_weight = (None if self.class_weight is None
                        else torch.tensor(self.class_weight, dtype=torch.float64))
        fold_of = fold_ids(len(labels), folds, VALIDATION_FOLDS_SEED)
        stacked = torch.empty(net_logits.shape)
        for fold in range(folds):
            held, kept = fold_of == fold, fold_of != fold
            weights = fit_stacking(net_logits[kept], _rows(scores, kept), labels[kept],
                                   self.stacking_l2, class_weight)
            stacked[held] = stacked_logits(weights, net_logits[held], _rows(scores, held))
        return stacked

    def text_logits(self, logits: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """The stack's logits for new texts, from the network's."""
        return self._stacked(logits, self.model.scores(texts))

    def _stacked(self, logits: torch.Tensor, scores: TextScores) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError("no stacking weights: they are fitted at the end of validation")
        if self._vector is None or self._vector.device != logits.device:
            self._vector = weight_vector(self.weights, logits.device)
        return stacked_logits(self.weights, logits, scores, self._vector)

    # ---- checkpoint state -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything the stack needs to predict: plain types and tensors, and the scorer's
        import path (checkpoints.py)."""
        return {"folds": self.folds, "scorer": _path_of(self.model),
                "model": self.model.to_dict(), "stacking": self.weights,
                "stacking_l2": self.stacking_l2, "validation_folds": self.validation_folds,
                "class_weight": self.class_weight}

    def load_state(self, state: dict[str, Any]) -> None:
        """The fitted scorer and stacking weights of `to_dict`'s state (a resumed run)."""
        self._load_fitted(scorer_class(state["scorer"]).from_dict(state["model"]), state)

    def _load_fitted(self, model: TextScorer, state: dict[str, Any]) -> None:
        self.model = model
        self.weights = dict(state["stacking"]) if state["stacking"] is not None else None
        self.class_weight = state.get("class_weight")
        self._vector = None

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Stack:
        """The stack of `to_dict`'s state, ready to score."""
        model = scorer_class(state["scorer"]).from_dict(state["model"])
        stacked = cls(model, state["folds"], state["stacking_l2"], state["validation_folds"])
        stacked._load_fitted(model, state)
        return stacked


def _path_of(model: TextScorer) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def _rows(scores: TextScores, rows: torch.Tensor) -> TextScores:
    return TextScores(scores.logits[rows], scores.log_length[rows])


def _check_folds(setting: str, value: Any, zero_means: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1:
        raise ValueError(f"ngram.{setting} must be 0 ({zero_means}) or an integer >= 2, got "
                         f"{value!r}")
