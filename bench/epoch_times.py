"""A callback for bench/gpu_check.py: each epoch's training and validation seconds and
texts/s, and the dtype the network's recurrence computed in, written as JSON when the fit
ends (`+callbacks.epoch_times._target_=epoch_times.EpochTimes`, bench/ on PYTHONPATH)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class EpochTimes(L.Callback):
    """Args: path: the JSON file to write."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.epochs: list[dict[str, float]] = []
        self.recurrence_dtype: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        recurrence = getattr(pl_module.net, "_recurrence", None)
        if recurrence is None or stage != "fit":
            return

        def spy(ids: torch.Tensor, embedded: torch.Tensor | None = None) -> Any:
            outputs, state = recurrence(ids, embedded)
            self.recurrence_dtype = str(outputs.dtype)
            return outputs, state

        pl_module.net._recurrence = spy

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sync(trainer)
        self.start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._sync(trainer)
            self.train_end = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._sync(trainer)
        splits = trainer.datamodule.splits
        train_s, val_s = self.train_end - self.start, time.perf_counter() - self.train_end
        self.epochs.append({"train_s": train_s, "val_s": val_s, "epoch_s": train_s + val_s,
                            "train_texts_per_s": len(splits["train"]) / train_s,
                            "val_texts_per_s": len(splits["val"]) / val_s})

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.write_text(json.dumps({"epochs": self.epochs,
                                         "recurrence_dtype": self.recurrence_dtype}))
