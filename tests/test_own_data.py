"""A user's own data: the settings chosen from the data (data/adaptive.py), class weights,
the task's metric for the checkpoint and early stopping (conf/data/_own.yaml), and scoring a
checkpoint on labelled data (`python -m gru_lightning.evaluate`)."""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

import pytest
import torch

from gru_lightning.data.adaptive import word_counts
from gru_lightning.data.datamodule import TextDataModule
from gru_lightning.data.lines import LinesSource
from gru_lightning.evaluate import main as evaluate
from gru_lightning.metrics import BinaryMacroF1Score
from gru_lightning.model import TextClassifier
from gru_lightning.networks.rnn import RNN
from gru_lightning.objectives import class_weights
from gru_lightning.train import train
from tests.conftest import QUIET, compose_config
from tests.source_data import TOPICS, lines_file, topic_rows, tweeteval_folder


def _imbalanced_folder(root: Path, n: int = 400) -> Path:
    """Two classes, 4 to 1, of texts of 10 to 40 words with a few cue words."""
    rng = random.Random(0)
    for split, size in {"train": n, "val": n // 4, "test": n // 4}.items():
        texts, labels = [], []
        for i in range(size):
            label = int(i % 5 == 0)
            cue = ["bright", "sunny", "warm"] if label else ["grey", "rainy", "cold"]
            words = [f"w{rng.randint(0, 100)}" for _ in range(rng.randint(10, 40))]
            words += rng.choices(cue, k=3)
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(str(label))
        lines_file(root / f"{split}_text.txt", texts)
        lines_file(root / f"{split}_labels.txt", labels)
    (root / "mapping.txt").write_text("0\tgrey\n1\tsunny\n")
    return root


def _own_config(tmp_path: Path, folder: Path, *overrides: str):
    return compose_config([f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                           f"paths.cache_dir={tmp_path / 'cache'}", "data=lines",
                           f"data.dir={folder}", "model.net.embedding_dim=16",
                           "model.net.hidden_size=16", "trainer.accelerator=cpu", *QUIET,
                           *overrides])


def test_own_data_sources_default_to_settings_chosen_from_the_data():
    cfg = compose_config(["data=files", "data.train_file=x.csv", "paths.output_dir=/tmp/x"])
    assert (cfg.data.max_features, cfg.data.maxlen, cfg.data.val_size) == ("auto",) * 3
    assert cfg.model.class_weights == "auto" and cfg.model.net.vocab_size == "auto"
    assert cfg.monitor == "val/macro_f1" and cfg.trainer.max_epochs == 30
    assert cfg.callbacks.model_checkpoint.monitor == "val/macro_f1"
    assert cfg.callbacks.early_stopping.monitor == "val/macro_f1"
    for source in ("folder", "hub", "lines"):
        assert compose_config([f"data={source}", "paths.output_dir=/tmp/x"]).data.maxlen == "auto"
    # IMDB and the notebook's experiment keep their fixed values, with no early stopping.
    for overrides in ([], ["experiment=keras_seed"]):
        imdb = compose_config([*overrides, "paths.output_dir=/tmp/x"])
        assert (imdb.data.max_features, imdb.data.maxlen) == (10000, 100)
        assert imdb.monitor == "val/acc" and "early_stopping" not in imdb.callbacks
        assert imdb.model.class_weights is None and imdb.trainer.max_epochs == 3
    # A setting given by the user wins over the chosen one.
    given = compose_config(["data=lines", "data.maxlen=50", "trainer.max_epochs=4",
                            "paths.output_dir=/tmp/x"])
    assert given.data.maxlen == 50 and given.trainer.max_epochs == 4


def test_the_chosen_settings_follow_the_data_and_are_logged(tmp_path, caplog):
    folder = _imbalanced_folder(tmp_path / "data", n=400)
    dm = TextDataModule.from_settings(
        LinesSource, dir=str(folder), max_features="auto", maxlen="auto",
        val_size="auto", cache_dir=str(tmp_path / "c"))
    with caplog.at_level(logging.INFO, logger="gru_lightning.data.adaptive"):
        dm.setup("fit")
    texts = dm.split_texts()["train"]
    lengths = torch.tensor([len(t.split()) for t in texts]).float()
    expected = 8 * -(-int(torch.quantile(lengths, 0.95).item()) // 8)
    assert dm.text_encoder.maxlen == expected
    words = {}
    for text in texts:
        for word in text.split():
            words[word] = words.get(word, 0) + 1
    assert dm.text_encoder.vocab_size == 2 + sum(n >= 2 for n in words.values())
    assert f"data.maxlen=auto: {expected} tokens" in caplog.text
    assert "data.max_features=auto" in caplog.text and "overrides" in caplog.text
    # The source's val split is used; without one, a tenth of the training texts.
    assert len(dm.splits["val"]) == 100
    no_val = TextDataModule.from_settings(LinesSource, train_texts=str(folder / "train_text.txt"),
                                          train_labels=str(folder / "train_labels.txt"),
                                          val_size="auto", maxlen="auto",
                                          cache_dir=str(tmp_path / "c2"), test_size=0.25)
    no_val.setup("fit")
    assert len(no_val.splits["test"]) == 100 and len(no_val.splits["val"]) == 30
    assert word_counts(dm.text_encoder, ["a b c", ""]).tolist() == [3, 0]


@pytest.mark.parametrize(("setting", "message"), [
    ("maxlen", "data.maxlen must be a positive integer"),
    ("max_features", "data.max_features must be an integer >= 3 or auto"),
    ("val_size", "data.val_size"),
])
def test_auto_is_the_only_word_the_sizes_take(tmp_path, setting, message):
    folder = tweeteval_folder(tmp_path / "data")
    with pytest.raises(ValueError, match=re.escape(message)):
        TextDataModule.from_settings(LinesSource, dir=str(folder), **{setting: "often"})


def test_class_weights_balance_the_loss_and_auto_leaves_balanced_data_alone(caplog):
    model = TextClassifier(RNN(vocab_size=50, embedding_dim=8, hidden_size=8), 3,
                           class_weights="balanced")
    model.class_weight = class_weights(torch.tensor([60, 30, 10]), "balanced", "abc")
    torch.testing.assert_close(model.class_weight, torch.tensor([100 / 180, 100 / 90, 100 / 30]))
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=model.class_weight)
    torch.testing.assert_close(model.loss_fn(logits, labels), expected)
    binary = TextClassifier(RNN(vocab_size=50, embedding_dim=8, hidden_size=8), 2,
                            class_weights="auto")
    with caplog.at_level(logging.INFO, logger="gru_lightning.objectives"):
        binary.class_weight = class_weights(torch.tensor([80, 20]), "auto", ["neg", "pos"])
    assert "loss weights 0.62, 2.50" in caplog.text
    logits, targets = torch.randn(5), torch.tensor([1.0, 0, 0, 1, 0])
    torch.testing.assert_close(binary.loss_fn(logits, targets),
                               torch.nn.functional.binary_cross_entropy_with_logits(
                                   logits, targets, pos_weight=torch.tensor(4.0)))
    assert class_weights(torch.tensor([55, 45]), "auto", ["neg", "pos"]) is None
    assert class_weights(torch.tensor([80, 20]), None, ["neg", "pos"]) is None
    message = re.escape("model.class_weights must be null, balanced or auto")
    with pytest.raises(ValueError, match=message):
        TextClassifier(RNN(vocab_size=50), 2, class_weights="yes")
    # The weights are not part of the state dict: a checkpoint loads into any setting.
    assert "class_weight" not in model.state_dict()


def test_binary_macro_f1_is_the_mean_of_both_classes_f1():
    metric = BinaryMacroF1Score()
    metric.update(torch.tensor([0.9, 0.8, 0.2, 0.7]), torch.tensor([1, 1, 0, 0]))
    # Class 1: precision 2/3, recall 1 -> 0.8; class 0: precision 1, recall 1/2 -> 2/3.
    assert metric.compute().item() == pytest.approx((0.8 + 2 / 3) / 2)


def test_own_data_run_stops_early_keeps_the_best_by_macro_f1_and_evaluates(tmp_path, capsys):
    folder = _imbalanced_folder(tmp_path / "data")
    cfg = _own_config(tmp_path, folder, "model.optimizer.lr=0.02", "trainer.max_epochs=12",
                      "callbacks.early_stopping.patience=2")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert metrics["epochs"] < 12  # stopped early
    # A sweep's target follows the checkpoint's metric (hparams_search/optuna.yaml).
    assert metrics["val/macro_f1_best"] >= metrics["val/macro_f1"]
    assert compose_config(["data=lines", "hparams_search=optuna", "paths.output_dir=/tmp/x"]
                          ).optimized_metric == "val/macro_f1_best"
    assert metrics["test/macro_f1"] >= 0.9
    best = [p for p in (run / "checkpoints").glob("epoch*.ckpt")]
    assert len(best) == 1
    state = torch.load(best[0], weights_only=False)
    # The kept checkpoint is the one ModelCheckpoint chose by the validation macro F1.
    assert any("'monitor': 'val/macro_f1'" in key for key in state["callbacks"])
    assert state["hyper_parameters"]["class_weights"] == "auto"

    capsys.readouterr()
    out_json, png = tmp_path / "report.json", tmp_path / "cm.png"
    assert evaluate([str(best[0]), "--dir", str(folder), "--split", "test", "--json",
                     str(out_json), "--png", str(png)]) == 0
    table = capsys.readouterr().out
    report = json.loads(out_json.read_text())
    assert report["texts"] == 100 and set(report["classes"]) == {"grey", "sunny"}
    # The test metrics of training and the report agree: the same checkpoint, the same texts.
    assert report["macro_f1"] == pytest.approx(metrics["test/macro_f1"], abs=1e-6)
    assert report["accuracy"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert sum(map(sum, report["confusion_matrix"])) == 100
    assert "confusion matrix" in table and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_reads_every_format_and_names_labels_unseen_in_training(trained, tmp_path,
                                                                         capsys):
    checkpoint = str(trained.last)
    rows = [("great superb film", "pos"), ("awful dull film", "neg"), ("loved it", "pos")]
    csv = tmp_path / "labelled.csv"
    csv.write_text("review,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    capsys.readouterr()
    assert evaluate([checkpoint, "--file", str(csv), "--text-column", "review", "--json",
                     "-"]) == 0
    by_csv = json.loads(capsys.readouterr().out)
    assert by_csv["texts"] == 3 and by_csv["classes"]["pos"]["support"] == 2
    texts = lines_file(tmp_path / "t.txt", [t for t, _ in rows])
    labels = lines_file(tmp_path / "l.txt", ["1", "0", "1"])  # class ids in training's order
    assert evaluate([checkpoint, "--texts", str(texts), "--labels", str(labels), "--json",
                     "-", "--jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["label"] for line in lines[:3]] == ["pos", "neg", "pos"]
    assert json.loads("\n".join(lines[3:]))["confusion_matrix"] == by_csv["confusion_matrix"]

    unseen = tmp_path / "unseen.csv"
    unseen.write_text("text,label\ngood,pos\nmeh,neutral\nbad,mixed\nso so,neutral\n")
    assert evaluate([checkpoint, "--file", str(unseen)]) == 1
    err = capsys.readouterr().err
    assert "labels unseen in training: 'neutral' (2 texts), 'mixed' (1 text)" in err
    assert "the checkpoint's classes are neg, pos" in err
    assert evaluate([checkpoint, "--texts", str(texts)]) == 1
    assert "--texts needs --labels" in capsys.readouterr().err
    assert evaluate([checkpoint]) == 1
    assert "give the labelled data once" in capsys.readouterr().err
    assert evaluate([checkpoint, "--file", str(tmp_path / "missing.csv")]) == 1
    assert "missing.csv" in capsys.readouterr().err


def test_evaluate_of_a_multi_class_checkpoint_by_the_mapping_names(tmp_path, capsys):
    folder = tweeteval_folder(tmp_path / "topics")
    cfg = _own_config(tmp_path, folder, "model.optimizer.lr=0.02", "trainer.max_epochs=3")
    train(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert evaluate([str(checkpoint), "--dir", str(folder), "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["classes"]) == list(TOPICS)
    assert report["texts"] == 60 and report["accuracy"] >= 0.9
    expected = [sum(1 for *_, y in topic_rows(60, 2) if y == name) for name in TOPICS]
    assert [report["classes"][n]["support"] for n in TOPICS] == expected


def test_evaluate_maps_raw_labels_as_training_did_with_label_names(tmp_path, capsys):
    from tests.source_data import write_table

    names = list(TOPICS)  # sport, money, space: labels 1, 2, 3 in the files
    rows = [{"text": f"{t} {d}", "label": names.index(y) + 1} for t, d, y in topic_rows(300, 0)]
    csv = write_table(tmp_path / "topics.csv", rows)
    cfg = compose_config([f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                          f"paths.cache_dir={tmp_path / 'cache'}", "data=files",
                          f"data.train_file={csv}", "data.label_names=[Sport,Money,Space]",
                          "model.net.embedding_dim=16", "model.net.hidden_size=16",
                          "model.optimizer.lr=0.02", "trainer.max_epochs=3",
                          "trainer.accelerator=cpu", *QUIET])
    train(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    held = [{"text": f"{t} {d}", "label": names.index(y) + 1} for t, d, y in topic_rows(60, 5)]
    capsys.readouterr()
    assert evaluate([str(checkpoint), "--file", str(write_table(tmp_path / "held.csv", held)),
                     "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Label 1 is Sport (the first sorted training label), not class id 1 (Money): a shifted
    # mapping would score a third at most.
    assert report["accuracy"] >= 0.7
    assert report["classes"]["Sport"]["support"] == sum(r["label"] == 1 for r in held)
    unseen = write_table(tmp_path / "unseen.csv", [{"text": "goal", "label": 4},
                                                   {"text": "bank", "label": 2}])
    assert evaluate([str(checkpoint), "--file", str(unseen)]) == 1
    assert "labels unseen in training: 4 (1 text)" in capsys.readouterr().err
