"""Bad input a user can give, each with its one clear message (or the right behaviour) and
proof that nothing was lost or written wrong: docs/reliability.md lists them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from gru_lightning.data.base import DataError
from gru_lightning.data.files import FilesSource
from gru_lightning.data.hub import HubSource
from gru_lightning.data.lines import LinesSource
from gru_lightning.devices import resolve_device
from gru_lightning.evaluate import class_ids
from gru_lightning.evaluate import main as evaluate
from gru_lightning.predict import Predictor
from gru_lightning.predict import main as predict
from gru_lightning.report import collect, write_report
from gru_lightning.runtime.run_record import user_message
from gru_lightning.textfiles import read_texts
from gru_lightning.train import compose_config, train
from gru_lightning.vectors import WordVectors, read_unlabeled
from tests.conftest import ROOT, SMALL, cache_entries, compose_train_config


def test_word_vectors_without_gensim_are_one_message_before_any_data_work(
        tmp_path, parquet_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "gensim", None)  # as where it is not installed
    cfg = compose_train_config(tmp_path, parquet_copy, "vectors=word2vec")
    with pytest.raises(Exception) as error:
        train(cfg)
    assert ("ImportError: vectors=word2vec trains with gensim, which is not installed: pip "
            "install 'gru-lightning[vectors]'") in user_message(error.value)
    assert cache_entries(tmp_path / "cache") == []  # nothing tokenized before it was said
    vectors_file = tmp_path / "vectors.bin"
    vectors_file.write_bytes(b"")
    with pytest.raises(ImportError, match="is read with gensim"):
        WordVectors(16, path=str(vectors_file))


def test_csv_cells_longer_than_the_csv_modules_limit_are_read_whole(tmp_path):
    long_text = "a wonderful film " * 10_000  # 170,000 characters: over csv's 131,072
    file = tmp_path / "long.csv"
    file.write_text(f'text,label\n"{long_text}",1\nshort,0\n')
    texts, notes = read_texts(str(file))
    assert texts == [long_text, "short"] and notes == []
    assert read_unlabeled(file) == [long_text, "short"]  # vectors.unlabeled_file reads alike


def test_a_device_this_machine_lacks_is_one_message(monkeypatch):
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS backend is not available here"):
            resolve_device("mps")
    with pytest.raises(ValueError, match="a checkpoint runs on cpu, cuda or mps"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device 'cuda:1': this machine has 1 CUDA GPU\(s\), "
                                         r"cuda:0 to cuda:0"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda:0")  # named, not yet used


@pytest.mark.parametrize("command", ["predict", "evaluate", "serve"])
def test_every_command_refuses_a_missing_device_in_one_line(trained, tmp_path, capsys,
                                                            command):
    if command == "serve":
        pytest.importorskip("litserve")
    device = "cuda:1" if not torch.cuda.is_available() else "mps"
    labelled = tmp_path / "l.csv"
    labelled.write_text("text,label\ngreat film,pos\n")
    argv = {"predict": [str(trained.last), "a text", "--device", device],
            "evaluate": [str(trained.last), "--file", str(labelled), "--device", device],
            "serve": [str(trained.last), "--device", device]}[command]
    if command == "serve":
        from gru_lightning.serve import main as serve
        assert serve(argv) == 1
    else:
        assert {"predict": predict, "evaluate": evaluate}[command](argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: device {device!r}: ") and len(err.strip().splitlines()) == 1


def test_export_to_a_file_is_one_message_and_the_file_is_kept(trained, tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    assert predict([str(trained.last), "--export", str(taken)]) == 1
    assert f"cannot export to {str(taken)!r}: it is a file" in capsys.readouterr().err
    assert taken.read_text() == "mine"
    with pytest.raises(ValueError, match="cannot export to"):
        Predictor.from_checkpoint(trained.last, "cpu").export(taken / "below")


def test_evaluate_writes_reports_into_folders_it_makes_and_refuses_a_folder(trained, tmp_path,
                                                                            capsys):
    labelled = tmp_path / "l.csv"
    labelled.write_text("text,label\ngreat superb film,pos\nawful dull film,neg\n")
    report, plot = tmp_path / "out" / "r.json", tmp_path / "figures" / "deep" / "cm.png"
    assert evaluate([str(trained.last), "--file", str(labelled), "--json", str(report),
                     "--png", str(plot)]) == 0
    assert json.loads(report.read_text())["texts"] == 2 and plot.stat().st_size > 0
    capsys.readouterr()
    assert evaluate([str(trained.last), "--file", str(labelled), "--json",
                     str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert f"error: --json {tmp_path / 'out'}: is a folder; give a file name" in err
    assert out == ""  # refused before scoring: no report printed, then lost
    assert evaluate([str(trained.last), "--file", str(labelled), "--png",
                     str(report / "cm.png")]) == 1  # a folder below a file cannot be made
    assert "cannot make its folder" in capsys.readouterr().err


def test_class_label_values_outside_the_datas_classes_are_refused():
    names = ["neg", "pos"]
    assert class_ids([0, 1, 1], names, names).tolist() == [0, 1, 1]
    with pytest.raises(DataError, match=r"labels outside the data's 2 classes \(0 to 1\): -1 "
                                        r"\(2 texts\), 2 \(1 text\)\. -1 marks a text without "
                                        r"a label"):
        class_ids([0, -1, 2, -1], names, names)  # -1 read as the last class before


def test_evaluate_on_a_split_without_labels_says_so(trained, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    unlabeled = tmp_path / "test.parquet"
    datasets.Dataset.from_dict({"text": ["great film", "dull film"], "label": [-1, -1]},
                               features=features).to_parquet(unlabeled)
    assert evaluate([str(trained.last), "--file", str(unlabeled)]) == 1
    err = capsys.readouterr().err
    assert "labels outside the data's 2 classes (0 to 1): -1 (2 texts)" in err


def test_a_byte_order_mark_is_not_part_of_the_first_label_or_text(tmp_path):
    texts, labels = tmp_path / "t.txt", tmp_path / "l.txt"
    texts.write_text("\ufeffgood film\nbad film\ngood again\n", encoding="utf-8")
    labels.write_text("\ufeff1\n0\n1\n", encoding="utf-8")  # as Notepad saves UTF-8
    train_split = LinesSource(train_texts=str(texts), train_labels=str(labels)).read()["train"]
    assert train_split["label"] == [1, 0, 1] and train_split["text"][0] == "good film"
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("\ufeff0\tnegative\n1\tpositive\n", encoding="utf-8")
    named = LinesSource(train_texts=str(texts), train_labels=str(labels),
                        mapping=str(mapping)).read()["train"]
    assert named.features["label"].names == ["negative", "positive"]
    assert named["label"] == [1, 0, 1]
    csv_file = tmp_path / "texts.csv"
    csv_file.write_bytes("\ufefftext,label\ngood film,1\n".encode())
    assert read_texts(str(csv_file)) == (["good film"], [])


def test_one_text_column_without_brackets_is_that_column():
    assert FilesSource(train_file="x.csv", text_columns="review").text_columns == ["review"]
    assert HubSource(name="imdb", text_columns="sentence").text_columns == ["sentence"]
    cfg = compose_config(["data=files", "data.train_file=x.csv", "data.text_columns=review",
                          "paths.output_dir=/tmp/x"])
    assert OmegaConf.to_object(cfg.data)["text_columns"] == "review"  # as Hydra hands it over
    assert FilesSource(**{k: v for k, v in cfg.data.items() if k in (
        "train_file", "text_columns")}).text_columns == ["review"]


def test_a_cache_folder_that_cannot_be_written_is_one_message_before_any_data_work(
        tmp_path, parquet_copy):
    blocker = tmp_path / "a_file"
    blocker.write_text("kept")  # a folder below a file cannot be made, even by root
    cfg = compose_train_config(tmp_path, parquet_copy, f"paths.cache_dir={blocker / 'cache'}")
    with pytest.raises(DataError, match=r"the cache folder '.*a_file/cache' cannot be written "
                                        r"\(.*\): set paths.cache_dir to a folder of yours"):
        train(cfg)
    assert blocker.read_text() == "kept"


def test_the_sweep_report_reads_deletion_overrides(tmp_path):
    sweep = tmp_path / "sweep"
    for job, (hidden, accuracy) in enumerate(((8, 0.88), (16, 0.96))):
        folder = sweep / f"{job}_model.net.hidden_size={hidden}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(
            f"- model.net.hidden_size={hidden}\n- ~callbacks.progress_bar\n")
        (folder / "metrics.json").write_text(json.dumps(
            {"status": "completed", "test/acc": accuracy, "params": hidden}))
    rows = collect(sweep)
    assert [row["overrides"] for row in rows] == ["model.net.hidden_size=8",
                                                  "model.net.hidden_size=16"]
    assert [row["test_acc"] for row in rows] == [0.88, 0.96]
    assert "model.net.hidden_size=16" in write_report(sweep)["md"].read_text()


def test_a_loss_as_monitor_is_minimised_and_names_the_checkpoint(tmp_path, parquet_copy):
    cfg = compose_train_config(tmp_path, parquet_copy, "monitor=val/loss", "trainer.max_epochs=3",
                               "logger=csv", "callbacks=early_stopping")
    assert cfg.callbacks.model_checkpoint.mode == "min"
    assert cfg.callbacks.early_stopping.mode == "min"
    metrics = train(cfg)
    rows = next(iter((tmp_path / "run").rglob("metrics.csv"))).read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("val/loss")]) for r in rows[1:]
              if r.split(",")[header.index("val/loss")]]
    assert len(losses) == 3
    best = [p.name for p in (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")]
    epoch = losses.index(min(losses))
    assert best == [f"epoch{epoch:02d}-val_loss{min(losses):.4f}.ckpt"]
    assert metrics["val/loss_best"] == pytest.approx(min(losses))
    own = compose_config(["data=lines", "monitor=val/loss", "paths.output_dir=/tmp/x"])
    assert own.callbacks.early_stopping.mode == "min"
    default = compose_config(["paths.output_dir=/tmp/x"]).callbacks.model_checkpoint
    assert (default.mode, default.filename) == ("max", "epoch{epoch:02d}-val_acc{val/acc:.4f}")


def test_optuna_minimises_a_loss_and_maximises_a_score():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the sweep extra")
    from hydra import compose, initialize_config_dir

    from gru_lightning.train import CONFIG_DIR

    for monitor, direction in (("val/loss", "minimize"), ("val/acc", "maximize")):
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            cfg = compose("train", overrides=["hparams_search=optuna", f"monitor={monitor}"],
                          return_hydra_config=True)
        assert OmegaConf.select(cfg, "hydra.sweeper.direction") == direction
        assert cfg.optimized_metric == f"{monitor}_best"  # metrics.json has it (test above)


def test_hydra_full_error_shows_the_traceback_of_an_error_shown_as_one_line(tmp_path):
    def run(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}",
             f"paths.cache_dir={tmp_path / 'cache'}", *SMALL, "model.net.hidden_size=0"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={k: v for k, v in {**os.environ, **env}.items() if v is not None})

    message = "model.net.hidden_size must be a positive integer, got 0"
    short = run({"HYDRA_FULL_ERROR": None})
    assert short.returncode == 1 and message in short.stderr + short.stdout
    assert "Traceback" not in short.stderr + short.stdout
    assert "HYDRA_FULL_ERROR=1 shows where it was raised" in short.stderr + short.stdout
    full = run({"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr and message in full.stderr


def test_a_data_config_of_release_0_6_names_the_form_that_replaced_it(tmp_path):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gru_lightning.data.files import FilesSource

    old = OmegaConf.create({"_target_": "gru_lightning.data.files.FilesSource.datamodule",
                            "train_file": str(tmp_path / "x.csv")})
    with pytest.raises(InstantiationException,
                       match=r"FilesSource\.datamodule is gone since gru-lightning 0\.7\.0.*"
                             r"source: gru_lightning\.data\.files\.FilesSource"):
        instantiate(old)
    with pytest.raises(ValueError, match=r"TextDataModule\.from_settings\(FilesSource, \.\.\.\)"):
        FilesSource.datamodule(train_file="x.csv")
    assert not list(tmp_path.iterdir())  # nothing written
