"""`python train.py`, with hooks that let a test strike at a known moment (tests/test_faults.py).

    python tests/fault_injection.py <train.py overrides>

Environment:
    FAULT_MARKER: a file this process creates when the moment has come; the test waits for
        it, then sends its signal.
    FAULT_AFTER_STEP=N: the moment is the end of training step N; every later step sleeps
        0.2 s, so a signal lands in the middle of the epoch.
    FAULT_BLOCK_SAVE=N: the moment is the (N+1)-th checkpoint write, which writes half of the
        file, then blocks, so a SIGKILL lands while a checkpoint is being written.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def mark() -> None:
    Path(os.environ["FAULT_MARKER"]).touch()


if "FAULT_AFTER_STEP" in os.environ:
    from gru_lightning.model import TextClassifier

    after_step = int(os.environ["FAULT_AFTER_STEP"])

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.trainer.global_step == after_step:
            mark()
        if self.trainer.global_step >= after_step:
            time.sleep(0.2)

    TextClassifier.on_train_batch_end = on_train_batch_end

if "FAULT_BLOCK_SAVE" in os.environ:
    saves_left = int(os.environ["FAULT_BLOCK_SAVE"])
    real_save = torch.save

    def blocking_save(obj, f, *args, **kwargs):
        global saves_left
        name = getattr(f, "name", "")
        if not (isinstance(name, str) and ".ckpt." in name and name.endswith(".partial")):
            return real_save(obj, f, *args, **kwargs)
        if saves_left:
            saves_left -= 1
            return real_save(obj, f, *args, **kwargs)
        import io

        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        mark()
        time.sleep(600)  # the test kills the process here
        return None

    torch.save = blocking_save

# A user's Ctrl-C: Python turns SIGINT into KeyboardInterrupt unless the process started
# with it ignored, as every command started with `&` by a shell without job control does
# (CI scripts, nohup): undo that here, as a terminal would have it.
signal.signal(signal.SIGINT, signal.default_int_handler)

sys.argv = [str(ROOT / "train.py"), *sys.argv[1:]]
sys.path.insert(0, str(ROOT))
runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
