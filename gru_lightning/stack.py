"""`NGramStack`: an n-gram model (ngrams.py) stacked on the network (`ngram=nbsvm`).

One object owns the whole stage: the n-gram model's fit and its cache entry, each split's
n-gram features (gathered with every batch), the stacking weights fitted on the validation
texts after every epoch, and its part of every checkpoint. The classifier calls it in three
places (`logits`, `fit_on_validation`, checkpoints), prediction in one (`text_logits`).

    stacked logit = w . [net, ngram, net * length, ngram * length, length] + bias

with `length` the standardised log word count (the n-gram model reads every word, the
network the last `maxlen`, so how far each is trusted may depend on the length).
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
FEATURE = "ngram"  # the batches' column: [logit, log(1 + words)] per text
STACKING_INPUTS = ("net", "ngram", "net_by_length", "ngram_by_length", "length")


class NGramStack:
    """An n-gram model fitted before the network, its logit stacked on the network's.

    Args:
        model: the n-gram model (`ngrams.NGramModel`), fitted on the training texts.
        folds: 0: the network trains alone, and the two logits are only stacked on the
            validation texts; k >= 2: the network trains on top of the n-gram model's logits
            of its training texts (its logit plus theirs), taken out of fold: k more fits,
            each without one k-th of the texts, so no text is scored by a model that saw it.
    """

    def __init__(self, model: NGramModel, folds: int = 0) -> None:
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 0 or folds == 1:
            raise ValueError(f"ngram.folds must be 0 (stack only) or an integer >= 2, got "
                             f"{folds!r}")
        self.model = model
        self.folds = folds
        self.weights: dict[str, float] | None = None  # fitted at the end of validation
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
        if datamodule.num_classes != 2:
            raise ValueError(f"ngram=nbsvm takes two classes; the data has "
                             f"{datamodule.num_classes}: {', '.join(datamodule.class_names)}")
        if not datamodule.has_validation_split:
            raise ValueError("ngram=nbsvm fits its stacking weights on validation texts, held "
                             "out of training: set data.val_size > 0")
        start = time.perf_counter()
        key = json.dumps({"data": datamodule.cache_path().name, "ngram": self.model.settings(),
                          "folds": self.folds, "format": FORMAT_VERSION}, sort_keys=True)
        path = datamodule.cache_dir / f"ngram-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        texts = datamodule.split_texts()
        train_labels = datamodule.splits["train"].labels

        def fit() -> dict[str, Any]:
            fitted = {"model": self.model.fit(texts["train"], train_labels).to_dict()}
            if self.folds:
                fitted["train_logits"] = self.model.out_of_fold_logits(
                    texts["train"], train_labels, self.folds, seed=datamodule.split_seed)
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

    def _add_features(self, datamodule: TextDataModule, texts: dict[str, list[str]],
                      train_logits: torch.Tensor | None) -> dict[str, float]:
        # With out-of-fold logits of the training texts, the network trains on top of them.
        if train_logits is not None:
            features = self.model.features(texts["train"])
            features[:, 0] = train_logits
            datamodule.splits["train"].add_column(FEATURE, features)
        metrics = {}
        for split in ("val", "test"):
            features = self.model.features(texts[split])
            datamodule.splits[split].add_column(FEATURE, features)
            labels = datamodule.splits[split].labels.cpu()
            metrics[f"ngram/{split}_acc"] = ((features[:, 0] > 0).float() == labels
                                             ).float().mean().item()
        return metrics

    # ---- hooks of the classifier ----------------------------------------------------------

    def logits(self, stage: str, logits: torch.Tensor,
               batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The logits a stage scores: in training the network's (plus the out-of-fold n-gram
        logit with `folds`); in validation the network's (the stack is fitted on them at the
        epoch's end); in testing and prediction the stack's."""
        if stage == "train":
            return logits + batch[FEATURE][:, 0] if FEATURE in batch else logits
        if stage == "val":
            return logits
        if FEATURE not in batch:
            raise RuntimeError("the batches carry no n-gram features: the stack's prepare() "
                               "(or add_features()) adds them to the data first")
        return self._stacked(logits, batch[FEATURE])

    def fit_on_validation(self, outputs: dict[str, torch.Tensor],
                          gather: Callable[[torch.Tensor], torch.Tensor],
                          ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Fit the stacking weights on the epoch's validation outputs of every process (DDP:
        `gather`, so all fit the same weights); returns the stack's logits, the labels and
        the network's own accuracy."""
        rows = torch.cat([outputs["logits"][:, None], outputs[FEATURE].float(),
                          outputs["labels"][:, None].float()], 1)
        rows = gather(rows).reshape(-1, 4)
        net, features, labels = rows[:, 0], rows[:, 1:3], rows[:, 3]
        self.weights, self._vector = fit_stacking(net, features, labels), None
        net_acc = ((net > 0).float() == labels).float().mean()
        return self._stacked(net, features), labels, {"val/net_acc": net_acc}

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
        return {"folds": self.folds, "ngram": self.model.to_dict(), "stacking": self.weights}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model = NGramModel.from_dict(state["ngram"])
        self.weights = dict(state["stacking"]) if state["stacking"] is not None else None
        self._vector = None

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> NGramStack:
        # A default model in its place until load_state reads the fitted one (once).
        stacked = cls(NGramModel(), state.get("folds", 0))
        stacked.load_state(state)
        return stacked


