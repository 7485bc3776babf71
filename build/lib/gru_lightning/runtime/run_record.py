"""What a run records and says as it ends: `metrics.json`'s status, the command that resumes
an interrupted fit, and user errors as one line."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.pytorch.utilities import rank_zero_only

from gru_lightning.runtime.faults import InterruptCheckpoint

log = logging.getLogger(__name__)


class RunInterrupted(Exception):
    """Ctrl-C ended the fit; the message says what was saved and how to resume."""


@rank_zero_only  # under DDP every process runs train.py; one writes
def write_status(output_dir: Path, status: str, metrics: dict[str, Any]) -> None:
    """`metrics.json`: what the sweep report and users read back. "running" from the start,
    so a run killed outright is told apart from a finished one."""
    record = {"status": status, **metrics}
    (output_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")


def say_where_it_resumes(checkpoint: dict[str, Any]) -> None:
    progress = (checkpoint.get("loops", {}).get("fit_loop", {})
                .get("epoch_loop.batch_progress", {}))
    if progress.get("is_last_batch", True):
        return
    # Lightning warns that the train loader cannot resume mid-epoch; said here in plain words.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before")
    log.info("Resuming in the middle of epoch %d, after %d of its batches: the rest of that "
             "epoch is drawn from a new shuffle", checkpoint.get("epoch", 0),
             progress.get("current", {}).get("completed", 0))


def resume_command(checkpoint: Path) -> str:
    """`python train.py` with this run's overrides and `ckpt_path` set to `checkpoint`."""
    overrides = [o for o in HydraConfig.get().overrides.task
                 if not o.lstrip("+~").startswith(("ckpt_path=", "hydra.", "paths.output_dir"))]
    return shlex.join(["python", "train.py", *overrides, f"ckpt_path={checkpoint}"])


def interrupted(trainer: L.Trainer, output_dir: Path) -> RunInterrupted:
    """Record an interrupted fit in `metrics.json`: what was saved, and the command that
    resumes it."""
    # Lightning ignores SIGINT from the first Ctrl-C on; give it back to whoever called.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    saved = next((c.saved for c in trainer.callbacks
                  if isinstance(c, InterruptCheckpoint) and c.saved is not None), None)
    last = output_dir / "checkpoints" / "last.ckpt"
    checkpoint = saved or (last if last.is_file() else None)
    record: dict[str, Any] = {"epochs": trainer.current_epoch, "step": trainer.global_step}
    if checkpoint is None:
        write_status(output_dir, "interrupted", record)
        return RunInterrupted("Interrupted before the first training step ended: nothing to "
                              "resume; run the same command again.")
    command = resume_command(checkpoint.resolve())
    write_status(output_dir, "interrupted", {**record, "checkpoint": str(checkpoint),
                                             "resume": command})
    return RunInterrupted(
        f"Interrupted at step {trainer.global_step} (epoch {trainer.current_epoch}). Saved "
        f"{checkpoint}; resume with:\n  {command}")


def user_message(error: Exception) -> str:
    # Hydra wraps constructor errors; the constructor's own message is the useful part.
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        return f"{type(error.__cause__).__name__}: {error.__cause__}"
    return f"{type(error).__name__}: {error}"
