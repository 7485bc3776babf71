"""What the classifier minimises: the loss (binary or multi-class cross-entropy), the class
weights that balance it, and adversarial training's added loss (Miyato et al. 2017)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from gru_lightning.preprocessing import PAD_ID

log = logging.getLogger(__name__)
ClassWeights = Literal["balanced", "auto"] | None
IMBALANCE = 1.5  # class_weights=auto weighs the classes when the largest is 1.5x the smallest


def class_weights(counts: torch.Tensor, policy: ClassWeights,
                  class_names: Sequence[str]) -> torch.Tensor | None:
    """The loss's weight per class from the training texts per class: None where `policy` is
    None, or "auto" and the classes are balanced enough; else n / (classes * n_class), so
    each class weighs in the loss as much as any other (for a macro-averaged metric)."""
    if policy is None:
        return None
    counts = counts.double().clamp(min=1)
    ratio = (counts.max() / counts.min()).item()
    if policy == "auto" and ratio < IMBALANCE:
        log.info("model.class_weights=auto: the classes are balanced enough (largest / "
                 "smallest = %.2f < %.1f): no weights", ratio, IMBALANCE)
        return None
    weights = (counts.sum() / (len(counts) * counts)).float()
    log.info("model.class_weights=%s: loss weights %s for %s (largest / smallest class = "
             "%.2f; model.class_weights=null overrides)", policy,
             ", ".join(f"{w:.2f}" for w in weights.tolist()), ", ".join(class_names), ratio)
    return weights


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on the one logit of two classes (`[batch]` logits, float labels),
    else cross-entropy; weighted by class where `weight` is given (two classes: the second
    class's terms by w1 / w0, the same balance)."""
    if logits.dim() == 1:
        pos_weight = None if weight is None else weight[1] / weight[0]
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
    return F.cross_entropy(logits, labels, weight=weight)


def adversarial_losses(net: nn.Module, ids: torch.Tensor, size: float,
                       logits_of: Callable[[torch.Tensor], torch.Tensor],
                       loss_of: Callable[[torch.Tensor], torch.Tensor],
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch's logits, its clean loss (what the curves show) and the clean plus
    adversarial loss that trains: the perturbation is the clean loss's gradient with respect
    to each text's embedded words, scaled to `size` times their norm (padding neither
    perturbed nor counted), after the embedding's dropout as in Miyato et al. The network
    needs `embed` and `classify`; `logits_of` maps its logits to those scored (a stack's),
    `loss_of` those to the loss."""
    embedded = net.embed(ids)
    if not embedded.requires_grad:  # a frozen embedding: the gradient is still wanted
        embedded.requires_grad_()
    logits = logits_of(net.classify(embedded, ids))
    loss = loss_of(logits)
    # Unscaled: under 16-mixed a gradient that underflows to zero perturbs nothing.
    (gradient,) = torch.autograd.grad(loss, embedded, retain_graph=True)
    words = (ids != PAD_ID).unsqueeze(-1)
    gradient = gradient * words
    norm = (embedded.detach() * words).flatten(1).norm(dim=1)
    scale = size * norm / gradient.flatten(1).norm(dim=1).clamp(min=1e-12)
    perturbed = embedded + scale.view(-1, 1, 1) * gradient  # a constant: no second order
    adversarial_loss = loss_of(logits_of(net.classify(perturbed, ids)))
    return logits, loss, loss + adversarial_loss
