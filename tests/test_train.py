"""The training entry point, driven through Hydra: in-process with `compose` for speed, and
as `python train.py ...` subprocesses for what a user sees."""

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

from gru_lightning.model import SentimentRNN
from gru_lightning.preprocessing import TextEncoder
from gru_lightning.train import train
from tests.conftest import synthetic_reviews

ROOT = Path(__file__).resolve().parents[1]


def run_entry(*overrides: str, tmp_path: Path, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess:
    """`python train.py <overrides>` as a user types it, writing under tmp_path."""
    return subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}",
         f"paths.cache_dir={tmp_path / 'cache'}", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_fast_dev_run_through_the_entry_point(tmp_path, parquet_copy):
    result = run_entry("debug=fast_dev_run", f"data.local_path={parquet_copy}",
                       "data.max_features=100", "data.val_size=100", "model.hidden_size=8",
                       tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Test Accuracy: " in result.stdout
    assert "Trainable params" in result.stdout + result.stderr  # the model summary
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["test/acc"] <= 1
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "hidden_size: 8" in config and "vocab_size: 100" in config  # resolved


def test_learns_synthetic_reviews(compose_train):
    metrics = train(compose_train("trainer.max_epochs=6"))
    assert metrics["test/acc"] >= 0.95
    assert metrics["val/acc_best"] >= 0.95


def test_run_folder_holds_checkpoints_metrics_and_tensorboard_scalars(compose_train):
    cfg = compose_train("trainer.max_epochs=2", "trainer.log_every_n_steps=2")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    assert json.loads((run / "metrics.json").read_text())["test/acc"] == metrics["test/acc"]

    events = EventAccumulator(str(run))  # event files sit in the run folder itself
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {"train/loss_step", "train/loss_epoch", "train/acc_step", "train/acc_epoch",
                "val/loss", "val/acc", "val/f1", "val/auroc", "test/acc", "test/loss",
                "hp/val_acc_best", "hp/test_acc", "lr-Adam"}
    assert expected <= scalars, expected - scalars
    assert len(events.Scalars("val/acc")) == 2  # one per epoch
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_same_seed_same_metrics(compose_train, tmp_path):
    first = train(compose_train("seed=7"))
    second = train(compose_train("seed=7", f"paths.output_dir={tmp_path / 'again'}"))
    third = train(compose_train("seed=8", f"paths.output_dir={tmp_path / 'other'}"))
    keys = ("val/acc", "test/acc", "test/loss")
    assert [first[k] for k in keys] == [second[k] for k in keys]
    assert first["test/loss"] != third["test/loss"]


def test_resume_from_checkpoint(compose_train, tmp_path):
    cfg = compose_train("trainer.max_epochs=1")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = train(compose_train("trainer.max_epochs=2", f"ckpt_path={last}",
                                  f"paths.output_dir={tmp_path / 'resumed'}"))
    assert resumed["epochs"] == 2
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["epoch"] == 1  # the second epoch, counted from 0


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
    untested = train(compose_train("trainer.max_epochs=2", "test=false"))
    ticks = iter(range(1_000_000))
    tested = train(compose_train("trainer.max_epochs=2", "test_weights=best",
                                 f"paths.output_dir={tmp_path / 'tested'}"))
    assert tested["seconds_per_epoch"] == untested["seconds_per_epoch"] > 0
    assert "test/acc" in tested and "test/acc" not in untested


def test_checkpoint_alone_can_classify_text(compose_train):
    cfg = compose_train("trainer.max_epochs=4")
    train(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = SentimentRNN.load_from_checkpoint(checkpoint, map_location="cpu")
    assert isinstance(model.text_encoder, TextEncoder)
    assert model.text_encoder.maxlen == 24 and model.text_encoder.padding == "pre"
    model.eval()
    new_reviews = synthetic_reviews(20, seed=99)  # unseen, same distribution
    ids = model.text_encoder.encode([text for text, _ in new_reviews])
    with torch.no_grad():
        predicted = model.predict_step(ids, 0) > 0.5
    labels = torch.tensor([label for _, label in new_reviews], dtype=torch.bool)
    assert (predicted == labels).float().mean() >= 0.9


def test_resume_with_other_preprocessing_is_refused(compose_train, tmp_path):
    cfg = compose_train()
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="other preprocessing"):
        train(compose_train("data.maxlen=30", "trainer.max_epochs=2", f"ckpt_path={last}",
                            f"paths.output_dir={tmp_path / 'resumed'}"))


@pytest.mark.parametrize(
    ("overrides", "env", "message"),
    [
        (["model.hidden_size=0"], {}, "model.hidden_size must be a positive integer, got 0"),
        (["data.maxlen=0"], {}, "data.maxlen must be a positive integer, got 0"),
        (["trainer.accelerator=tpu9"], {}, "invalid accelerator name"),
        (["data.local_path=/no/such/imdb"], {}, "'/no/such/imdb' does not exist"),
        (["ckpt_path=/no/such.ckpt"], {}, "ckpt_path='/no/such.ckpt' does not exist"),
        # No local copy and no route to the Hub (nothing listens on port 9).
        ([], {"HF_ENDPOINT": "http://127.0.0.1:9"}, "the Hugging Face Hub is unreachable"),
    ],
)
def test_user_errors_are_one_clear_message(tmp_path, parquet_copy, overrides, env, message):
    if not any(o.startswith("data.local_path") for o in overrides) and not env:
        overrides = [*overrides, f"data.local_path={parquet_copy}"]
    result = run_entry(*overrides, tmp_path=tmp_path, env={"HF_HUB_OFFLINE": "0", **env})
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert message in output
    assert "Traceback" not in output
    assert not list((tmp_path / "cache").glob("*.pt"))  # no cache entry was written


def test_corrupt_parquet_through_the_entry_point(tmp_path, parquet_copy):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.parquet").write_bytes(b"PAR1 not really")
    (broken / "test.parquet").write_bytes((parquet_copy / "test.parquet").read_bytes())
    result = run_entry(f"data.local_path={broken}", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "Could not read the IMDB copy" in result.stderr + result.stdout
    assert not list((tmp_path / "cache").glob("*.pt"))


def test_bad_labels_through_the_entry_point(tmp_path, reviews):
    from tests.conftest import write_parquet_copy

    rows = [*reviews["train"][:100], ("a third kind of review", 2)]
    copy = write_parquet_copy(tmp_path / "copy", {"train": rows, "test": reviews["test"]})
    result = run_entry(f"data.local_path={copy}", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "train split: labels must be 0 (negative) or 1 (positive), found 2 in row(s) 100" \
        in output
    assert "Traceback" not in output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("damage", [b"", b"not a checkpoint", "half"])
def test_a_corrupt_ckpt_path_is_one_clear_message(tmp_path, parquet_copy, compose_train, damage):
    cfg = compose_train()
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(last.read_bytes()[:20_000] if damage == "half" else damage)
    result = run_entry(f"data.local_path={parquet_copy}", f"ckpt_path={broken}",
                       "data.max_features=100", tmp_path=tmp_path / "resume")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert f"ckpt_path='{broken}' is not a readable checkpoint" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) <= 3
    assert last.is_file()  # the run's own checkpoints are untouched


def test_ddp_on_two_cpu_processes_syncs_metrics(tmp_path, parquet_copy):
    """Test accuracy under DDP (each process sees half of the test set) must equal one
    process's accuracy over the whole test set with the same checkpoint."""
    result = run_entry("trainer=ddp_cpu", f"data.local_path={parquet_copy}",
                       "data.max_features=100", "data.val_size=100", "data.maxlen=24",
                       "model.hidden_size=16", "model.embedding_dim=16", "trainer.max_epochs=3",
                       "callbacks.progress_bar=null", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "run"
    ddp_acc = json.loads((run / "metrics.json").read_text())["test/acc"]
    best = next(p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    from gru_lightning.predict import SentimentClassifier

    classifier = SentimentClassifier.from_checkpoint(best, device="cpu")
    texts = [t for t, _ in synthetic_reviews(200, seed=1)]  # the parquet copy's test split
    labels = torch.tensor([y for _, y in synthetic_reviews(200, seed=1)])
    single = ((classifier.predict_proba(texts) >= 0.5).long() == labels).float().mean().item()
    assert ddp_acc == pytest.approx(single, abs=1e-6)


def test_ema_checkpoints_and_tests_the_averaged_weights(compose_train, tmp_path):
    cfg = compose_train("callbacks=ema", "callbacks.ema.decay=0.9", "trainer.max_epochs=2",
                        "test_weights=best")
    metrics = train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    best = next(p for p in checkpoints.glob("*.ckpt") if p.name != "last.ckpt")
    state = torch.load(best, weights_only=False)
    averaged, raw = state["state_dict"], state["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert not torch.equal(averaged["head.weight"], raw["head.weight"])

    # The test scored the averaged weights: the checkpoint's state_dict, as predict loads it.
    model = SentimentRNN.load_from_checkpoint(best, map_location="cpu")
    datamodule = instantiate(cfg.data)
    again = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert again.test(model, datamodule=datamodule)[0]["test/acc"] == metrics["test/acc"]

    # A resumed run picks up the average where it was: it has averaged every step of all
    # three epochs, not only those since the restart.
    resumed = train(compose_train("callbacks=ema", "callbacks.ema.decay=0.9",
                                  "trainer.max_epochs=3", f"ckpt_path={checkpoints / 'last.ckpt'}",
                                  f"paths.output_dir={tmp_path / 'resumed'}"))
    assert resumed["epochs"] == 3
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["averaging_state"]["n_averaged"].item() == state["global_step"] > 0


def test_cosine_schedule_takes_the_lr_to_zero_over_the_run(compose_train):
    cfg = compose_train("model.lr_schedule=cosine", "trainer.max_epochs=2")
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt",
                       weights_only=False)
    steps = state["global_step"]
    assert steps > 0 and state["lr_schedulers"][0]["last_epoch"] == steps
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(compose_train):
    # lr ~0: validation accuracy never improves after the first epoch.
    cfg = compose_train("model.lr=1e-12", "trainer.max_epochs=3")
    train(cfg)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    best = [p.name for p in checkpoints.iterdir() if p.name != "last.ckpt"]
    assert len(best) == 1 and best[0].startswith("epoch00-")
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 2


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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "site"), str(Path(__file__).resolve().parents[1])])}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*")), "nothing was logged"
    assert not mark.exists(), "TensorBoard imported tensorflow"
    # Without train.py's marker, TensorBoard's lookup takes the fake: the test sees what it
    # guards against.
    lookup = "from tensorboard.compat import tf; getattr(tf, 'io', None)"
    subprocess.run([sys.executable, "-c", lookup], env=env, check=True, capture_output=True)
    assert mark.exists()
