"""The n-gram model's fit: an L2-regularised logistic regression on binary n-gram features
scaled by their Naive Bayes log-count ratios (NBSVM's logistic variant, Wang & Manning 2012),
by L-BFGS, each evaluation one pass over the texts' `Bags`.

Written by hand: the features are hashed n-grams stored as (n-gram, text) pairs that may
live on disk, which no solver at hand takes; the objective is a scatter each way.
"""

from __future__ import annotations

import logging
import time

import torch
from torch.nn import functional as F

from gru_lightning.ngrams.featurizer import Bags

log = logging.getLogger(__name__)


def fit_classes(bags: Bags, labels: torch.Tensor, num_classes: int, buckets_log2: int,
                l2: float, max_iter: int, keep: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, float | list[float]]:
    """`fit_nb_logistic` for two classes; else one fit per class against the rest: weights
    `[2**buckets_log2]` or `[2**buckets_log2, classes]`, and the bias (one per class)."""
    if num_classes == 2:
        return fit_nb_logistic(bags, labels, buckets_log2, l2, max_iter, keep)
    fits = []
    for k in range(num_classes):
        fits.append(fit_nb_logistic(bags, (labels == k).float(), buckets_log2, l2, max_iter,
                                    keep))
        log.info("n-gram model: class %d of %d fitted against the rest", k + 1, num_classes)
    return torch.stack([w for w, _ in fits], 1), [b for _, b in fits]


def nb_ratios(bags: Bags, labels: torch.Tensor, size: int, keep: torch.Tensor | None,
              ) -> torch.Tensor:
    """Each n-gram's log(P(n-gram | pos) / P(n-gram | neg)) over the kept texts, add-one
    smoothed."""
    in_pos = torch.ones(size, dtype=torch.float64)
    in_neg = torch.ones(size, dtype=torch.float64)
    for start, n, buckets, rows in bags:
        positive = labels[start : start + n].bool()
        kept = torch.ones(n, dtype=torch.bool) if keep is None else keep[start : start + n]
        in_pos += torch.bincount(buckets[(positive & kept)[rows]], minlength=size)
        in_neg += torch.bincount(buckets[(~positive & kept)[rows]], minlength=size)
    return (torch.log(in_pos / in_pos.sum()) - torch.log(in_neg / in_neg.sum())).float()


class _Objective:
    """The regularised log-loss and its gradient in one pass over the bags (an L-BFGS
    closure): the design matrix has each text's n-grams valued by their NB ratios, so its
    product with the weights is a sum of (weight * ratio) over the text's n-grams, and its
    transpose's with the residuals a scatter into the n-grams (ratio-scaled)."""

    def __init__(self, bags: Bags, labels: torch.Tensor, ratio: torch.Tensor, l2: float,
                 weight: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor | None) -> None:
        self.bags, self.labels, self.ratio, self.l2 = bags, labels, ratio, l2
        self.weight, self.bias = weight, bias
        self.mask = None if keep is None else keep.float()
        self.evaluations = 0

    def __call__(self) -> torch.Tensor:
        pass_start = time.perf_counter()
        weight, bias, mask, labels = self.weight, self.bias, self.mask, self.labels
        table = weight * self.ratio
        grad = torch.zeros(len(weight))
        loss, bias_grad, correct = 0.5 * self.l2 * weight.square().sum().item(), 0.0, 0
        for start, n, buckets, rows in self.bags:
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
        weight.grad = grad * self.ratio + self.l2 * weight
        bias.grad = torch.tensor([bias_grad], dtype=torch.float32)
        self.evaluations += 1
        seconds = time.perf_counter() - pass_start
        if self.evaluations % 10 == 0 or seconds > 1.0:
            kept = len(labels) if mask is None else int(mask.sum().item())
            log.info("n-gram model: L-BFGS evaluation %d (a pass over %s texts, %.1f s), "
                     "objective %.1f, training accuracy %.4f", self.evaluations, f"{kept:,}",
                     seconds, loss, correct / kept)
        return torch.tensor(loss, dtype=torch.float32)


def fit_nb_logistic(bags: Bags, labels: torch.Tensor, buckets_log2: int, l2: float,
                    max_iter: int, keep: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, float]:
    """The NB ratios of the kept texts' n-grams (`keep`: a mask of the bags' texts; None:
    all), then the logistic regression's weights (L2 penalty `l2` against the summed
    log-loss, at most `max_iter` L-BFGS iterations); the ratios are folded into the returned
    weights, so a logit is one sum of weights over a text's n-grams."""
    size = 1 << buckets_log2
    ratio = nb_ratios(bags, labels, size, keep)
    weight = torch.zeros(size)
    bias = torch.zeros(1)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=10,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-5,
                                  tolerance_change=1e-9)
    objective = _Objective(bags, labels, ratio, l2, weight, bias, keep)
    optimizer.step(objective)
    log.info("n-gram model: %d L-BFGS iterations, %d evaluations",
             optimizer.state[weight].get("n_iter", 0), objective.evaluations)
    return (weight * ratio).contiguous(), float(bias.item())
