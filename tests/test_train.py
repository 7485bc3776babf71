"""The training entry point, driven through Hydra: in-process with `compose` (and the run
trained once for all tests) for speed, and as `python train.py ...` subprocesses where what the
user sees of the process is the point: exit codes, messages, DDP's launched workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gru_lightning.metrics import METRICS
from gru_lightning.model import TextClassifier
from gru_lightning.runtime.run_record import user_message
from gru_lightning.train import train
from tests.conftest import (
    QUIET,
    ROOT,
    SMALL,
    TRAINED_EPOCHS,
    cache_entries,
    compose_train_config,
    synthetic_reviews,
)


def run_entry(*overrides: str, tmp_path: Path, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess:
    """`python train.py <overrides>` as a user types it, writing under tmp_path."""
    return subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}",
         f"paths.cache_dir={tmp_path / 'cache'}", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_the_entry_point_end_to_end(tmp_path, parquet_copy):
    result = run_entry("debug=fast_dev_run", f"data.local_path={parquet_copy}",
                       "data.max_features=100", "data.val_size=100", "model.net.hidden_size=8",
                       tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Trainable params" in result.stdout + result.stderr  # the model summary
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["classes"] == ["neg", "pos"]
    assert f"Test Accuracy: {metrics['test/acc']:.3f}" in result.stdout
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "hidden_size: 8" in config and "vocab_size: 100" in config  # resolved


def test_learns_synthetic_reviews(trained):
    assert trained.metrics["test/acc"] >= 0.97
    assert trained.metrics["val/acc_best"] >= 0.97
    assert trained.metrics["epochs"] == TRAINED_EPOCHS


def test_run_folder_holds_checkpoints_metrics_and_tensorboard_scalars(trained):
    checkpoints = sorted(p.name for p in (trained.run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    on_disk = json.loads((trained.run / "metrics.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["test/acc"] == trained.metrics["test/acc"]

    events = EventAccumulator(str(trained.run))  # event files sit in the run folder itself
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    # The tags README lists, each metric of metrics.METRICS in every stage.
    expected = {"train/loss_step", "train/acc_step", "train/loss_epoch", "train/acc_epoch",
                "val/loss", "val/acc_best", "test/loss", "lr-Adam", "hp/val_acc_best",
                "hp/test_loss", *(f"{stage}/{name}" for stage in ("val", "test")
                                  for name in METRICS),
                *(f"train/{name}" for name in METRICS if name != "acc"),
                *(f"hp/test_{name}" for name in METRICS)}
    assert expected <= scalars, expected - scalars
    assert len(events.Scalars("val/acc")) == TRAINED_EPOCHS  # one per epoch
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_the_best_checkpoint_is_what_was_tested(trained):
    """test_weights=best (the default): the test figures are the best checkpoint's."""
    model = TextClassifier.from_checkpoint(str(trained.best))
    datamodule = instantiate(trained.cfg.data)
    tested = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False
                       ).test(model, datamodule=datamodule, verbose=False)[0]
    assert tested["test/loss"] == pytest.approx(trained.metrics["test/loss"], abs=1e-7)


def test_test_weights_last_tests_the_last_epoch(compose_train):
    cfg = compose_train("trainer.max_epochs=2", "test_weights=last")
    metrics = train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = TextClassifier.from_checkpoint(str(last))
    tested = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False
                       ).test(model, datamodule=instantiate(cfg.data), verbose=False)[0]
    assert tested["test/loss"] == pytest.approx(metrics["test/loss"], abs=1e-7)


def test_same_seed_same_metrics(compose_train, tmp_path):
    first = train(compose_train("seed=7"))
    second = train(compose_train("seed=7", f"paths.output_dir={tmp_path / 'again'}"))
    third = train(compose_train("seed=8", f"paths.output_dir={tmp_path / 'other'}"))
    keys = ("val/acc", "val/loss", "test/acc", "test/loss")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    assert first["test/loss"] != third["test/loss"]