def _stacking_design(net_logits: torch.Tensor, features: torch.Tensor,
                     weights: dict[str, float]) -> torch.Tensor:
    """The stack's inputs: both logits, each also times the standardised log length, and
    that length."""
    net, ngram = net_logits.double(), features[:, 0].double()
    length = (features[:, 1].double() - weights["length_mean"]) / weights["length_std"]
    return torch.stack([net, ngram, net * length, ngram * length, length], dim=1)


def fit_stacking(net_logits: torch.Tensor, features: torch.Tensor,
                 labels: torch.Tensor, l2: float = 1e-3) -> dict[str, float]:
    """The stack's weights: a logistic regression on held-out texts (the validation split:
    stacking on the training texts would trust the n-gram model's overfit logits there) over
    the two logits and their products with the standardised log length, so the weight of
    each may change with the length. Six numbers from ~1,000 texts."""
    net_logits, features = net_logits.detach().cpu(), features.detach().cpu()
    log_length = features[:, 1].double()
    weights = {"length_mean": log_length.mean().item(),
               "length_std": max(log_length.std().item(), 1e-6) if len(log_length) > 1 else 1.0}
    design = _stacking_design(net_logits, features, weights)
    targets = labels.detach().double().cpu()
    weight = torch.zeros(design.shape[1], dtype=torch.float64)
    weight[:2] = 1.0
    weight.requires_grad_(True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(design @ weight + bias, targets)
        loss = loss + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    weights.update(zip(STACKING_INPUTS, weight.detach().tolist(), strict=True))
    weights["bias"] = bias.item()
    return weights


def weight_vector(weights: dict[str, float], device: torch.device) -> torch.Tensor:
    """The stacking weights of `STACKING_INPUTS` as one float64 tensor on `device`."""
    return torch.tensor([weights[k] for k in STACKING_INPUTS], dtype=torch.float64,
                        device=device)


def stack(weights: dict[str, float], net_logits: torch.Tensor, features: torch.Tensor,
          vector: torch.Tensor | None = None) -> torch.Tensor:
    """The stack's logits (float32) from the network's logits and the n-gram model's
    features; `vector`: `weight_vector(weights)` already on the logits' device."""
    if vector is None:
        vector = weight_vector(weights, net_logits.device)
    design = _stacking_design(net_logits, features.to(net_logits.device), weights)
    return (design @ vector + weights["bias"]).float()
