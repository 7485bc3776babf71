"""Cross-fitting's folds, drawn one way for every stage that scores texts out of fold (the
n-gram model's training logits, the stack's validation scores)."""

from __future__ import annotations

import torch


def fold_ids(n: int, folds: int, seed: int) -> torch.Tensor:
    """The fold (0 .. folds - 1) of each of `n` items: a seeded permutation's positions
    modulo `folds`, so the folds differ in size by one at most and are the same on every
    process that draws them with `seed`."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)) % folds