def test_resume_from_checkpoint(compose_train, trained, tmp_path):
    resumed = train(compose_train(f"trainer.max_epochs={TRAINED_EPOCHS + 1}",
                                  f"ckpt_path={trained.last}"))
    assert resumed["epochs"] == TRAINED_EPOCHS + 1
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == TRAINED_EPOCHS  # counted from 0
    steps_per_epoch = torch.load(trained.last, weights_only=False)["global_step"] // 3
    assert state["global_step"] == steps_per_epoch * (TRAINED_EPOCHS + 1)


def test_resume_with_other_preprocessing_is_refused(compose_train, trained):
    with pytest.raises(ValueError, match="other preprocessing"):
        train(compose_train("data.maxlen=30", f"trainer.max_epochs={TRAINED_EPOCHS + 1}",
                            f"ckpt_path={trained.last}"))


def test_testing_the_best_checkpoint_does_not_add_to_the_epoch_time(compose_train, tmp_path,
                                                                    monkeypatch):
    """The time per epoch is the fit's alone, with or without a test of the best checkpoint
    (trainer.test(ckpt_path="best") would restore the Timer from that checkpoint and count
    the fit twice). A clock that ticks once per reading makes it exact: the fit reads it the
    same number of times whether or not a test follows."""
    import lightning.pytorch.callbacks.timer as timer_module

    ticks = iter(range(1_000_000))
    monkeypatch.setattr(timer_module, "time", type("Clock", (), {
        "monotonic": staticmethod(lambda: float(next(ticks)))}))
    untested = train(compose_train("test=false"))
    ticks = iter(range(1_000_000))
    tested = train(compose_train("test_weights=best", f"paths.output_dir={tmp_path / 'tested'}"))
    assert tested["seconds_per_epoch"] == untested["seconds_per_epoch"] > 0
    assert "test/acc" in tested and "test/acc" not in untested


