"""Splits as whole-batch tensor gathers (from memory or a memory map): no per-example Python
on the hot path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import BatchSampler, Dataset

from gru_lightning.data.store import read_ids


class TensorBatchDataset(Dataset):
    """Named per-text columns (`ids`, `labels`, and any feature another stage adds, e.g. the
    n-gram model's) that the DataLoader indexes one whole batch at a time (`__getitems__`):
    a batch is a dict of one gather per column."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor,
                 ids_file: Path | None = None) -> None:
        self.columns: dict[str, torch.Tensor] = {"ids": ids, "labels": labels}
        # Where `ids` is a memory map of this file, a pickled copy (a DDP rank started by
        # ddp_spawn) maps the file again: the ranks share its pages, not a copy each.
        self.ids_file = ids_file

    def __getstate__(self) -> dict[str, Any]:
        if self.ids_file is None:
            return self.__dict__
        return {**self.__dict__, "columns": {**self.columns, "ids": None}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.ids_file is not None:
            self.columns["ids"] = read_ids(self.ids_file, len(self.columns["labels"]))

    @property
    def ids(self) -> torch.Tensor:
        return self.columns["ids"]

    @property
    def labels(self) -> torch.Tensor:
        return self.columns["labels"]

    def add_column(self, name: str, values: torch.Tensor) -> None:
        """A per-text feature, in the split's order, gathered with every batch from now on."""
        if len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} rows, the split {len(self)}")
        self.columns[name] = values.to(self.ids.device)

    def to(self, device: torch.device) -> TensorBatchDataset:
        self.columns = {name: values.to(device) for name, values in self.columns.items()}
        if device.type != "cpu":
            self.ids_file = None  # a copy on the device now, no longer the file's map
        return self

    def __len__(self) -> int:
        return len(self.columns["labels"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: values[index] for name, values in self.columns.items()}

    def __getitems__(self, indices: Any) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices)
        device = self.columns["ids"].device
        if index.device != device:
            # Once, before the gathers: indexing device tensors with a CPU index copies it
            # with a blocking transfer per column. From pinned memory the copy is
            # asynchronous, so the CPU runs ahead of the GPU.
            if device.type == "cuda":
                index = index.pin_memory()
            index = index.to(device, non_blocking=True)
        return {name: values[index] for name, values in self.columns.items()}


def batch_as_is(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The collate function: `__getitems__` already returns the batch."""
    return batch


class SliceBatchSampler(BatchSampler):
    """BatchSampler's batches, in the same order, as slices of one index tensor drawn from
    the sampler once per epoch: not a list of ints built one at a time for every batch
    (~0.1 ms a batch on a 2-core CPU, more than the gather itself). Lightning rebuilds it
    around a DistributedSampler under DDP, as it does a BatchSampler."""

    def __iter__(self) -> Any:
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start : start + self.batch_size]
