"""The stack's weights: a small logistic regression over the network's logits, a scorer's
and the text's length, fitted on validation texts (stack.py runs it after every epoch).

    stacked logit = w . [net, scorer, net * length, scorer * length, length] + bias

with `length` the standardised log word count (the scorer may read every word, the network
the last `maxlen`, so how far each is trusted may depend on the length). More than two
classes: the same four products per class, with shared weights, plus a bias and a length
weight per class, under a softmax (a conditional logit model: 4 + 2 * classes numbers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from gru_lightning.stack import TextScores

# The checkpoint's names of the weights (`ngram`: the scorer's, named when it was the only one).
STACKING_INPUTS = ("net", "ngram", "net_by_length", "ngram_by_length", "length")


def _design(net_logits: torch.Tensor, scores: TextScores,
            weights: dict[str, Any]) -> torch.Tensor:
    """The stack's inputs: both logits, each also times the standardised log length, and
    that length: `[n, 5]` for two classes, `[n, classes, 5]` for more."""
    net = net_logits.double()
    scorer = scores.logits.double().reshape(net_logits.shape)
    length = (scores.log_length.double() - weights["length_mean"]) / weights["length_std"]
    if net.dim() == 2:
        length = length[:, None].expand_as(net)
    return torch.stack([net, scorer, net * length, scorer * length, length], dim=-1)


def fit_stacking(net_logits: torch.Tensor, scores: TextScores, labels: torch.Tensor,
                 l2: float = 1e-3, class_weight: torch.Tensor | None = None) -> dict[str, Any]:
    """The stack's weights: a logistic regression on held-out texts (the validation split:
    stacking on the training texts would trust the scorer's overfit logits there) over
    the two logits and their products with the standardised log length, so the weight of
    each may change with the length. Six numbers from ~1,000 texts for two classes; for more,
    the four products' weights shared by the classes, a bias and a length weight per class,
    under a softmax. `class_weight`: each class's weight in the log-loss."""
    net_logits, scores = net_logits.detach().cpu(), scores.to("cpu")
    log_length = scores.log_length.double()
    weights: dict[str, Any] = {
        "length_mean": log_length.mean().item(),
        "length_std": max(log_length.std().item(), 1e-6) if len(log_length) > 1 else 1.0}
    design = _design(net_logits, scores, weights)
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


def stacked_logits(weights: dict[str, Any], net_logits: torch.Tensor, scores: TextScores,
                   vector: torch.Tensor | None = None) -> torch.Tensor:
    """The stack's logits (float32) from the network's logits and the scorer's;
    `vector`: `weight_vector(weights)` already on the logits' device."""
    if vector is None:
        vector = weight_vector(weights, net_logits.device)
    design = _design(net_logits, scores.to(net_logits.device), weights)
    if vector.dim() == 1:
        return (design @ vector + weights["bias"]).float()
    bias = torch.tensor(weights["bias"], dtype=torch.float64, device=net_logits.device)
    return ((design * vector).sum(-1) + bias).float()
