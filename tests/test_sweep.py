"""Hydra multiruns through the entry point: job folders, TensorBoard, the report, a failing
job, the joblib launcher, Optuna, and the SLURM launcher config."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gru_lightning.report import main as report_main
from gru_lightning.train import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]


def multirun(tmp_path: Path, parquet_copy: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "train.py", "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
         f"paths.cache_dir={tmp_path / 'cache'}", f"data.local_path={parquet_copy}",
         "data.max_features=100", "data.maxlen=24", "data.val_size=100",
         "model.embedding_dim=16", "trainer.max_epochs=2", "trainer.log_every_n_steps=2",
         "callbacks.progress_bar=null",
         *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def report_rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "report.csv").open() as file:
        return list(csv.DictReader(file))


def test_sweep_over_hidden_size(tmp_path, parquet_copy):
    result = multirun(tmp_path, parquet_copy, "model.hidden_size=8,16")
    sweep = tmp_path / "sweep"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0_model.hidden_size=8", "1_model.hidden_size=16"]
    for job in jobs:
        events = EventAccumulator(str(sweep / job))
        events.Reload()
        assert {"val/acc", "train/loss_step", "hp/test_acc"} <= set(events.Tags()["scalars"])
    # Tokenized once for the whole sweep: the second job found the first job's cache.
    assert result.stdout.count("skipping tokenization") + result.stderr.count(
        "skipping tokenization") >= 1
    # One cache entry: the tensors, and the split texts beside them.
    assert len(list((tmp_path / "cache").glob("*-texts.pt"))) == 1
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    rows = report_rows(sweep)
    assert [r["overrides"] for r in rows] == ["model.hidden_size=8", "model.hidden_size=16"]
    assert all(r["status"] == "completed" and float(r["test_acc"]) > 0.5 for r in rows)
    assert [int(r["params"]) for r in rows] == [100 * 16 + 3 * 8 * (16 + 8 + 2) + 9,
                                                100 * 16 + 3 * 16 * (16 + 16 + 2) + 17]
    assert float(rows[0]["seconds_per_epoch"]) > 0
    assert (sweep / "report.png").stat().st_size > 1000
    assert "| 1_model.hidden_size=16 |" in (sweep / "report.md").read_text()


def test_a_failing_job_is_reported_and_the_others_run_on(tmp_path, parquet_copy):
    multirun(tmp_path, parquet_copy, "model.hidden_size=8,0,16")
    rows = report_rows(tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["completed", "failed", "completed"]
    assert "model.hidden_size must be a positive integer, got 0" in rows[1]["error"]
    assert float(rows[2]["test_acc"]) > 0.5


def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path, parquet_copy):
    multirun(tmp_path, parquet_copy, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
             "num_threads=1", "model.hidden_size=8,16")
    rows = report_rows(tmp_path / "sweep")
    assert [r["status"] for r in rows] == ["completed", "completed"]


def test_optuna_search_persists_and_resumes(tmp_path, parquet_copy):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # conf/hparams_search/optuna.yaml with a search space small enough for a test, added
    # to Hydra's search path.
    extra = tmp_path / "conf" / "hparams_search"
    extra.mkdir(parents=True)
    (extra / "tiny_optuna.yaml").write_text(
        "# @package _global_\ndefaults:\n  - optuna\nhydra:\n  sweeper:\n    params:\n"
        "      model.hidden_size: choice(8, 16)\n      model.embedding_dim: choice(8, 16)\n"
        "      model.lr: tag(log, interval(0.001, 0.01))\n      model.dropout: interval(0, 0.3)\n"
        "      model.bidirectional: choice(false, true)\n      data.maxlen: choice(16, 24)\n"
    )
    search = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "hparams_search=tiny_optuna",
              "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}"]
    multirun(tmp_path, parquet_copy, *search, "hydra.sweeper.sampler.seed=1")
    multirun(tmp_path, parquet_copy, *search, "hydra.sweeper.sampler.seed=2",
             f"hydra.sweep.dir={tmp_path / 'sweep2'}")
    study = optuna.load_study(study_name="gru_imdb", storage=storage)
    assert len(study.trials) == 4  # resumed: 2 + 2
    assert all(t.state.name == "COMPLETE" and 0 <= t.value <= 1 for t in study.trials)


def test_slurm_launcher_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm",
                                          "hydra.launcher.partition=gpu",
                                          "hydra.launcher.gpus_per_node=1"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu"


def test_report_on_demand_and_its_errors(tmp_path, capsys):
    assert report_main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert report_main([str(tmp_path)]) == 1
    assert "holds no Hydra job folders" in capsys.readouterr().err
