"""Hydra multiruns through the entry point: job folders, TensorBoard, the report (finished,
failed, running and killed jobs), the joblib launcher in parallel, Optuna (persisted,
resumed, a failed trial), and the SLURM launcher config."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gru_lightning.metrics import METRICS
from gru_lightning.report import collect, write_report
from gru_lightning.report import main as report_main
from gru_lightning.train import CONFIG_DIR
from tests.conftest import ROOT


def multirun(tmp_path: Path, parquet_copy: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "train.py", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         f"paths.cache_dir={tmp_path / 'cache'}", f"data.local_path={parquet_copy}",
         "data.max_features=100", "data.maxlen=24", "data.val_size=100",
         "data.batch_size=32", "model.net.embedding_dim=16", "model.optimizer.lr=0.01",
         "trainer.max_epochs=2",
         # A deletion override (no "=") too: the report at the sweep's end reads it.
         "trainer.log_every_n_steps=2", "~callbacks.progress_bar", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def report_rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "report.csv").open() as file:
        return list(csv.DictReader(file))


def test_sweep_over_hidden_size_with_a_failing_job(tmp_path, parquet_copy):
    """One job fails (hidden size 0); it is reported, and the others run on."""
    result = multirun(tmp_path, parquet_copy, "model.net.hidden_size=8,0,16")
    sweep = tmp_path / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_model.net.hidden_size=8", "1_model.net.hidden_size=0",
                    "2_model.net.hidden_size=16"]
    for job in (jobs[0], jobs[2]):
        events = EventAccumulator(str(sweep / job))
        events.Reload()
        assert {"val/acc", "train/loss_step", "hp/test_acc"} <= set(events.Tags()["scalars"])
    # Tokenized once for the whole sweep: the third job found the first job's cache (the
    # second failed before any data work).
    assert (result.stdout + result.stderr).count("skipping tokenization") == 1
    # One cache entry: a folder with the ids and the split texts.
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert (entry / "entry.pt").is_file() and (entry / "train-ids.npy").is_file()
    rows = report_rows(sweep)
    assert [r["overrides"] for r in rows] == ["model.net.hidden_size=8", "model.net.hidden_size=0",
                                              "model.net.hidden_size=16"]
    assert [r["status"] for r in rows] == ["completed", "failed", "completed"]
    assert "model.net.hidden_size must be a positive integer, got 0" in rows[1]["error"]
    # The report's figures follow metrics.METRICS; 2 epochs at lr 0.01 learn these reviews.
    assert {f"test_{name}" for name in METRICS} | {"val_acc_best", "test_loss"} <= set(rows[0])
    assert all(float(rows[i]["test_acc"]) >= 0.9 for i in (0, 2))
    assert [int(rows[i]["params"]) for i in (0, 2)] == [100 * 16 + 3 * 8 * (16 + 8 + 2) + 9,
                                                        100 * 16 + 3 * 16 * (16 + 16 + 2) + 17]
    assert float(rows[0]["seconds_per_epoch"]) > 0
    assert (sweep / "report.png").stat().st_size > 1000
    report = (sweep / "report.md").read_text()
    assert "| 2_model.net.hidden_size=16 |" in report and "2 of 3 jobs completed" in report


def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path, parquet_copy):
    multirun(tmp_path, parquet_copy, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
             "model.net.hidden_size=8,16", "trainer.max_epochs=1")
    sweep = tmp_path / "sweep"
    rows = report_rows(sweep)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    # Each job writes config.yaml as it starts and metrics.json as it ends: the two spans
    # overlap only if the jobs ran at the same time.
    spans = [((sweep / r["job"] / "config.yaml").stat().st_mtime,
              (sweep / r["job"] / "metrics.json").stat().st_mtime) for r in rows]
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a


def test_optuna_search_persists_resumes_and_records_a_failed_trial(tmp_path, parquet_copy):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # conf/hparams_search/optuna.yaml with a search space small enough for a test, added
    # to Hydra's search path.
    extra = tmp_path / "conf" / "hparams_search"
    extra.mkdir(parents=True)
    (extra / "tiny_optuna.yaml").write_text(
        "# @package _global_\ndefaults:\n  - optuna\nhydra:\n  sweeper:\n    params:\n"
        "      model.net.hidden_size: choice(8, 16)\n      model.net.embedding_dim: choice(8, 16)\n"
        "      model.optimizer.lr: tag(log, interval(0.001, 0.01))\n"
        "      model.net.dropout: interval(0, 0.3)\n"
        "      model.net.bidirectional: choice(false, true)\n      data.maxlen: choice(16, 24)\n"
    )
    search = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "hparams_search=tiny_optuna",
              f"hydra.sweeper.storage={storage}"]
    multirun(tmp_path, parquet_copy, *search, "hydra.sweeper.n_trials=2",
             "hydra.sweeper.sampler.seed=1", "trainer.max_epochs=1")
    # Resumed with one more trial, made to fail: the job returns NaN, Optuna records it.
    multirun(tmp_path, parquet_copy, *search, "hydra.sweeper.n_trials=1",
             "hydra.sweeper.sampler.seed=2", "model.net.num_layers=0", "trainer.max_epochs=1",
             f"hydra.sweep.dir={tmp_path / 'sweep2'}")
    study = optuna.load_study(study_name="gru_imdb", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert all(0.5 <= t.value <= 1 for t in study.trials[:2])


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm",
                                          "hydra.launcher.partition=gpu",
                                          "hydra.launcher.gpus_per_node=1"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")  # the plugin is installed


def _job(sweep: Path, name: str, metrics: dict | None) -> None:
    (sweep / name / ".hydra").mkdir(parents=True)
    value = name.split("=", 1)[1]
    (sweep / name / ".hydra" / "overrides.yaml").write_text(f"- model.net.hidden_size={value}\n")
    if metrics is not None:
        (sweep / name / "metrics.json").write_text(json.dumps(metrics))


def test_the_report_on_a_running_or_killed_sweep(tmp_path):
    """A job still running says so in metrics.json; one killed before writing it, or not yet
    started, has none: "incomplete". The report is written for the others all the same."""
    sweep = tmp_path / "sweep"
    _job(sweep, "0_model.net.hidden_size=8", {"status": "completed", "test/acc": 0.9,
                                              "val/acc_best": 0.91, "params": 10})
    _job(sweep, "1_model.net.hidden_size=16", {"status": "running"})
    _job(sweep, "2_model.net.hidden_size=32", None)
    rows = collect(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("0_model.net.hidden_size=8", "completed"), ("1_model.net.hidden_size=16", "running"),
        ("2_model.net.hidden_size=32", "incomplete")]
    assert rows[0]["test_acc"] == 0.9 and rows[1]["test_acc"] is None
    paths = write_report(sweep)
    assert "1 of 3 jobs completed" in paths["md"].read_text()
    assert paths["png"].stat().st_size > 1000


def test_report_on_demand_and_its_errors(tmp_path, capsys):
    assert report_main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert report_main([str(tmp_path)]) == 1
    assert "holds no Hydra job folders" in capsys.readouterr().err
    assert report_main([]) == 2
