"""The hold-out plan: which rows of which raw split make each split the model sees, as a
pure function of the rows that have text, the hold-out sizes and their seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gru_lightning.data import adaptive
from gru_lightning.data.errors import DataError


@dataclass(frozen=True)
class SplitRows:
    """One split of the model: the rows of raw split `origin` it holds, in order."""

    origin: str
    rows: torch.Tensor


def count(size: int | float, total: int) -> int:
    """A hold-out size (a count, or a share of `total`) as a count."""
    return round(size * total) if isinstance(size, float) else size


def holdout_plan(kept: dict[str, torch.Tensor], test_size: int | float | None,
                 val_size: int | float | str, seed: int, setting: str,
                 ) -> dict[str, SplitRows]:
    """The train, val and test splits from the raw splits' `kept` rows (those with text).

    A raw split "test" or "val" is used as it is; without a test split, `test_size` of the
    training rows is held out for it, then (without a val split) `val_size` ("auto": see
    `adaptive.validation_size`) of the rest for validation, both drawn by one generator seeded
    with `seed`. `setting` names the data in messages."""
    plan = {split: SplitRows(split, rows) for split, rows in kept.items()}
    train_rows = kept["train"]
    generator = torch.Generator().manual_seed(seed)
    if "test" not in kept:
        n_test = count(test_size or 0, len(train_rows))
        if not 0 < n_test < len(train_rows):
            raise DataError(f"{setting} has no test split: set data.test_size to the share "
                            "(e.g. 0.2) or number of texts to hold out for testing")
        order = torch.randperm(len(train_rows), generator=generator)
        plan["test"] = SplitRows("train", train_rows[order[:n_test]])
        train_rows = train_rows[order[n_test:].sort().values]
    if "val" in kept:  # the source's own validation split: nothing held out for it
        plan["train"] = SplitRows("train", train_rows)
        return plan
    n_train = len(train_rows)
    n_val = (adaptive.validation_size(n_train) if adaptive.is_auto(val_size)
             else count(val_size, n_train))
    if n_val >= n_train:
        raise ValueError(f"data.val_size={val_size} leaves no training texts (the train "
                         f"split has {n_train})")
    # A split may be sorted by label (IMDB's is): hold out a seeded random subset.
    order = torch.randperm(n_train, generator=generator)
    plan["train"] = SplitRows("train", train_rows[order[n_val:]])
    if n_val:
        plan["val"] = SplitRows("train", train_rows[order[:n_val]])
    return plan
