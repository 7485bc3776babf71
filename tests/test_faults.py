"""Faults done for real, in `python train.py` subprocesses: Ctrl-C, SIGKILL in the middle of
an epoch and while a checkpoint is written, a diverging run, two runs on a cold cache. After
each, the run resumes, and the epochs, checkpoint files and metrics.json must agree, with
nothing written earlier lost."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import synthetic_reviews, write_parquet_copy

ROOT = Path(__file__).resolve().parents[1]
TRAIN_REVIEWS, BATCH = 1100, 50  # 1,000 after the validation hold-out: 20 steps per epoch
STEPS_PER_EPOCH = 20
SMALL = ["data.max_features=100", "data.maxlen=24", "data.val_size=100",
         f"data.batch_size={BATCH}", "model.net.embedding_dim=16", "model.net.hidden_size=16",
         "callbacks.progress_bar=null", "callbacks.model_summary=null", "test=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_parquet_copy(tmp_path_factory.mktemp("faults_data"), {
        "train": synthetic_reviews(TRAIN_REVIEWS, seed=0), "test": synthetic_reviews(100, 1)})


def start(run: Path, cache: Path, data: Path, *overrides: str, env: dict[str, str] | None = None,
          script: str = "train.py") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, script, f"hydra.run.dir={run}", f"paths.cache_dir={cache}",
         f"data.local_path={data}", *SMALL, *overrides],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})})


def wait_for(marker: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode}:\n{process.stdout.read()}")
        assert time.monotonic() < deadline, "the fault's moment never came"
        time.sleep(0.05)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def status(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def resume(run: Path, cache: Path, data: Path, ckpt: Path, *overrides: str) -> dict:
    code, output = finish(start(run, cache, data, f"ckpt_path={ckpt}", *overrides))
    assert code == 0, output
    return status(run)


def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, data):
    run, cache, marker = tmp_path / "run", tmp_path / "cache", tmp_path / "now"
    process = start(run, cache, data, "trainer.max_epochs=3", script="tests/fault_injection.py",
                    env={"FAULT_MARKER": str(marker), "FAULT_AFTER_STEP": "30"})
    wait_for(marker, process)
    process.send_signal(signal.SIGINT)
    code, output = finish(process)

    assert code == 130, output
    assert "Traceback" not in output
    record = status(run)
    assert record["status"] == "interrupted" and record["epochs"] == 1
    assert 30 <= record["step"] < 2 * STEPS_PER_EPOCH  # in the middle of the second epoch
    saved = run / "checkpoints" / "interrupted.ckpt"
    assert record["checkpoint"] == str(saved) and saved.is_file()
    assert checkpoint(saved)["global_step"] == record["step"]
    assert record["resume"] in output  # the exact command, printed
    assert checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 0  # the first epoch's

    # The printed command, as a user pastes it (in a folder of its own here).
    command = shlex.split(record["resume"])
    assert command[:2] == ["python", "train.py"] and f"ckpt_path={saved}" in command
    resumed_run = tmp_path / "resumed"
    finished = subprocess.run([sys.executable, *command[1:], f"hydra.run.dir={resumed_run}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    done = status(resumed_run)
    assert done["status"] == "completed" and done["epochs"] == 3
    last = checkpoint(resumed_run / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == 3 * STEPS_PER_EPOCH
    assert saved.is_file() and status(run)["status"] == "interrupted"  # the first run's, kept


def test_sigkill_mid_epoch_then_resume_from_last_ckpt(tmp_path, data):
    run, cache, marker = tmp_path / "run", tmp_path / "cache", tmp_path / "now"
    process = start(run, cache, data, "trainer.max_epochs=3", script="tests/fault_injection.py",
                    env={"FAULT_MARKER": str(marker), "FAULT_AFTER_STEP": "30"})
    wait_for(marker, process)
    process.kill()
    finish(process)

    assert status(run)["status"] == "running"  # killed outright: no chance to say more
    last = checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0 and last["global_step"] == STEPS_PER_EPOCH
    before = (run / "checkpoints" / "last.ckpt").read_bytes()

    done = resume(tmp_path / "resumed", cache, data, run / "checkpoints" / "last.ckpt",
                  "trainer.max_epochs=3")
    assert done["status"] == "completed" and done["epochs"] == 3
    last = checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == 3 * STEPS_PER_EPOCH
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before  # nothing earlier lost


def test_sigkill_while_a_checkpoint_is_written_keeps_the_previous_one(tmp_path, data):
    run, cache, marker = tmp_path / "run", tmp_path / "cache", tmp_path / "now"
    # Each epoch writes two checkpoints (the best and last.ckpt): block the third write, the
    # second epoch's first, half-way through.
    process = start(run, cache, data, "trainer.max_epochs=3", script="tests/fault_injection.py",
                    env={"FAULT_MARKER": str(marker), "FAULT_BLOCK_SAVE": "2"})
    wait_for(marker, process)
    process.kill()
    finish(process)

    checkpoints = run / "checkpoints"
    partial = [p.name for p in checkpoints.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1  # the half-written file, under a name no one resumes from
    last = checkpoint(checkpoints / "last.ckpt")  # whole: it loads
    assert last["epoch"] == 0 and last["global_step"] == STEPS_PER_EPOCH
    assert len(list(checkpoints.glob("epoch00-*.ckpt"))) == 1

    done = resume(tmp_path / "resumed", cache, data, checkpoints / "last.ckpt",
                  "trainer.max_epochs=2")
    assert done["status"] == "completed" and done["epochs"] == 2
    assert checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_a_diverging_run_stops_at_once(tmp_path, data):
    run = tmp_path / "run"
    code, output = finish(start(run, tmp_path / "cache", data, "model.optimizer.lr=1e6",
                                "trainer.max_epochs=3"))
    assert code == 1
    assert "training diverged" in output and "(model.optimizer.lr, now 1000000.0)" in output
    assert "Traceback" not in output and "Test Accuracy" not in output
    record = status(run)
    assert record["status"] == "diverged" and record["step"] < 10 and record["epochs"] == 0
    assert not list((run / "checkpoints").glob("*.ckpt"))  # no broken weights saved


def test_two_runs_on_a_cold_cache_tokenize_once(tmp_path, data):
    cache = tmp_path / "cache"
    runs = [tmp_path / "first", tmp_path / "second"]
    processes = [start(run, cache, data, "trainer.max_epochs=1") for run in runs]
    results = [finish(p) for p in processes]
    assert [code for code, _ in results] == [0, 0], results
    outputs = [output for _, output in results]
    assert sum("Tokenized data.local_path=" in o for o in outputs) == 1
    assert sum("found in cache" in o for o in outputs) == 1  # the other waited, then read it
    assert [status(run)["status"] for run in runs] == ["completed", "completed"]
    # One cache entry (a folder), and no partial one left behind.
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    assert not list(cache.glob("*.partial"))
