"""`NGramStack`: an n-gram model (ngrams.py) stacked on the network (`ngram=nbsvm`).

One object owns the whole stage: the n-gram model's fit and its cache entry, each split's
n-gram features (gathered with every batch), the stacking weights fitted on the validation
texts after every epoch, and its part of every checkpoint. The classifier calls it in three
places (`logits`, `fit_on_validation`, checkpoints), prediction in one (`text_logits`).

    stacked logit = w . [net, ngram, net * length, ngram * length, length] + bias

with `length` the standardised log word count (the n-gram model reads every word, the
network the last `maxlen`, so how far each is trusted may depend on the length). More than
two classes: the same four products per class, with shared weights, plus a bias and a length
weight per class, under a softmax (a conditional logit model: 4 + 2 * classes numbers).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

from gru_lightning.data import cache
from gru_lightning.ngrams import FORMAT_VERSION, NGramModel

if TYPE_CHECKING:
    from gru_lightning.data.datamodule import TextDataModule

log = logging.getLogger(__name__)
FEATURE = "ngram"  # the batches' column: [logits..., log(1 + words)] per text
STACKING_INPUTS = ("net", "ngram", "net_by_length", "ngram_by_length", "length")


class NGramStack:
    """An n-gram model fitted before the network, its logit stacked on the network's.

    Args:
        model: the n-gram model (`ngrams.NGramModel`), fitted on the training texts.
        folds: 0: the network trains alone, and the two logits are only stacked on the
            validation texts; k >= 2: the network trains on top of the n-gram model's logits
            of its training texts (its logit plus theirs), taken out of fold: k more fits,
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

    def __init__(self, model: NGramModel, folds: int = 0, stacking_l2: float = 1e-3,
                 validation_folds: int = 0) -> None:
        _check_folds("folds", folds, "stack only")
        if not stacking_l2 >= 0:
            raise ValueError(f"ngram.stacking_l2 must be >= 0, got {stacking_l2!r}")
        _check_folds("validation_folds", validation_folds, "in sample")
        self.model = model
        self.folds = folds
        self.stacking_l2 = stacking_l2
        self.validation_folds = validation_folds
        self.weights: dict[str, float] | None = None  # fitted at the end of validation
        # The loss's class weights the last fit used: the cross-fit of a checkpoint's
        # validation scores (bench/tweeteval.py) repeats that fit exactly.
        self.class_weight: list[float] | None = None
        # The weights as a tensor on the device that scores, made once per fit: not a new
        # device tensor (a copy and a sync) for every batch.
        self._vector: torch.Tensor | None = None

    def describe(self) -> str:
        return "an n-gram model (ngram=nbsvm)"

    # ---- the stage before training --------------------------------------------------------

    def prepare(self, datamodule: TextDataModule) -> dict[str, float]:
        """Fit the n-gram model on the training texts (or read it from the cache, keyed by the
        data's cache entry and these settings: seeds and network settings share it), and add
        its features to the splits. Returns its own accuracies."""
        if not datamodule.has_validation_split:
            raise ValueError("ngram=nbsvm fits its stacking weights on validation texts, held "
                             "out of training: set data.val_size > 0")
        start = time.perf_counter()
        key = json.dumps({"data": datamodule.cache_path().name, "ngram": self.model.settings(),
                          "folds": self.folds, "format": FORMAT_VERSION}, sort_keys=True)
        path = datamodule.cache_dir / f"ngram-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        texts = datamodule.split_texts()
        train_labels = datamodule.splits["train"].labels
        classes = datamodule.num_classes

        def fit() -> dict[str, Any]:
            fitted = {"model": self.model.fit(texts["train"], train_labels, classes).to_dict()}
            if self.folds:
                fitted["train_logits"] = self.model.out_of_fold_logits(
                    texts["train"], train_labels, self.folds, seed=datamodule.split_seed,
                    num_classes=classes)
            return fitted

        # Parallel sweep jobs fit it once.
        fitted = cache.load_or_build(path, fit, "N-gram model")
        self.model = NGramModel.from_dict(fitted["model"])
        metrics = self._add_features(datamodule, texts, fitted.get("train_logits"))
        metrics["ngram/seconds"] = time.perf_counter() - start
        log.info("n-gram model alone: val accuracy %.4f, test accuracy %.4f (%.1f s, the "
                 "stage in all)", metrics["ngram/val_acc"], metrics["ngram/test_acc"],
                 metrics["ngram/seconds"])
        return metrics

    def add_features(self, datamodule: TextDataModule) -> dict[str, float]:
        """The fitted model's features of the validation and test texts as a column of the
        splits, gathered with every batch (a stack read from a checkpoint scores new data
        so); returns its accuracies on them."""
        return self._add_features(datamodule, datamodule.split_texts(), None)

    def _add_features(self, datamodule: TextDataModule, texts: dict[str, Sequence[str]],
                      train_logits: torch.Tensor | None) -> dict[str, float]:
        # With out-of-fold logits of the training texts, the network trains on top of them.
        if train_logits is not None:
            features = self.model.features(texts["train"])
            features[:, :-1] = train_logits.reshape(len(features), -1)
            datamodule.splits["train"].add_column(FEATURE, features)
        metrics = {}
        for split in ("val", "test"):
            features = self.model.features(texts[split])
            datamodule.splits[split].add_column(FEATURE, features)
            labels = datamodule.splits[split].labels.cpu()
            logits = features[:, :-1]
            predicted = (logits[:, 0] > 0).float() if logits.shape[1] == 1 else logits.argmax(1)
            metrics[f"ngram/{split}_acc"] = (predicted == labels).float().mean().item()
        return metrics

    # ---- hooks of the classifier ----------------------------------------------------------

    def logits(self, stage: str, logits: torch.Tensor,
               batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The logits a stage scores: in training the network's (plus the out-of-fold n-gram
        logit with `folds`); in validation the network's (the stack is fitted on them at the
        epoch's end); in testing and prediction the stack's."""
        if stage == "train":
            if FEATURE not in batch:
                return logits
            return logits + batch[FEATURE][:, :-1].reshape(logits.shape)
        if stage == "val":
            return logits
        if FEATURE not in batch:
            raise RuntimeError("the batches carry no n-gram features: the stack's prepare() "
                               "(or add_features()) adds them to the data first")
        return self._stacked(logits, batch[FEATURE])

    def fit_on_validation(self, outputs: dict[str, torch.Tensor],
                          gather: Callable[[torch.Tensor], torch.Tensor],
                          class_weight: torch.Tensor | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Fit the stacking weights on the epoch's validation outputs of every process (DDP:
        `gather`, so all fit the same weights), each class weighted by `class_weight` (the
        classifier's loss weights) if given; returns the stack's logits (cross-fitted with
        `validation_folds` and two texts or more: `cross_fitted_logits`), the labels (float
        for two classes, class ids for more) and the network's own accuracy."""
        logits = outputs["logits"].reshape(len(outputs["labels"]), -1)
        width = logits.shape[1]
        rows = torch.cat([logits, outputs[FEATURE].float(),
                          outputs["labels"][:, None].float()], 1)
        rows = gather(rows).reshape(-1, 2 * width + 2)
        net, features, labels = rows[:, :width], rows[:, width:-1], rows[:, -1]
        if width == 1:
            net = net[:, 0]
            predicted = (net > 0).float()
        else:
            labels = labels.long()
            predicted = net.argmax(1)
        self.class_weight = None if class_weight is None else class_weight.tolist()
        self.weights = fit_stacking(net, features, labels, self.stacking_l2, class_weight)
        self._vector = None
        net_acc = (predicted == labels).float().mean()
        stacked = (self.cross_fitted_logits(net, features, labels).to(net.device)
                   if self.validation_folds and len(labels) > 1
                   else self._stacked(net, features))
        return stacked, labels, {"val/net_acc": net_acc}

    def cross_fitted_logits(self, net_logits: torch.Tensor, features: torch.Tensor,
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
        net_logits, features = net_logits.detach().cpu(), features.detach().cpu()
        labels = labels.detach().cpu()
        class_weight = (None if self.class_weight is None
                        else torch.tensor(self.class_weight, dtype=torch.float64))
        fold_of = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)) % folds
        stacked = torch.empty(net_logits.shape)
        for fold in range(folds):
            held = fold_of == fold
            weights = fit_stacking(net_logits[~held], features[~held], labels[~held],
                                   self.stacking_l2, class_weight)
            stacked[held] = stack(weights, net_logits[held], features[held])
        return stacked

    def text_logits(self, logits: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """The stack's logits for new texts, from the network's."""
        return self._stacked(logits, self.model.features(texts))

    def _stacked(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            raise RuntimeError("no stacking weights: they are fitted at the end of validation")
        if self._vector is None or self._vector.device != logits.device:
            self._vector = weight_vector(self.weights, logits.device)
        return stack(self.weights, logits, features, self._vector)

    # ---- checkpoint state -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything the stack needs to predict: plain types and one tensor."""
        return {"folds": self.folds, "ngram": self.model.to_dict(), "stacking": self.weights,
                "stacking_l2": self.stacking_l2, "validation_folds": self.validation_folds,
                "class_weight": self.class_weight}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model = NGramModel.from_dict(state["ngram"])
        self.weights = dict(state["stacking"]) if state["stacking"] is not None else None
        self.class_weight = state.get("class_weight")
        self._vector = None

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> NGramStack:
        # A default model in its place until load_state reads the fitted one (once);
        # checkpoints from before validation_folds keep neither it nor the L2.
        stacked = cls(NGramModel(), state.get("folds", 0), state.get("stacking_l2", 1e-3),
                      state.get("validation_folds", 0))
        stacked.load_state(state)
        return stacked


def _check_folds(setting: str, value: Any, zero_means: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1:
        raise ValueError(f"ngram.{setting} must be 0 ({zero_means}) or an integer >= 2, got "
                         f"{value!r}")


def _stacking_design(net_logits: torch.Tensor, features: torch.Tensor,
                     weights: dict[str, Any]) -> torch.Tensor:
    """The stack's inputs: both logits, each also times the standardised log length, and
    that length: `[n, 5]` for two classes, `[n, classes, 5]` for more."""
    net, ngram = net_logits.double(), features[:, :-1].double().reshape(net_logits.shape)
    length = (features[:, -1].double() - weights["length_mean"]) / weights["length_std"]
    if net.dim() == 2:
        length = length[:, None].expand_as(net)
    return torch.stack([net, ngram, net * length, ngram * length, length], dim=-1)


def fit_stacking(net_logits: torch.Tensor, features: torch.Tensor,
                 labels: torch.Tensor, l2: float = 1e-3,
                 class_weight: torch.Tensor | None = None) -> dict[str, Any]:
    """The stack's weights: a logistic regression on held-out texts (the validation split:
    stacking on the training texts would trust the n-gram model's overfit logits there) over
    the two logits and their products with the standardised log length, so the weight of
    each may change with the length. Six numbers from ~1,000 texts for two classes; for more,
    the four products' weights shared by the classes, a bias and a length weight per class,
    under a softmax. `class_weight`: each class's weight in the log-loss."""
    net_logits, features = net_logits.detach().cpu(), features.detach().cpu()
    log_length = features[:, -1].double()
    weights: dict[str, Any] = {
        "length_mean": log_length.mean().item(),
        "length_std": max(log_length.std().item(), 1e-6) if len(log_length) > 1 else 1.0}
    design = _stacking_design(net_logits, features, weights)
    binary = design.dim() == 2
    targets = labels.detach().cpu()
    per_class = 1 if binary else design.shape[1]
    weight = torch.zeros(4 if not binary else 5, dtype=torch.float64)
    weight[:2] = 1.0
    weight.requires_grad_(True)
    bias = torch.zeros(per_class, dtype=torch.float64, requires_grad=True)
    length_weight = torch.zeros(per_class, dtype=torch.float64, requires_grad=not binary)
    parameters = [weight, bias] if binary else [weight, bias, length_weight]
    optimizer = torch.optim.LBFGS(parameters, max_iter=200, line_search_fn="strong_wolfe")
    cw = None if class_weight is None else class_weight.detach().double().cpu()

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        if binary:
            pos_weight = None if cw is None else cw[1] / cw[0]
            loss = F.binary_cross_entropy_with_logits(design @ weight + bias, targets.double(),
                                                      pos_weight=pos_weight)
            penalty = weight.square().sum()
        else:
            logits = design[..., :4] @ weight + bias + design[..., 4] * length_weight
            loss = F.cross_entropy(logits, targets.long(), weight=cw)
            penalty = weight.square().sum() + length_weight.square().sum()
        loss = loss + 0.5 * l2 * penalty
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    if binary:
        weights.update(zip(STACKING_INPUTS, weight.detach().tolist(), strict=True))
        weights["bias"] = bias.item()
    else:
        weights.update(zip(STACKING_INPUTS[:4], weight.detach().tolist(), strict=True))
        weights["length"] = length_weight.detach().tolist()
        weights["bias"] = bias.detach().tolist()
    return weights


def weight_vector(weights: dict[str, Any], device: torch.device) -> torch.Tensor:
    """The stacking weights of `STACKING_INPUTS` as one float64 tensor on `device`: `[5]` for
    two classes, `[classes, 5]` (the shared four, then each class's length weight) for
    more."""
    if isinstance(weights["length"], list):
        shared = torch.tensor([weights[k] for k in STACKING_INPUTS[:4]], dtype=torch.float64)
        length = torch.tensor(weights["length"], dtype=torch.float64)
        vector = torch.cat([shared.expand(len(length), 4), length[:, None]], 1)
        return vector.to(device)
    return torch.tensor([weights[k] for k in STACKING_INPUTS], dtype=torch.float64,
                        device=device)


def stack(weights: dict[str, Any], net_logits: torch.Tensor, features: torch.Tensor,
          vector: torch.Tensor | None = None) -> torch.Tensor:
    """The stack's logits (float32) from the network's logits and the n-gram model's
    features; `vector`: `weight_vector(weights)` already on the logits' device."""
    if vector is None:
        vector = weight_vector(weights, net_logits.device)
    design = _stacking_design(net_logits, features.to(net_logits.device), weights)
    if vector.dim() == 1:
        return (design @ vector + weights["bias"]).float()
    bias = torch.tensor(weights["bias"], dtype=torch.float64, device=net_logits.device)
    return ((design * vector).sum(-1) + bias).float()
