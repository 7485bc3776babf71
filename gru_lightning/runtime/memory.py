"""Freed memory handed back to the operating system during training (`callbacks.trim_memory`).

A training step allocates and frees buffers of a few MB (activations kept for the backward
pass, the GRU kernel's gates). glibc serves the first ones with mmap and returns them on
free, but each such free raises its dynamic mmap threshold, so from then on buffers of that
size come from the heap, where freed ones stay mapped when anything long-lived sits between
them (the model keeps its epoch's outputs in one tensor per column so that nothing of a step
does; the n-gram stage and long texts still leave such holes). Fixing the threshold
(`MALLOC_MMAP_THRESHOLD_`) maps and faults every buffer in again at every step, far slower.
`malloc_trim(0)` gives the free pages back (MADV_DONTNEED, within the heap too) and leaves
the threshold alone; it costs ~20 ms, so it runs only when the process has grown since the
last trim. Measurements: docs/experiments.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from gru_lightning.settings import positive_int

log = logging.getLogger(__name__)

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4 / 1024


@cache
def _malloc_trim() -> Any:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def rss_mb() -> float | None:
    """This process's resident memory in MB, or None where `/proc` is not readable."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


class TrimMemory(Callback):
    """Every `every_n_steps` training, validation and test batches, and after each
    validation, calls glibc's `malloc_trim(0)` if the process's RSS grew by `min_growth_mb`
    since the last trim (always, where RSS is not readable); nothing where the C library has
    no `malloc_trim`.

    Args:
        every_n_steps: batches between two looks at the RSS (~15 us each).
        min_growth_mb: growth that makes a trim worth its ~20 ms.
    """

    def __init__(self, every_n_steps: int = 50, min_growth_mb: float = 64) -> None:
        positive_int("every_n_steps", every_n_steps)
        if not min_growth_mb >= 0:
            raise ValueError(f"min_growth_mb must be >= 0, got {min_growth_mb!r}")
        self.every_n_steps = every_n_steps
        self.min_growth_mb = min_growth_mb
        self._after_trim_mb: float | None = None  # RSS after the last trim
        # Looked up at each call, not kept: the callback must pickle (DDP spawn), and a
        # ctypes function does not.
        if _malloc_trim() is None:
            log.info("No malloc_trim in this C library: freed memory is left to it")

    def trim(self) -> None:
        trim = _malloc_trim()
        if trim is None:
            return
        now = rss_mb()
        if now is not None and self._after_trim_mb is not None \
                and now < self._after_trim_mb + self.min_growth_mb:
            return
        trim(0)
        self._after_trim_mb = rss_mb()

    def _after_batch(self, batch_idx: int) -> None:
        if (batch_idx + 1) % self.every_n_steps == 0:
            self.trim()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._after_batch(batch_idx)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._after_batch(batch_idx)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trim()

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                          outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        self._after_batch(batch_idx)
