"""`CPUThreads`: PyTorch's intra-op threads sized to the cores other processes leave free.

PyTorch starts one OpenMP thread per core, and each parallel op ends at a barrier that waits
for all of them. When another process holds a core (a second run, a notebook, a sweep job),
the thread that shares that core is descheduled for whole time slices while its partner
spins at the barrier: on 2 cores, 150 training steps took 3.1x their alone time beside one
busy process and up to 17x beside a second training (bench/load.py). One thread per free
core avoids it. The callback measures, every `interval_s` of training, validation, test or
prediction, how many cores the other processes used (`/proc/stat` minus this process's own
CPU time) and sets `torch.set_num_threads` to the cores left, at least one.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)

PROC_STAT = Path("/proc/stat")
# /proc/stat counts in USER_HZ ticks.
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores() -> set[int]:
    """Cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def busy_seconds(cores: set[int]) -> float | None:
    """CPU seconds spent busy on `cores` since boot, all processes; None where `/proc/stat`
    cannot be read (not Linux)."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            # user nice system idle iowait irq softirq steal ...: all but idle and iowait.
            values = [int(v) for v in fields[:8]]
            ticks += sum(values) - values[3] - values[4]
    return ticks / TICKS_PER_S


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class CPUThreads(L.Callback):
    """Sets PyTorch's CPU threads for the run.

    Args:
        threads: "auto" (one per core that other processes leave free, re-measured every
            `interval_s`), a fixed count, or None (leave PyTorch's default: one per core).
        interval_s: seconds between measurements in "auto" mode.
    """

    def __init__(self, threads: int | str | None = "auto", interval_s: float = 0.25) -> None:
        if threads is not None and threads != "auto" and (
                isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(
                f"num_threads must be 'auto', a positive integer or null, got {threads!r}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.threads = threads
        self.interval_s = interval_s
        self.core_ids = usable_cores()
        self.cores = len(self.core_ids)
        self._sample: tuple[float, float, float] | None = None  # wall, all busy, own
        self._proposed: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.threads is None:
            return
        if self.threads != "auto":
            torch.set_num_threads(self.threads)
            return
        # Under DDP this node's processes start with a share of the cores each, not all of
        # them each; the measurements take it from there.
        local = trainer.num_devices if trainer is not None and trainer.world_size > 1 else 1
        torch.set_num_threads(max(1, self.cores // local))
        self._sample = self._read()
        if self._sample is None:
            log.info("CPU load is not readable here (%s): using %d threads", PROC_STAT,
                     self.cores)

    def _read(self) -> tuple[float, float, float] | None:
        busy = busy_seconds(self.core_ids)
        return None if busy is None else (time.monotonic(), busy, own_cpu_seconds())

    def free_cores(self, now: tuple[float, float, float],
                   before: tuple[float, float, float]) -> float:
        """Cores not used by other processes between two samples."""
        wall = now[0] - before[0]
        others = ((now[1] - before[1]) - (now[2] - before[2])) / wall
        return self.cores - max(0.0, others)

    def _adjust(self) -> None:
        if self.threads != "auto" or self._sample is None:
            return
        if time.monotonic() - self._sample[0] < self.interval_s:
            return
        now = self._read()
        if now is None:
            return
        free = self.free_cores(now, self._sample)
        self._sample = now
        wanted = max(1, min(self.cores, round(free)))
        current = torch.get_num_threads()
        # Change only when two measurements in a row agree: one busy moment of another
        # process should not flip the thread count back and forth.
        if wanted != current and wanted == self._proposed:
            torch.set_num_threads(wanted)
            log.info("%.1f of %d cores are free: %d intra-op thread(s)", free, self.cores,
                     wanted)
        self._proposed = wanted

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._adjust()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._adjust()

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._adjust()

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._adjust()