@pytest.mark.parametrize(
    ("overrides", "env", "message"),
    [
        (["model.net.hidden_size=0"], {}, "model.net.hidden_size must be a positive integer, "
                                          "got 0"),
        (["data.maxlen=0"], {}, "data.maxlen must be a positive integer, got 0"),
        (["trainer.accelerator=tpu9"], {}, "invalid accelerator name"),
        (["data.local_path=/no/such/imdb"], {}, "'/no/such/imdb' does not exist"),
        (["ckpt_path=/no/such.ckpt"], {}, "ckpt_path='/no/such.ckpt' does not exist"),
        (["data.local_path=null"], {"HF_ENDPOINT": "http://127.0.0.1:9"},
         "the Hugging Face Hub is unreachable"),  # nothing listens on port 9
    ],
)
def test_user_errors_are_one_clear_message_before_any_data_work(compose_train, tmp_path,
                                                                monkeypatch, overrides, env,
                                                                message):
    for name, value in {"HF_HUB_OFFLINE": "0", **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(Exception) as error:
        train(compose_train(*overrides))
    assert message in user_message(error.value)
    assert not cache_entries(tmp_path / "cache")  # no cache entry was written


def test_an_optimizer_setting_torch_refuses_is_one_clear_message(compose_train):
    with pytest.raises(ValueError) as error:
        train(compose_train("model.optimizer.weight_decay=-0.5"))
    assert user_message(error.value) == "ValueError: Invalid weight_decay value: -0.5"


def test_corrupt_parquet_is_one_clear_error(compose_train, tmp_path, parquet_copy):
    from gru_lightning.data import DatasetUnavailableError

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.parquet").write_bytes(b"PAR1 not really")
    (broken / "test.parquet").write_bytes((parquet_copy / "test.parquet").read_bytes())
    with pytest.raises(DatasetUnavailableError, match="Could not read the IMDB copy"):
        train(compose_train(f"data.local_path={broken}"))
    assert not cache_entries(tmp_path / "cache")


@pytest.mark.parametrize("case", ["setting", "labels", "checkpoint"])
def test_what_the_user_sees_of_an_error(tmp_path, parquet_copy, reviews, trained, case):
    """As a process: exit code 1, the one message, no traceback, "failed" in metrics.json."""
    from tests.conftest import write_parquet_copy

    bad_labels = write_parquet_copy(tmp_path / "copy", {
        "train": [*reviews["train"][:100], ("a third kind of review", 2)],
        "test": reviews["test"]})
    overrides, message = {
        "setting": (["model.net.hidden_size=0", f"data.local_path={parquet_copy}"],
                    "ValueError: model.net.hidden_size must be a positive integer, got 0"),
        "labels": ([f"data.local_path={bad_labels}"],
                   "train split: labels must be 0 (negative) or 1 (positive), found 2 in "
                   "row(s) 100"),
        "checkpoint": ([f"data.local_path={parquet_copy}",
                        f"ckpt_path={_half(tmp_path, trained.last)}"],
                       f"ckpt_path='{tmp_path / 'half.ckpt'}' is not a readable checkpoint"),
    }[case]
    result = run_entry(*SMALL, *overrides, tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert message in output
    assert "Traceback" not in output
    if case != "labels":  # refused before any data is read: nothing else is printed
        assert len(output.strip().splitlines()) <= 3
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and message in record["error"]


def _half(tmp_path: Path, checkpoint: Path) -> Path:
    (tmp_path / "half.ckpt").write_bytes(checkpoint.read_bytes()[:20_000])
    return tmp_path / "half.ckpt"


def test_ddp_on_two_cpu_processes_syncs_metrics(tmp_path, parquet_copy):
    """Test accuracy under DDP (each process sees half of the test set) must equal one
    process's accuracy over the whole test set with the same checkpoint."""
    result = run_entry("trainer=ddp_cpu", f"data.local_path={parquet_copy}", *SMALL,
                       "trainer.max_epochs=1", "callbacks.progress_bar=null", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "run"
    ddp_acc = json.loads((run / "metrics.json").read_text())["test/acc"]
    best = next(p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    from gru_lightning.predict import Predictor

    predictor = Predictor.from_checkpoint(best, device="cpu")
    texts = [t for t, _ in synthetic_reviews(200, seed=1)]  # the parquet copy's test split
    labels = torch.tensor([y for _, y in synthetic_reviews(200, seed=1)])
    single = ((predictor.predict_proba(texts) >= 0.5).long() == labels).float().mean().item()
    assert ddp_acc == pytest.approx(single, abs=1e-6)
    assert 0.6 < ddp_acc < 1.0  # a figure that can tell the halves from the whole


def test_trainer_ddp_launches_its_workers(tmp_path, parquet_copy):
    """trainer=ddp (for GPUs) re-launches the script once per device; on two CPU processes
    here, for one batch of each stage."""
    result = run_entry("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                       "debug=fast_dev_run", f"data.local_path={parquet_copy}", *SMALL, *QUIET,
                       tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + \
        result.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"


def test_ema_checkpoints_and_tests_the_averaged_weights(compose_train, tmp_path):
    cfg = compose_train("callbacks=ema", "callbacks.ema.decay=0.9", "trainer.max_epochs=2",
                        "test_weights=best")
    metrics = train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    best = next(p for p in checkpoints.glob("*.ckpt") if p.name != "last.ckpt")
    state = torch.load(best, weights_only=False)
    averaged, raw = state["state_dict"], state["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert not torch.equal(averaged["net.head.weight"], raw["net.head.weight"])

    # The test scored the averaged weights: the checkpoint's state_dict, as predict loads it.
    model = TextClassifier.from_checkpoint(str(best))
    again = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    tested = again.test(model, datamodule=instantiate(cfg.data), verbose=False)[0]
    assert tested["test/acc"] == metrics["test/acc"]

    # A resumed run picks up the average where it was: it has averaged every step of all
    # three epochs, not only those since the restart.
    resumed = train(compose_train("callbacks=ema", "callbacks.ema.decay=0.9",
                                  "trainer.max_epochs=3", f"ckpt_path={checkpoints / 'last.ckpt'}",
                                  f"paths.output_dir={tmp_path / 'resumed'}"))
    assert resumed["epochs"] == 3
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["averaging_state"]["n_averaged"].item() == state["global_step"] > 0


def test_cosine_schedule_takes_the_lr_to_zero_over_the_run(compose_train):
    cfg = compose_train("model.lr_schedule=cosine")
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt",
                       weights_only=False)
    steps = state["global_step"]
    assert steps > 0 and state["lr_schedulers"][0]["last_epoch"] == steps
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(compose_train):
    # lr ~0: validation accuracy never improves after the first epoch.
    cfg = compose_train("model.optimizer.lr=1e-12", "trainer.max_epochs=2")
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    best = [p.name for p in checkpoints.iterdir() if p.name != "last.ckpt"]
    assert len(best) == 1 and best[0].startswith("epoch00-")
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 1


def test_early_stopping_stops_when_val_acc_stops_improving(compose_train):
    metrics = train(compose_train("callbacks=early_stopping",
                                  "callbacks.early_stopping.patience=1",
                                  "model.optimizer.lr=1e-12", "trainer.max_epochs=5"))
    assert metrics["epochs"] == 2  # epoch 0 the best, epoch 1 no better: stop


def test_logger_csv_writes_the_metrics_as_csv(compose_train, tmp_path):
    import csv

    train(compose_train("logger=csv"))
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert {"val/acc", "test/acc", "train/loss_step"} <= set(rows[0])
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))  # TensorBoard's not


@pytest.mark.parametrize("flush", [True, False])
def test_flush_denormal_is_set_for_the_run(compose_train, flush):
    tiny = torch.tensor([1e-39])  # a float32 denormal
    try:
        train(compose_train("debug=fast_dev_run", f"flush_denormal={str(flush).lower()}"))
        assert bool((tiny * 1.0 == 0).item()) is flush
    finally:
        torch.set_flush_denormal(False)


def test_tensorboard_logging_never_imports_tensorflow(tmp_path):
    """Where TensorFlow is installed, TensorBoard's writer would import it (+0.5 GB RSS per
    run); train.py makes it use its stub. A fake `tensorflow` on the path leaves a mark."""
    fake = tmp_path / "site" / "tensorflow"
    fake.mkdir(parents=True)
    mark = tmp_path / "imported"
    (fake / "__init__.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    script = (
        "import gru_lightning.train\n"
        "from lightning.pytorch.loggers import TensorBoardLogger\n"
        f"logger = TensorBoardLogger({str(tmp_path / 'tb')!r})\n"
        "logger.log_metrics({'val/acc': 0.5}, step=1)\n"
        "logger.log_hyperparams({'lr': 0.001}, {'hp/val_acc': 0.5})\n"
        "logger.finalize('success')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*")), "nothing was logged"
    assert not mark.exists(), "TensorBoard imported tensorflow"
    # Without train.py's marker, TensorBoard's lookup takes the fake: the test sees what it
    # guards against.
    lookup = "from tensorboard.compat import tf; getattr(tf, 'io', None)"
    subprocess.run([sys.executable, "-c", lookup], env=env, check=True, capture_output=True)
    assert mark.exists()


def test_mlflow_tracks_the_run_beside_tensorboard_in_a_sqlite_store(tmp_path, parquet_copy):
    pytest.importorskip("mlflow", reason="the mlflow extra: pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    cfg = compose_train_config(tmp_path, parquet_copy, "logger=[tensorboard,mlflow]",
                               "trainer.max_epochs=2")
    metrics = train(cfg)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert cfg.logger.mlflow.tracking_uri == uri  # the default store: <root>/mlflow.db
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("gru-lightning")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["output_dir"] == cfg.paths.output_dir
    assert run.data.params["model/net/hidden_size"] == "16"
    assert run.data.params["data/maxlen"] == "24"
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2  # per epoch
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    assert run.data.metrics["hp/val_acc_best"] == pytest.approx(metrics["val/acc_best"])
    assert list((Path(cfg.paths.output_dir)).glob("events.out.tfevents.*"))  # and TensorBoard
