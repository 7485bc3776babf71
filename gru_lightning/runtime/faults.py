"""What a run does when training goes wrong: a loss that stops being finite, Ctrl-C, and a
process killed while it writes a checkpoint.

The first two end the fit at once with an exception that `train.py` turns into a status in
`metrics.json` ("diverged", "interrupted"), a message and a non-zero exit. Checkpoints are
written whole or not at all, so a run killed at any moment leaves its earlier ones intact.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from gru_lightning.settings import positive_int


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: more steps cannot bring the weights back."""


class StopOnNonFiniteLoss(L.Callback):
    """Stops the fit with `DivergedError` at the first training step whose loss is NaN or
    infinite, before any checkpoint of the broken weights is written.

    Args:
        check_every_n_steps: on an accelerator, reading the loss waits for the device, so
            each step's finiteness is kept on the device and read every n steps there, and
            before validation and each epoch's end (the checkpoints); on the CPU every step
            (it costs nothing).
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        positive_int("check_every_n_steps", check_every_n_steps)
        self.check_every_n_steps = check_every_n_steps
        self._bad: torch.Tensor | None = None  # on an accelerator: the first non-finite loss

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        if loss.device.type == "cpu":
            # On the CPU, .item() costs ~0.3 us, torch.isfinite(...).all() ~10 us.
            if not (math.isfinite(loss.item()) if loss.numel() == 1
                    else bool(torch.isfinite(loss).all())):
                self._stop(trainer, loss.detach())
            return
        # No sync: the first non-finite loss since the last read is kept on the device.
        loss = loss.detach().float().reshape(-1)[:1]
        if self._bad is None:
            self._bad = torch.where(torch.isfinite(loss), torch.zeros_like(loss), loss)
        else:
            self._bad = torch.where((self._bad == 0) & ~torch.isfinite(loss), loss, self._bad)
        if trainer.global_step % self.check_every_n_steps == 0:
            self._read(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._read(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks' epoch-end hooks run before the checkpoint callbacks' (Lightning puts
        # those last).
        self._read(trainer)

    def _read(self, trainer: L.Trainer) -> None:
        if self._bad is not None and bool(self._bad.ne(0).any()):
            self._stop(trainer, self._bad)

    def _stop(self, trainer: L.Trainer, loss: torch.Tensor) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        raise DivergedError(
            f"the training loss is {loss.reshape(-1)[0].item()} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}): training diverged, and the run stopped before "
            f"saving the broken weights. Lower the learning rate (model.optimizer.lr, now "
            f"{lr}) or resume from an earlier checkpoint."
        )


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C (KeyboardInterrupt) during the fit, saves the state of the step it reached to
    `dirpath/filename.ckpt`, to resume from with `ckpt_path=`. Other exceptions save nothing:
    a diverged run's weights are not worth keeping, and a failed one's may be inconsistent.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        if not filename:
            raise ValueError("filename must not be empty")
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.saved: Path | None = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or trainer.sanity_checking:
            return
        if trainer.global_step == 0 or trainer.state.fn != TrainerFn.FITTING:
            return  # nothing trained yet, or not fitting (testing): nothing to resume
        trainer.save_checkpoint(self.path)  # atomic: a temporary file, then a rename
        self.saved = self.path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, then renames it over the
    target: a rename within a folder is atomic, so a process killed while writing leaves the
    previous file (e.g. last.ckpt) whole. Lightning's own writer moves the file from the
    system's temporary folder, which is a copy, not a rename, where that folder is another
    file system (a tmpfs /tmp). No fsync: it would guard against a power cut, not a killed
    process, and cost ~0.5 s an epoch here (two checkpoints of 16 MB)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
